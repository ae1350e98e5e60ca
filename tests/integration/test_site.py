"""The built book in a real browser: headless Chromium, driven over DevTools.

Browser test: builds the book into a temporary folder from the notebooks that
the session's tiny pipeline run executed (with their plots and glued outputs)
and the evidence fragments generated from that run's work directory, as `make
report` does. Then every page is opened in Chromium: it must load without
console errors, every image must decode and render, and every internal link
must point to a file (and anchor) that exists. Screenshots of the report go to
build/test-artifacts/site/.

Chromium is required, not optional: without it the test fails and says how to
install it (`.ci/run` does).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import websocket
import yaml
from PIL import Image

from mlkit.pipeline.evidence import EvidenceSources, collect_test_ids, write_evidence

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "build" / "test-artifacts" / "site"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
PAGE_TIMEOUT_S = 30


def _chromium() -> str:
    found = os.environ.get("MLKIT_CHROMIUM") or next(
        (path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None
    )
    if found is None:
        pytest.fail(
            "Chromium is needed to test the built site and was not found "
            f"(looked for {', '.join(CHROMIUM_NAMES)} and $MLKIT_CHROMIUM): run "
            "`.ci/run`, or `apt-get install chromium`"
        )
    return found


def _toc_docs(toc: dict) -> list[str]:
    docs = [toc["root"]]
    for part in toc.get("parts", [{"chapters": toc.get("chapters", [])}]):
        docs += [chapter["file"] for chapter in part.get("chapters", [])]
    return docs


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_pipeline) -> Path:
    """The book built from the tiny pipeline run into a temporary folder."""
    run_root, _ = tiny_pipeline
    book = tmp_path_factory.mktemp("site") / "book"
    shutil.copytree(
        ROOT / "book",
        book,
        ignore=shutil.ignore_patterns("_build", "_generated", "notebooks"),
    )
    for doc in _toc_docs(yaml.safe_load((book / "_toc.yml").read_text())):
        if doc.startswith("notebooks/"):
            source = run_root / "executed" / f"{Path(doc).name}.ipynb"
            assert source.is_file(), f"_toc.yml lists {doc}, and {source} is missing"
            (book / "notebooks").mkdir(exist_ok=True)
            shutil.copy(source, book / f"{doc}.ipynb")

    test_ids = collect_test_ids(ROOT, ["tests/test_project.py", "tests/integration"])
    write_evidence(
        EvidenceSources(
            repo_root=ROOT,
            workdir=run_root / "build",
            book_dir=book,
            coverage_json=book.parent / "coverage.json",
        ),
        book / "_generated",
        test_ids=test_ids,
    )
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "jupyter-book"),
            "build",
            str(book),
            "--warningiserror",
            "--nitpick",
            "--keep-going",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return book / "_build" / "html"


class _Links(HTMLParser):
    """Every href/src of a page, and every id it defines."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in {"href", "src"} and value:
                self.links.append(value)
            if name == "id" and value:
                self.ids.add(value)


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


class _DevToolsError(Exception):
    """Chromium answered a DevTools command with an error."""


class _Browser:
    """One headless Chromium page, driven with the Chrome DevTools protocol."""

    def __init__(self, executable: str, profile: Path) -> None:
        self.process = subprocess.Popen(
            [
                executable,
                "--headless=new",
                "--no-sandbox",  # CI runs as root
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        port = self._devtools_port()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as response:
            targets = json.load(response)
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(
            page["webSocketDebuggerUrl"], timeout=PAGE_TIMEOUT_S, suppress_origin=True
        )
        self.next_id = 0
        self.events: list[dict] = []
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")

    def _devtools_port(self) -> int:
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        seen = []
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            seen.append(line)
            match = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if match:
                return int(match.group(1))
            if not line and self.process.poll() is not None:
                break
        self.close()
        pytest.fail("Chromium did not start its DevTools endpoint:\n" + "".join(seen))

    def send(self, method: str, params: dict | None = None) -> dict:
        self.next_id += 1
        self.ws.send(
            json.dumps({"id": self.next_id, "method": method, "params": params or {}})
        )
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise _DevToolsError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def wait_for(self, event: str) -> dict:
        for index, message in enumerate(self.events):
            if message.get("method") == event:
                return self.events.pop(index)
        while True:
            message = json.loads(self.ws.recv())
            if message.get("method") == event:
                return message
            self.events.append(message)

    def open(self, path: Path) -> None:
        self.events.clear()
        self.send("Page.navigate", {"url": path.as_uri()})
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str):
        params = {"expression": expression, "returnByValue": True}
        for _ in range(3):
            try:
                return self.send("Runtime.evaluate", params)["result"].get("value")
            except _DevToolsError as exc:
                # A page that redirects (index.html) navigates after its load
                # event: evaluate on the page it lands on.
                if "navigated" not in str(exc):
                    raise
                self.wait_for("Page.loadEventFired")
        pytest.fail(f"the page kept navigating: {expression}")

    def errors(self) -> list[str]:
        found = []
        for message in self.events:
            method, params = message.get("method"), message.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(params["exceptionDetails"].get("text", "exception"))
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                found.append(
                    " ".join(str(a.get("value")) for a in params.get("args", []))
                )
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                entry = params["entry"]
                found.append(f"{entry.get('text')} {entry.get('url', '')}".strip())
        return found

    def screenshot(self, path: Path, width: int = 1280) -> None:
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
        )
        height = self.evaluate("document.documentElement.scrollHeight")
        shot = self.send(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            },
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stderr.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    browser = _Browser(_chromium(), tmp_path_factory.mktemp("chromium-profile"))
    yield browser
    browser.close()


def _pages(site: Path) -> list[Path]:
    # _static holds the theme's templates, not pages.
    return sorted(p for p in site.rglob("*.html") if "_static" not in p.parts)


def _text(path: Path) -> str:
    html = path.read_text(encoding="utf-8")
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_the_book_has_the_report_and_every_notebook(site):
    names = {p.relative_to(site).as_posix() for p in _pages(site)}
    assert {"intro.html", "milestone_report.html"} <= names
    for notebook in (
        "01_preprocess",
        "02_train",
        "03_evaluate",
        "04_deploy",
        "05_scaling_demo",
    ):
        assert f"notebooks/{notebook}.html" in names
    report = _text(site / "milestone_report.html")
    for heading in (
        "Kubernetes deployment",
        "Scaling demonstration",
        "Pulumi infrastructure",
        "CI/CD pipeline",
        "Unit test suite",
        "Integration tests",
        "Automated deployment",
        "Test coverage",
        "Machine-learning workflow",
        "Retraining policy",
        "Model validation and deployment gate",
    ):
        assert heading in report, heading
    # The pipeline's numbers are in it, marked as synthetic; coverage.json is
    # not (the test suite is still running), and the page says so.
    assert "Synthetic data" in report
    # The scaling notebook's glued figures are pasted into the report.
    html = (site / "milestone_report.html").read_text(encoding="utf-8")
    assert html.count("<img") >= 2
    assert "Not available" in report and "make test" in report


def test_internal_links_resolve(site):
    broken = []
    ids = {page: _parse(page).ids for page in _pages(site)}
    for page in _pages(site):
        for link in _parse(page).links:
            parts = urlsplit(link)
            if parts.scheme or link.startswith(("//", "mailto:")):
                continue
            target = (
                (page.parent / unquote(parts.path)).resolve() if parts.path else page
            )
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.relative_to(site)}: {link}")
            elif parts.fragment and target in ids and parts.fragment not in ids[target]:
                broken.append(f"{page.relative_to(site)}: {link} (no such anchor)")
    assert broken == []


def test_images_exist_and_decode(site):
    images = set()
    for page in _pages(site):
        for link in _parse(page).links:
            if re.search(r"\.(png|jpe?g|gif|svg)$", urlsplit(link).path) and not (
                urlsplit(link).scheme
            ):
                images.add((page.parent / unquote(urlsplit(link).path)).resolve())
    raster = [p for p in images if p.suffix != ".svg"]
    assert any(p.name == "data_flow.png" for p in raster)
    # The executed notebooks' plots are files of the site too.
    assert len(raster) >= 6, sorted(p.name for p in raster)
    for path in raster:
        with Image.open(path) as image:
            image.verify()


def test_every_page_loads_without_console_errors_and_renders_its_images(site, browser):
    problems = {}
    for page in _pages(site):
        browser.open(page)
        redirect = re.search(
            r'http-equiv="Refresh" content="\d+; url=([^"]+)"', page.read_text()
        )
        if redirect:
            # index.html only forwards to the first page; it must land there.
            browser.wait_for("Page.loadEventFired")
            landed = browser.evaluate("location.href")
            assert landed == (page.parent / redirect.group(1)).as_uri(), landed
            continue
        state = browser.evaluate(
            "({ready: document.readyState, title: document.title,"
            " images: Array.from(document.images).map("
            "i => [i.getAttribute('src'), i.complete, i.naturalWidth])})"
        )
        broken = [
            src for src, complete, width in state["images"] if not (complete and width)
        ]
        errors = browser.errors()
        if state["ready"] != "complete" or not state["title"] or broken or errors:
            problems[page.relative_to(site).as_posix()] = {
                "state": state["ready"],
                "title": state["title"],
                "images not rendered": broken,
                "console errors": errors,
            }
    assert problems == {}


def test_screenshots_of_the_report(site, browser):
    for name in ("milestone_report", "intro"):
        browser.open(site / f"{name}.html")
        path = ARTIFACTS / f"{name}.png"
        browser.screenshot(path)
        with Image.open(path) as image:
            assert image.width == 1280 and image.height > 900
            # Not a blank page: a rendered page has many distinct colours.
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50
