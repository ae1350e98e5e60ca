"""The real server in a child process (``mlkit serve``, as the container runs it).

Bad input, overload, SIGTERM during load and batching correctness, each
against a uvicorn process on a free local port, serving a tiny trained model.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil
import threading
import time

import httpx
import pytest
from PIL import Image

from mlkit.serve.loadtest import image_payloads, run_load_sync
from mlkit.serve.process import LocalServer, ServerError


def encode(image: Image.Image, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model_dir(tiny_model):
    result, _ = tiny_model
    return result.model_dir


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "server.log"
    settings = {
        "max_upload_bytes": 256 * 1024,
        "max_image_pixels": 4_000_000,
        # Two batches at once on any machine, so that answers are compared
        # across model workers too.
        "model_workers": 2,
    }
    with LocalServer(model_dir, settings=settings, log_file=log) as server:
        assert server.ready_after_s is not None and server.ready_after_s > 0
        yield server
    assert server.returncode == 0, server.log_tail()


@pytest.fixture(scope="module")
def images(demo_data):
    root, _ = demo_data
    return sorted(root.rglob("*.jpg"))[:24]


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as client:
        yield client
    # Whatever the test sent, the server still answers.
    with httpx.Client(base_url=server.url, timeout=10, trust_env=False) as check:
        assert check.get("/readyz").status_code == 200


def upload(data: bytes, name: str = "a.jpg", ctype: str = "image/jpeg") -> dict:
    return {"files": {"image": (name, data, ctype)}}


JPEG = encode(Image.new("RGB", (64, 48), (150, 80, 60)))


def bomb() -> bytes:
    return encode(Image.new("1", (9000, 9000)), "PNG")


BAD_REQUESTS = {
    "not an image": (upload(b"hello, I am text"), 422, "invalid_image"),
    "truncated JPEG": (upload(JPEG[: len(JPEG) // 2]), 422, "invalid_image"),
    "decompression bomb": (
        upload(bomb(), "b.png", "image/png"),
        413,
        "image_too_large",
    ),
    "oversize upload": (
        upload(b"\xff\xd8\xff" + b"0" * 400_000),
        413,
        "payload_too_large",
    ),
    "wrong content type": (
        {"content": b"image bytes", "headers": {"content-type": "text/plain"}},
        415,
        "unsupported_media_type",
    ),
    "GIF image": (
        upload(encode(Image.new("RGB", (8, 8)), "GIF")),
        415,
        "unsupported_image_format",
    ),
    "empty body": (
        {"content": b"", "headers": {"content-type": "application/json"}},
        400,
        "malformed_body",
    ),
    "huge text": ({**upload(JPEG), "data": {"text": "x" * 5000}}, 422, "text_too_long"),
    "invalid UTF-8 text": (
        {
            "files": {
                "image": ("a.jpg", JPEG, "image/jpeg"),
                "text": (None, b"\xc3\x28"),
            }
        },
        422,
        "invalid_text",
    ),
    "negative top_k": (
        {**upload(JPEG), "data": {"top_k": "-1"}},
        422,
        "invalid_request",
    ),
    "huge top_k": (
        {**upload(JPEG), "data": {"top_k": "100000"}},
        422,
        "invalid_request",
    ),
    "unknown field": (
        {**upload(JPEG), "data": {"colour": "red"}},
        422,
        "invalid_request",
    ),
    "unknown JSON field": (
        {"json": {"image": base64.b64encode(JPEG).decode(), "extra": 1}},
        422,
        "invalid_request",
    ),
    "threshold out of bounds": (
        {**upload(JPEG), "data": {"min_confidence": "7"}},
        422,
        "invalid_request",
    ),
    "malformed JSON": (
        {"content": b'{"image": ', "headers": {"content-type": "application/json"}},
        400,
        "malformed_body",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_gets_a_json_4xx(client, case):
    kwargs, status, code = BAD_REQUESTS[case]
    response = client.post("/v1/predict", **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code
    assert body["detail"]
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ("wrong dimension", "invalid_embedding"),
        ("NaN values", "invalid_embedding"),
        ("strings", "invalid_request"),
    ],
)
def test_bad_embeddings_get_a_json_4xx(client, payload, code):
    dim = client.get("/v1/model").json()["serving"]["vision_embedding_dim"]
    vector = {
        "wrong dimension": [0.0] * (dim + 1),
        "NaN values": [0.0] * (dim - 1) + [float("nan")],
        "strings": ["a"] * dim,
    }[payload]
    body = json.dumps({"vision_embedding": vector}).encode()  # NaN as JSON NaN
    response = client.post(
        "/v1/predict/embeddings",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == code


def test_prediction_answer(client, images):
    response = client.post(
        "/v1/predict",
        files={"image": ("x.jpg", images[0].read_bytes(), "image/jpeg")},
        data={"text": "itchy scaly plaque on the elbow", "top_k": "3"},
    )
    assert response.status_code == 200
    body = response.json()
    assert len(body["top_k"]) == 3
    assert body["prediction"] in {body["top_class"], "uncertain"}
    assert abs(sum(p["probability"] for p in body["top_k"])) <= 1.0 + 1e-6
    assert len(body["model_version"]) == 64


def test_concurrent_answers_equal_sequential_answers(server, images):
    texts = ["red itchy patch", "", "dark mole that grew", "scaly plaque"]

    def form(i: int) -> dict:
        return {
            "files": {"image": ("x.jpg", images[i].read_bytes(), "image/jpeg")},
            "data": {"text": texts[i % len(texts)], "top_k": "5"},
        }

    def answer(response: httpx.Response) -> dict:
        assert response.status_code == 200, response.text
        body = response.json()
        body.pop("timing_ms")
        return body

    with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as client:
        sequential = [
            answer(client.post("/v1/predict", **form(i))) for i in range(len(images))
        ]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=server.url, timeout=30, trust_env=False
        ) as client:
            return await asyncio.gather(
                *(client.post("/v1/predict", **form(i)) for i in range(len(images)))
            )

    responses = asyncio.run(burst())
    assert [answer(r) for r in responses] == sequential
    # They really were batched together.
    assert max(r.json()["timing_ms"]["batch_size"] for r in responses) > 1
    assert "2 model worker(s)" in server.log_file.read_text(encoding="utf-8")


def test_overload_sheds_with_retry_after(model_dir, images, tmp_path):
    settings = {"max_queue": 4, "max_batch_size": 2, "max_wait_ms": 0}
    with LocalServer(model_dir, settings=settings, log_file=tmp_path / "log") as server:

        async def burst() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=300)
            async with httpx.AsyncClient(
                base_url=server.url, timeout=60, limits=limits, trust_env=False
            ) as client:
                data = images[0].read_bytes()
                return await asyncio.gather(
                    *(
                        client.post(
                            "/v1/predict",
                            files={"image": ("x.jpg", data, "image/jpeg")},
                        )
                        for _ in range(150)
                    )
                )

        responses = asyncio.run(burst())
        statuses = [r.status_code for r in responses]
        shed = [r for r in responses if r.status_code == 503]
        assert shed, "a burst of 150 against a queue of 4 must shed load"
        assert set(statuses) <= {200, 503}
        assert statuses.count(200) >= 2
        for response in shed:
            assert response.json()["error"] == "overloaded"
            assert int(response.headers["retry-after"]) >= 1
        with httpx.Client(base_url=server.url, trust_env=False) as client:
            assert client.get("/readyz").status_code == 200
            metrics = client.get("/metrics").text
        assert 'mlkit_requests_rejected_total{reason="overloaded"}' in metrics
    assert server.returncode == 0


def test_sigterm_during_load_drains(model_dir, images, tmp_path):
    # Large images take a while to decode, so the drain lasts long enough to
    # watch readiness.
    big = tmp_path / "big"
    big.mkdir()
    for i in range(4):
        Image.effect_noise((1200, 1200), 60 + i).convert("RGB").save(big / f"{i}.jpg")
    settings = {"drain_timeout_s": 20, "decode_workers": 1}
    server = LocalServer(
        model_dir, settings=settings, log_file=tmp_path / "log"
    ).start()
    readiness: list[int | str] = []
    report = {}

    def load() -> None:
        profile = {
            "mode": "closed",
            "concurrency": 48,
            "duration_s": 5,
            "timeout_s": 30,
        }
        report["load"] = run_load_sync(
            server.url, profile, image_payloads(sorted(big.iterdir()), "rash")
        )

    def watch() -> None:
        with httpx.Client(base_url=server.url, timeout=2, trust_env=False) as client:
            while server.returncode is None:
                try:
                    readiness.append(client.get("/readyz").status_code)
                except httpx.TransportError as exc:
                    readiness.append(type(exc).__name__)
                time.sleep(0.01)

    loader = threading.Thread(target=load)
    loader.start()
    time.sleep(2.0)
    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(0.2)
    signalled = time.perf_counter()
    server.terminate()
    code = server.process.wait(30)
    exit_s = time.perf_counter() - signalled
    loader.join(60)
    watcher.join(10)
    server.stop()

    assert code == 0, server.log_tail()
    assert exit_s < 20 + 5
    assert 503 in readiness, readiness[-20:]
    # Ready until the signal, 503 while draining, then no server at all.
    first_503 = readiness.index(503)
    assert set(readiness[:first_503]) == {200}
    assert 200 not in readiness[first_503:]

    records = report["load"].requests_frame()
    ok = int((records["status"] == 200).sum())
    assert ok > 0
    # Requests the server accepted all succeeded; the only failures are new
    # requests refused while draining (503) or after the socket closed.
    errors = set(records.loc[records["status"] != 200, "error"].dropna())
    assert errors <= {"HTTP 503", "ConnectError"}, errors
    assert "drain took" in server.log_tail(200)


def readiness_failure(server: LocalServer, timeout_s: float = 60) -> httpx.Response:
    """The /readyz answer once the server reports that loading failed."""
    deadline = time.perf_counter() + timeout_s
    with httpx.Client(base_url=server.url, trust_env=False) as client:
        while time.perf_counter() < deadline:
            try:
                response = client.get("/readyz")
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            assert response.status_code == 503
            if "failed to load" in response.json()["detail"]:
                return response
            time.sleep(0.1)
    raise AssertionError(f"no load failure reported:\n{server.log_tail()}")


def test_missing_model_is_never_ready(tmp_path):
    server = LocalServer(tmp_path / "no-model", log_file=tmp_path / "log")
    server.start(wait=False)
    try:
        assert "model directory not found" in readiness_failure(server).text
        with httpx.Client(base_url=server.url, trust_env=False) as client:
            assert client.get("/healthz").status_code == 200
            predict = client.post("/v1/predict", **upload(JPEG))
            assert predict.status_code == 503
            assert predict.json()["error"] == "not_ready"
    finally:
        assert server.stop() == 0


def test_wrong_sha_or_pickle_file_is_refused(model_dir, tmp_path):
    wrong = "0" * 64
    server = LocalServer(
        model_dir, settings={"expected_model_sha256": wrong}, log_file=tmp_path / "log"
    )
    server.start(wait=False)
    try:
        assert "refusing to serve" in readiness_failure(server).text
    finally:
        server.stop()

    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    (copy / "extra.pkl").write_bytes(b"\x80\x04K\x01.")
    server = LocalServer(copy, log_file=tmp_path / "log2")
    server.start(wait=False)
    try:
        assert "pickle" in readiness_failure(server).text
    finally:
        server.stop()


def test_bad_setting_stops_the_server_before_it_listens(model_dir, tmp_path):
    server = LocalServer(
        model_dir, settings={"max_batch_size": "zero"}, log_file=tmp_path / "log"
    )
    with pytest.raises(ServerError, match="exited with status"):
        server.start(timeout_s=30)
    assert "max_batch_size" in server.log_tail()
    assert server.returncode != 0
