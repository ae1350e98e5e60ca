"""Tests of the load generator against a real local server."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
from typing import Annotated

import pandas as pd
import pytest
from fastapi import FastAPI, File, Form, Request, Response, UploadFile
from pydantic import ValidationError

from mlkit.errors import ConfigError, DataError
from mlkit.serve.loadtest import (
    LoadProfile,
    arrival_times,
    image_payloads,
    parse_load_profile,
    run_load,
    run_load_sync,
)
from tests.threaded_server import serve_in_thread


def _app() -> FastAPI:
    app = FastAPI()
    app.state.uploads = []
    app.state.ports = []
    app.state.echoes = []

    @app.get("/ok")
    async def ok(sleep_ms: float = 10.0) -> dict:
        await asyncio.sleep(sleep_ms / 1000)
        return {"ok": True}

    @app.get("/flaky")
    async def flaky(i: int, response: Response) -> dict:
        # Every fourth request is shed, as an overloaded service would.
        if i % 4 == 0:
            response.status_code = 503
            response.headers["Retry-After"] = "1"
            return {"ok": False}
        return {"ok": True}

    @app.get("/port")
    async def port(request: Request) -> dict:
        # Which client connection carried the request.
        app.state.ports.append(request.client.port)
        await asyncio.sleep(0.002)
        return {"ok": True}

    @app.post("/echo")
    async def echo(request: Request) -> dict:
        app.state.echoes.append(
            (
                dict(request.query_params),
                await request.json(),
                request.headers.get("x-trace"),
                request.headers.get("content-type"),
            )
        )
        return {"ok": True}

    @app.get("/slow")
    async def slow() -> dict:
        await asyncio.sleep(0.5)
        return {"ok": True}

    @app.post("/v1/predict")
    async def predict(
        image: Annotated[UploadFile, File()],
        text: Annotated[str | None, Form()] = None,
    ) -> dict:
        body = await image.read()
        app.state.uploads.append((image.filename, image.content_type, body, text))
        return {"size": len(body)}

    return app


@pytest.fixture(scope="module")
def server():
    """A real uvicorn server on a free loopback port, in a background thread."""
    app = _app()
    with serve_in_thread(app) as url:
        yield url, app


def _get(path: str):
    return lambda i: {"method": "GET", "url": path}


def test_closed_loop_sends_exactly_max_requests(server):
    url, _ = server
    profile = LoadProfile(mode="closed", concurrency=4, max_requests=40)

    report = run_load_sync(url, profile, _get("/ok"))

    assert report.requests == report.ok == 40
    assert report.status_counts == {200: 40}
    assert report.errors == {}
    assert sorted(r.index for r in report.records) == list(range(40))
    # Four at a time: clearly more than one request outstanding on average
    # (a margin that holds on a busy machine; wall-clock goals are benchmarks).
    assert report.timeline()["in_flight"].iloc[0] > 1.5
    assert report.throughput == pytest.approx(40 / report.elapsed_s)


def test_open_loop_follows_the_seeded_poisson_schedule(server):
    url, _ = server
    profile = LoadProfile(mode="open", rate=50, duration_s=1.0, seed=3)
    planned = arrival_times(profile)

    report = run_load_sync(url, profile, _get("/ok?sleep_ms=2"))

    assert 30 <= len(planned) <= 70
    assert report.requests == report.ok == len(planned)
    assert (arrival_times(profile) == planned).all()
    assert len(arrival_times(profile.model_copy(update={"seed": 4}))) != len(planned)
    starts = report.requests_frame()["start_s"].to_numpy()
    # Requests follow the schedule rather than all leaving at once; the margin
    # allows for a busy machine's event-loop latency.
    assert abs(starts - planned).max() < 0.25

    timeline = report.timeline()
    assert len(timeline) == math.ceil(report.elapsed_s)
    assert timeline["sent"].sum() == report.requests
    assert (timeline["ok"] + timeline["errors"] == timeline["sent"]).all()
    assert (timeline["target"] == 50).all()


def test_open_loop_reuses_a_few_kept_alive_connections(server):
    url, app = server
    app.state.ports.clear()
    profile = LoadProfile(mode="open", rate=100, max_requests=60, duration_s=5, seed=1)

    report = run_load_sync(url, profile, _get("/port"))

    assert report.requests == report.ok == 60
    # Requests that do not overlap share connections: far fewer connections
    # than requests (taking the 256 slots in turn opened one per request).
    assert len(app.state.ports) == 60
    assert len(set(app.state.ports)) <= 12


def test_payloads_use_httpx_request_arguments(server):
    url, app = server
    app.state.ports.clear()
    report = run_load_sync(
        url,
        {"concurrency": 1, "max_requests": 2},
        lambda i: {
            "method": "POST",
            "url": "/echo",
            "params": {"i": i, "q": "a b&c"},
            "json": {"n": i, "text": "é"},
            "headers": {"X-Trace": f"t{i}"},
        },
    )
    assert report.ok == 2
    assert app.state.echoes == [
        ({"i": "0", "q": "a b&c"}, {"n": 0, "text": "é"}, "t0", "application/json"),
        ({"i": "1", "q": "a b&c"}, {"n": 1, "text": "é"}, "t1", "application/json"),
    ]

    with pytest.raises(ConfigError, match="payload\\(0\\) has keys that an HTTP"):
        run_load_sync(
            url,
            {"concurrency": 1, "max_requests": 1},
            lambda i: {"method": "GET", "url": "/ok", "jsn": {}},
        )


def test_open_loop_stops_at_max_requests():
    profile = LoadProfile(mode="open", rate=200, max_requests=25, duration_s=10)
    assert len(arrival_times(profile)) == 25


def test_error_statuses_and_exceptions_are_counted(server):
    url, _ = server
    flaky = run_load_sync(
        url,
        {"concurrency": 3, "max_requests": 20},
        lambda i: {"method": "GET", "url": "/flaky", "params": {"i": i}},
    )
    assert flaky.requests == 20
    assert flaky.errors == {"HTTP 503": 5}
    assert flaky.status_counts == {200: 15, 503: 5}
    assert flaky.ok == 15

    timeouts = run_load_sync(
        url, {"concurrency": 2, "max_requests": 2, "timeout_s": 0.1}, _get("/slow")
    )
    assert timeouts.errors == {"Timeout": 2}
    assert timeouts.ok == 0 and math.isnan(timeouts.p50_ms)
    assert timeouts.to_dict()["p99_ms"] is None
    frame = timeouts.requests_frame()
    assert frame["status"].isna().all() and not frame["ok"].any()
    assert (frame["latency_ms"] >= 100).all()


def test_refused_connections_are_counted():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    report = run_load_sync(
        f"http://127.0.0.1:{port}", {"concurrency": 1, "max_requests": 3}, _get("/")
    )
    assert report.errors == {"ConnectError": 3}
    assert report.throughput == 0


def test_connections_closed_without_an_answer_are_counted():
    # A server that reads each request and hangs up without answering.
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    port = listener.getsockname()[1]
    done = threading.Event()

    def hang_up() -> None:
        with listener:
            while not done.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                with conn:
                    conn.recv(65536)

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    report = run_load_sync(
        f"http://127.0.0.1:{port}", {"concurrency": 1, "max_requests": 2}, _get("/")
    )
    done.set()
    thread.join(timeout=10)
    assert report.errors == {"ServerDisconnected": 2}
    assert report.requests_frame()["status"].isna().all()


def test_percentiles_are_ordered_and_exports_are_complete(server, tmp_path):
    url, _ = server
    report = run_load_sync(
        url,
        {"concurrency": 8, "max_requests": 60},
        lambda i: {"method": "GET", "url": "/ok", "params": {"sleep_ms": i % 10}},
    )

    assert 0 < report.p50_ms <= report.p90_ms <= report.p95_ms <= report.p99_ms
    summary = json.loads(json.dumps(report.to_dict()))
    assert summary["requests"] == summary["ok"] == 60
    assert summary["profile"]["concurrency"] == 8

    report.requests_frame().to_csv(tmp_path / "requests.csv", index=False)
    back = pd.read_csv(tmp_path / "requests.csv")
    assert len(back) == 60
    assert list(back.columns) == [
        "index",
        "start_s",
        "latency_ms",
        "status",
        "ok",
        "error",
    ]


def test_closed_ramp_raises_the_in_flight_level(server):
    url, _ = server
    profile = LoadProfile(mode="closed", ramp=[(0, 1), (1, 8)], duration_s=2.0)

    report = run_load_sync(url, profile, _get("/ok?sleep_ms=20"))

    timeline = report.timeline()
    assert report.errors == {}
    assert timeline["target"].iloc[0] == pytest.approx(4.5, abs=0.2)
    assert timeline["target"].iloc[1] == 8
    # The level rises with the ramp (margins hold on a busy machine).
    assert timeline["in_flight"].iloc[1] > timeline["in_flight"].iloc[0] + 1
    assert timeline["in_flight"].iloc[1] > 4
    # The first requests ran one at a time.
    first = report.requests_frame().iloc[:3]
    assert (first["start_s"].diff().dropna() >= 0.015).all()


def test_open_ramp_thins_arrivals_towards_the_start():
    profile = LoadProfile(mode="open", ramp=[(0, 0), (10, 400)], duration_s=10)
    times = arrival_times(profile)
    early, late = (times < 5).sum(), (times >= 5).sum()
    # The rate integrates to 500 before 5 s and 1500 after.
    assert 400 < early < 600 and 1350 < late < 1650


def test_level_interpolates_the_ramp_and_holds_its_ends():
    profile = LoadProfile(ramp=[(10, 0), (70, 32)], duration_s=100)
    assert profile.level_at(0) == 0
    assert profile.level_at(40) == 16
    assert profile.level_at(100) == 32
    assert profile.pool_size == 32


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"mode": "open", "max_requests": 5}, "needs exactly one of rate or ramp"),
        ({"mode": "open", "rate": 5, "concurrency": 2, "max_requests": 5}, "does not"),
        ({"concurrency": 2}, "give duration_s, max_requests or both"),
        ({"concurrency": -1, "max_requests": 5}, "concurrency"),
        ({"concurrency": 2, "duration_s": -1}, "duration_s"),
        ({"concurrency": 2, "max_requests": 10**9}, "max_requests"),
        ({"concurrency": 2, "max_requests": 5, "timeout_s": 0}, "timeout_s"),
        ({"ramp": [(0, 1), (0, 2)], "max_requests": 5}, "increase strictly"),
        ({"ramp": [(0, 4), (5, 0)], "max_requests": 5}, "give duration_s too"),
        ({"ramp": [(0, -1)], "max_requests": 5}, "ramp"),
        ({"ramp": [], "max_requests": 5}, "at least one"),
        ({"ramp": [(0, 0.2)], "duration_s": 5}, "never reaches a level"),
        ({"ramp": [(0, 2000)], "max_requests": 5}, "at most 1000"),
        ({"concurrency": 2, "max_requests": 5, "max_connections": 4}, "open' only"),
        ({"concurrency": 2, "max_requests": 5, "rps": 3}, "unknown key"),
    ],
)
def test_invalid_profiles_are_refused_with_the_reason(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_load_profile(data)
    with pytest.raises(ValidationError):
        LoadProfile(**data)


def test_non_mapping_profiles_and_closed_arrivals_are_refused():
    with pytest.raises(ConfigError, match="expected a mapping, got str"):
        parse_load_profile("fast")
    with pytest.raises(ConfigError, match="mode 'open' only"):
        arrival_times(LoadProfile(concurrency=1, max_requests=1))


@pytest.mark.parametrize(
    "level", [{"concurrency": 2}, {"mode": "open", "rate": 100}], ids=["closed", "open"]
)
def test_malformed_payloads_end_the_run(server, level):
    url, _ = server
    profile = {**level, "max_requests": 3}
    with pytest.raises(ConfigError, match="payload\\(0\\): url must be a path"):
        run_load_sync(
            url, profile, lambda i: {"method": "GET", "url": "http://example.com/"}
        )
    with pytest.raises(ConfigError, match="'method' and 'url'"):
        run_load_sync(url, profile, lambda i: {"url": "/ok"})


def test_image_payloads_cycle_files_as_multipart(server, tmp_path):
    url, app = server
    paths = []
    for name, body in [("a.png", b"A" * 3), ("b.jpg", b"B" * 5), ("c.bin", b"C")]:
        (tmp_path / name).write_bytes(body)
        paths.append(tmp_path / name)
    payload = image_payloads(paths, text=["one", "two", "three"])
    app.state.uploads.clear()

    report = run_load_sync(url, {"concurrency": 1, "max_requests": 7}, payload)

    assert report.ok == 7
    names = [upload[0] for upload in app.state.uploads]
    assert names == ["a.png", "b.jpg", "c.bin"] * 2 + ["a.png"]
    assert app.state.uploads[1] == ("b.jpg", "image/jpeg", b"BBBBB", "two")
    assert app.state.uploads[2][1] == "application/octet-stream"
    assert "data" not in image_payloads(paths)(0)


def test_image_payloads_check_their_inputs(tmp_path):
    (tmp_path / "a.png").write_bytes(b"A")
    with pytest.raises(DataError, match="missing.png: image file not found"):
        image_payloads([tmp_path / "a.png", tmp_path / "missing.png"])
    with pytest.raises(DataError, match="at least one path"):
        image_payloads([])
    with pytest.raises(DataError, match="expected 1 texts, got 2"):
        image_payloads([tmp_path / "a.png"], text=["x", "y"])
    with pytest.raises(ConfigError, match="url must be a path"):
        image_payloads([tmp_path / "a.png"], path="v1/predict")


def test_run_load_sync_works_inside_a_running_event_loop(server):
    url, _ = server

    async def notebook_cell():
        # A notebook kernel calls the sync wrapper with its own loop running.
        return run_load_sync(url, {"concurrency": 2, "max_requests": 4}, _get("/ok"))

    assert asyncio.run(notebook_cell()).ok == 4


def test_run_load_is_a_coroutine_for_async_callers(server):
    url, _ = server
    report = asyncio.run(
        run_load(url, LoadProfile(concurrency=1, max_requests=2), _get("/ok"))
    )
    assert report.requests == 2
    assert isinstance(report.records[0].latency_ms, float)
