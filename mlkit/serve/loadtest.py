"""Load generator for the inference service.

A :class:`LoadProfile` says how hard to push: a closed loop keeps a fixed number
of requests in flight (each worker sends its next request when the previous one
answers), an open loop sends requests at a target rate with Poisson arrivals,
whether or not the service keeps up. Either level can follow a ramp. A
:data:`Payload` decides what each request carries, so the caller can send real
dataset images. :func:`run_load` sends the requests and returns a
:class:`LoadReport` in which every response status and every exception is
counted; nothing is retried or dropped.

Requests are described with the keyword arguments of ``httpx`` (``json``,
``files``, ``data`` ...), which httpx encodes, and sent with aiohttp, whose
HTTP parser is written in C: the generator usually shares the machine with
the service it measures, and per request it needs about a quarter of the CPU
that httpx's own client does (see ``benchmarks/bench_serve.py``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import mimetypes
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp
import httpx
import numpy as np
import pandas as pd
import yarl
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    model_validator,
)

from mlkit.errors import (
    ConfigError,
    DataError,
    validate_config,
)

log = logging.getLogger(__name__)

__all__ = [
    "MAX_CONCURRENCY",
    "MAX_DURATION_S",
    "MAX_RATE",
    "MAX_REQUESTS",
    "LoadProfile",
    "LoadReport",
    "Payload",
    "RequestRecord",
    "arrival_times",
    "image_payloads",
    "parse_load_profile",
    "run_load",
    "run_load_sync",
]

# Upper bounds that keep a mistyped profile from running for hours or holding
# millions of records in memory. MAX_REQUESTS also caps a run that only has a
# duration.
MAX_CONCURRENCY = 1000
MAX_RATE = 5000.0
MAX_DURATION_S = 3600.0
MAX_REQUESTS = 1_000_000
MAX_TIMEOUT_S = 300.0

# Connection pool of an open loop when the profile does not size it.
DEFAULT_OPEN_CONNECTIONS = 100

# How often an idle closed-loop worker checks whether the ramp has reached it.
_IDLE_POLL_S = 0.01
# Headers that the transport sets itself from the URL and the body.
_TRANSPORT_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})

Payload = Callable[[int], Mapping[str, Any]]
"""Builds request ``i`` as keyword arguments of ``httpx.Request``.

It must give ``method`` and ``url`` (a path such as ``"/v1/predict"``, joined to
the base URL) and may give ``json``, ``files``, ``data``, ``content``,
``params``, ``headers``.
"""


class LoadProfile(BaseModel):
    """How much load to send and when to stop.

    ``mode`` "closed" keeps ``concurrency`` requests in flight; "open" starts
    requests at ``rate`` per second with Poisson arrivals drawn from ``seed``.
    Instead of a fixed level, ``ramp`` gives ``(seconds, level)`` points that are
    interpolated linearly (held flat before the first and after the last), e.g.
    ``[(0, 0), (60, 32)]``. The run stops sending at ``duration_s`` or after
    ``max_requests``, whichever comes first, then waits for the requests in
    flight. ``timeout_s`` limits each phase of a request (waiting for a pooled
    connection, connecting, sending, each read). ``max_connections`` sizes the
    connection pool of an open loop; arrivals beyond it wait for a connection,
    and that wait is part of their latency.
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["closed", "open"] = "closed"
    concurrency: int | None = Field(default=None, ge=1, le=MAX_CONCURRENCY)
    rate: float | None = Field(default=None, gt=0, le=MAX_RATE)
    ramp: list[tuple[NonNegativeFloat, NonNegativeFloat]] | None = None
    duration_s: float | None = Field(default=None, gt=0, le=MAX_DURATION_S)
    max_requests: int | None = Field(default=None, ge=1, le=MAX_REQUESTS)
    timeout_s: float = Field(default=10.0, gt=0, le=MAX_TIMEOUT_S)
    max_connections: int | None = Field(default=None, ge=1, le=MAX_CONCURRENCY)
    seed: NonNegativeInt = 0

    @model_validator(mode="after")
    def _consistent(self) -> LoadProfile:
        level_name = "concurrency" if self.mode == "closed" else "rate"
        other_name = "rate" if self.mode == "closed" else "concurrency"
        if getattr(self, other_name) is not None:
            raise ValueError(
                f"{other_name} does not apply to mode {self.mode!r}; "
                f"give {level_name} or ramp"
            )
        if self.mode == "closed" and self.max_connections is not None:
            raise ValueError(
                "max_connections applies to mode 'open' only; a closed loop "
                "opens one connection per concurrent request"
            )
        if (getattr(self, level_name) is None) == (self.ramp is None):
            raise ValueError(
                f"mode {self.mode!r} needs exactly one of {level_name} or ramp"
            )
        if self.duration_s is None and self.max_requests is None:
            raise ValueError("give duration_s, max_requests or both, so the run ends")
        if self.ramp is not None:
            self._check_ramp(self.ramp)
        return self

    def _check_ramp(self, ramp: list[tuple[float, float]]) -> None:
        if not ramp:
            raise ValueError("ramp needs at least one (seconds, level) point")
        times = [t for t, _ in ramp]
        if any(b <= a for a, b in zip(times, times[1:], strict=False)):
            raise ValueError(f"ramp times must increase strictly, got {times}")
        bound = MAX_CONCURRENCY if self.mode == "closed" else MAX_RATE
        if max(v for _, v in ramp) > bound:
            raise ValueError(
                f"ramp levels must be at most {bound} in mode {self.mode!r}"
            )
        if self._sendable(max(v for _, v in ramp)) <= 0:
            raise ValueError("ramp never reaches a level at which a request is sent")
        if self.duration_s is None and self._sendable(ramp[-1][1]) <= 0:
            raise ValueError(
                "a ramp that ends at level 0 never reaches max_requests; "
                "give duration_s too"
            )

    def _sendable(self, level: float) -> float:
        # A closed loop runs a whole number of workers: a level below one half
        # rounds to none.
        return _workers(level) if self.mode == "closed" else level

    def level_at(self, seconds: float | np.ndarray) -> float | np.ndarray:
        """Target concurrency (closed) or rate (open) ``seconds`` into the run."""
        if self.ramp is None:
            level = float(self.concurrency if self.mode == "closed" else self.rate)
            return (
                np.full_like(seconds, level, dtype=float) if np.ndim(seconds) else level
            )
        times, levels = zip(*self.ramp, strict=True)
        level = np.interp(seconds, times, levels)
        return level if np.ndim(seconds) else float(level)

    @property
    def peak_level(self) -> float:
        """Highest target level of the run."""
        if self.ramp is None:
            return float(self.concurrency if self.mode == "closed" else self.rate)
        return max(v for _, v in self.ramp)

    @property
    def request_limit(self) -> int:
        """Most requests the run sends."""
        return self.max_requests or MAX_REQUESTS

    @property
    def pool_size(self) -> int:
        """Connections the client may open at once."""
        if self.mode == "closed":
            return _workers(self.peak_level)
        return self.max_connections or DEFAULT_OPEN_CONNECTIONS


def _workers(level: float) -> int:
    return math.floor(level + 0.5)


def parse_load_profile(
    data: LoadProfile | Mapping[str, Any], *, source: str = "load profile"
) -> LoadProfile:
    """Validate ``data`` into a LoadProfile.

    Raises ConfigError naming ``source`` and every invalid field.
    """
    return validate_config(
        LoadProfile, data, what="load profile", source=source, empty_ok=False
    )


def parse_ramp(text: str) -> list[tuple[float, float]]:
    """Ramp points from ``"SECONDS:LEVEL,..."`` (e.g. ``"0:0,60:32"``).

    Raises ConfigError naming the point that is not two numbers.
    """
    points = []
    for item in text.split(","):
        seconds, sep, level = item.strip().partition(":")
        try:
            if not sep:
                raise ValueError
            points.append((float(seconds), float(level)))
        except ValueError:
            raise ConfigError(
                f"ramp point {item.strip()!r} is not SECONDS:LEVEL; write the ramp "
                "as e.g. '0:0,60:32'"
            ) from None
    return points


def arrival_times(profile: LoadProfile) -> np.ndarray:
    """Planned start times (seconds) of an open loop's requests.

    The same profile and seed always give the same times; a ramp thins a
    Poisson process at the peak rate down to the rate at each moment.
    """
    if profile.mode != "open":
        raise ConfigError(
            f"arrival times exist for mode 'open' only, got mode {profile.mode!r}"
        )
    return np.fromiter(_arrivals(profile), dtype=float)


def _arrivals(profile: LoadProfile) -> Iterator[float]:
    rng = np.random.default_rng(profile.seed)
    peak = profile.peak_level
    t = 0.0
    sent = 0
    while sent < profile.request_limit:
        t += rng.exponential(1.0 / peak)
        if profile.duration_s is not None and t >= profile.duration_s:
            return
        if profile.ramp is None or rng.random() * peak < profile.level_at(t):
            sent += 1
            yield t


def image_payloads(
    paths: Sequence[str | Path],
    text: str | Sequence[str] | None = None,
    path: str = "/v1/predict",
    *,
    image_field: str = "image",
    text_field: str = "text",
) -> Payload:
    """A payload that POSTs the image files in turn as multipart uploads.

    Request ``i`` carries ``paths[i % len(paths)]`` under ``image_field`` and,
    when ``text`` is given, a form field ``text_field``: one string for every
    request, or one string per path. Files are read when a request is built, so
    a large dataset is not held in memory. Raises DataError for a missing file
    or a text list of the wrong length.
    """
    files = [Path(p) for p in paths]
    if not files:
        raise DataError("no image files to send", expected="at least one path")
    missing = [p for p in files if not p.is_file()]
    if missing:
        raise DataError(
            "image file not found",
            path=missing[0],
            hint=f"{len(missing)} of {len(files)} paths are missing",
        )
    texts: list[str] | None
    if text is None or isinstance(text, str):
        texts = None if text is None else [text] * len(files)
    else:
        texts = list(text)
        if len(texts) != len(files):
            raise DataError(
                "one text per image is needed",
                expected=f"{len(files)} texts",
                got=str(len(texts)),
            )
    _check_path(path, source="image_payloads")

    def payload(i: int) -> dict[str, Any]:
        file = files[i % len(files)]
        content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        request: dict[str, Any] = {
            "method": "POST",
            "url": path,
            "files": {image_field: (file.name, file.read_bytes(), content_type)},
        }
        if texts is not None:
            request["data"] = {text_field: texts[i % len(texts)]}
        return request

    return payload


def _check_path(url: object, *, source: str) -> None:
    # Only paths are accepted so that every request goes to the base URL that
    # the caller chose, never to a host a payload names.
    if not isinstance(url, str) or not url.startswith("/"):
        raise ConfigError(
            f"{source}: url must be a path such as '/v1/predict' that is joined "
            f"to the base URL, got {url!r}"
        )


@dataclass(frozen=True)
class _Encoded:
    """A request ready for the wire: method, absolute URL, headers, body."""

    method: str
    url: yarl.URL
    headers: dict[str, str]
    body: bytes


def _build_request(payload: Payload, i: int, base_url: str) -> _Encoded:
    """Request ``i`` of ``payload``, encoded by httpx's request model."""
    request = payload(i)
    if not isinstance(request, Mapping) or not {"method", "url"} <= request.keys():
        raise ConfigError(
            f"payload({i}) must return a mapping with 'method' and 'url', got "
            f"{request!r:.200}"
        )
    _check_path(request["url"], source=f"payload({i})")
    fields = dict(request)
    method, path = fields.pop("method"), fields.pop("url")
    try:
        built = httpx.Request(method, base_url + path, **fields)
    except TypeError as exc:
        raise ConfigError(
            f"payload({i}) has keys that an HTTP request does not take: {exc}"
        ) from None
    headers = {
        k: v for k, v in built.headers.items() if k.lower() not in _TRANSPORT_HEADERS
    }
    return _Encoded(
        built.method, yarl.URL(str(built.url), encoded=True), headers, built.read()
    )


def _error_name(exc: BaseException) -> str:
    """A stable name for a failed request's exception, as the report counts it."""
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return "ConnectError"
    if isinstance(exc, TimeoutError):
        # The whole request took longer than the profile's timeout_s.
        return "Timeout"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "ServerDisconnected"
    return type(exc).__name__


@dataclass(frozen=True)
class RequestRecord:
    """One request of a run.

    ``start_s`` is seconds from the start of the run; ``status`` is None when
    no response came back; ``error`` is None for a 2xx response, otherwise
    "HTTP <status>", or for a transport failure "ConnectError" (refused or
    unreachable), "Timeout" (no complete answer within the profile's
    ``timeout_s``), "ServerDisconnected" (the server closed the connection
    before answering) or the exception's class name.
    """

    index: int
    start_s: float
    latency_ms: float
    status: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class LoadReport:
    """What a load run sent and what came back."""

    base_url: str
    profile: LoadProfile
    records: tuple[RequestRecord, ...]
    elapsed_s: float

    @property
    def requests(self) -> int:
        return len(self.records)

    @property
    def ok(self) -> int:
        return sum(r.ok for r in self.records)

    @property
    def errors(self) -> dict[str, int]:
        """Failed requests by cause: "HTTP <status>" or an exception class."""
        return dict(Counter(r.error for r in self.records if r.error is not None))

    @property
    def status_counts(self) -> dict[int, int]:
        """Every HTTP status that came back, with its count."""
        return dict(Counter(r.status for r in self.records if r.status is not None))

    @property
    def throughput(self) -> float:
        """Successful requests per second over the whole run."""
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def latency_ms(self, q: float) -> float:
        """Latency percentile ``q`` (0-100) of the successful requests; NaN if
        none succeeded."""
        latencies = [r.latency_ms for r in self.records if r.ok]
        return float(np.percentile(latencies, q)) if latencies else math.nan

    @property
    def p50_ms(self) -> float:
        return self.latency_ms(50)

    @property
    def p90_ms(self) -> float:
        return self.latency_ms(90)

    @property
    def p95_ms(self) -> float:
        return self.latency_ms(95)

    @property
    def p99_ms(self) -> float:
        return self.latency_ms(99)

    def requests_frame(self) -> pd.DataFrame:
        """One row per request, in start order."""
        frame = pd.DataFrame(
            {
                "index": [r.index for r in self.records],
                "start_s": [r.start_s for r in self.records],
                "latency_ms": [r.latency_ms for r in self.records],
                "status": pd.array([r.status for r in self.records], dtype="Int64"),
                "ok": [r.ok for r in self.records],
                "error": [r.error for r in self.records],
            }
        ).astype({"index": "int64", "start_s": float, "latency_ms": float, "ok": bool})
        return frame.sort_values("start_s", kind="stable").reset_index(drop=True)

    def timeline(self) -> pd.DataFrame:
        """One row per second of the run, by the second a request started.

        ``sent``, ``ok`` and ``errors`` count requests; ``p50_ms`` and
        ``p95_ms`` are latencies of that second's successful requests (NaN when
        there were none); ``in_flight`` is the mean number of requests
        outstanding during the second; ``target`` is the profile's concurrency
        or rate at its middle.
        """
        frame = self.requests_frame()
        n_seconds = max(1, math.ceil(self.elapsed_s))
        second = np.clip(np.floor(frame["start_s"].to_numpy()), 0, n_seconds - 1)
        frame["second"] = second.astype(int)
        ok_frame = frame.loc[frame["ok"]].groupby("second")["latency_ms"]
        seconds = np.arange(n_seconds)

        # The last row may cover only part of a second.
        edges = np.minimum(np.arange(n_seconds + 1, dtype=float), self.elapsed_s)
        edges[-1] = max(self.elapsed_s, edges[-2])
        widths = np.diff(edges)
        busy = np.diff(_busy_seconds(frame, edges))
        in_flight = np.divide(busy, widths, out=np.zeros_like(busy), where=widths > 0)

        sent = np.bincount(frame["second"], minlength=n_seconds)
        ok = np.bincount(
            frame["second"], weights=frame["ok"].astype(int), minlength=n_seconds
        ).astype(int)
        return pd.DataFrame(
            {
                "second": seconds,
                "sent": sent,
                "ok": ok,
                "errors": sent - ok,
                "p50_ms": ok_frame.quantile(0.5).reindex(seconds).to_numpy(),
                "p95_ms": ok_frame.quantile(0.95).reindex(seconds).to_numpy(),
                "in_flight": in_flight,
                "target": self.profile.level_at((edges[:-1] + edges[1:]) / 2),
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary; a percentile with no successful request is None."""

        def number(value: float) -> float | None:
            return None if math.isnan(value) else round(value, 3)

        return {
            "base_url": self.base_url,
            "mode": self.profile.mode,
            "requests": self.requests,
            "ok": self.ok,
            "errors": self.errors,
            "status_counts": {str(k): v for k, v in self.status_counts.items()},
            "elapsed_s": round(self.elapsed_s, 3),
            "throughput_rps": round(self.throughput, 3),
            "p50_ms": number(self.p50_ms),
            "p90_ms": number(self.p90_ms),
            "p95_ms": number(self.p95_ms),
            "p99_ms": number(self.p99_ms),
            "profile": self.profile.model_dump(mode="json"),
        }


def _busy_seconds(frame: pd.DataFrame, edges: np.ndarray) -> np.ndarray:
    # Request-seconds spent in flight before each edge T: the sum over requests
    # of (T - start) for those started, less (T - end) for those finished.
    # Sorting makes it one prefix-sum lookup per edge.
    start = frame["start_s"].to_numpy()
    starts = np.sort(start)
    ends = np.sort(start + frame["latency_ms"].to_numpy() / 1000.0)
    total = np.zeros_like(edges)
    for times, sign in ((starts, 1.0), (ends, -1.0)):
        prefix = np.concatenate([[0.0], np.cumsum(times)])
        count = np.searchsorted(times, edges, side="left")
        total += sign * (edges * count - prefix[count])
    return total


class _Run:
    """The shared state of one run: clock, counter and records."""

    def __init__(
        self, session: aiohttp.ClientSession, profile: LoadProfile, base_url: str
    ) -> None:
        self.session = session
        self.profile = profile
        self.base_url = base_url
        self.records: list[RequestRecord] = []
        self.claimed = 0
        self.t0 = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def out_of_time(self) -> bool:
        duration = self.profile.duration_s
        return duration is not None and self.now() >= duration

    def claim(self) -> int | None:
        # No await between the check and the increment, so workers on the one
        # event loop never claim the same index or overshoot the limit.
        if self.claimed >= self.profile.request_limit:
            return None
        self.claimed += 1
        return self.claimed - 1

    def build(self, payload: Payload, index: int) -> _Encoded:
        return _build_request(payload, index, self.base_url)

    async def send(self, index: int, request: _Encoded) -> None:
        # No retries: a 503 with Retry-After is counted as an error, so the
        # report shows the load the service shed.
        start = time.perf_counter()
        status: int | None = None
        try:
            async with self.session.request(
                request.method, request.url, headers=request.headers, data=request.body
            ) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            error: str | None = _error_name(exc)
        else:
            error = None if 200 <= status < 300 else f"HTTP {status}"
        latency_ms = (time.perf_counter() - start) * 1000.0
        self.records.append(
            RequestRecord(index, start - self.t0, latency_ms, status, error)
        )


async def _closed_loop(run: _Run, payload: Payload) -> None:
    async def worker(rank: int) -> None:
        while not run.out_of_time():
            if rank >= _workers(run.profile.level_at(run.now())):
                await asyncio.sleep(_IDLE_POLL_S)
                continue
            index = run.claim()
            if index is None:
                return
            await run.send(index, run.build(payload, index))

    async with asyncio.TaskGroup() as group:
        for rank in range(run.profile.pool_size):
            group.create_task(worker(rank))


async def _open_loop(run: _Run, payload: Payload) -> None:
    # Limitation: the schedule is followed by one event loop; if building a
    # request or a busy loop delays a start, later starts keep their planned
    # times but that one request starts late. With every connection busy, a
    # request waits in the pool for one; its latency counts the wait.
    async with asyncio.TaskGroup() as group:
        for index, planned in enumerate(_arrivals(run.profile)):
            delay = planned - run.now()
            if delay > 0:
                await asyncio.sleep(delay)
            group.create_task(run.send(index, run.build(payload, index)))


async def run_load(
    base_url: str,
    profile: LoadProfile | Mapping[str, Any],
    payload: Payload,
) -> LoadReport:
    """Send the load that ``profile`` describes to ``base_url``.

    Every request is recorded: a non-2xx status as "HTTP <status>", a transport
    failure (timeout, refused connection) by name (see :class:`RequestRecord`).
    A payload that returns a malformed request raises ConfigError and ends the
    run.
    """
    profile = parse_load_profile(profile)
    size = profile.pool_size
    log.info(
        "load test: %s loop against %s, peak level %s, %s connections",
        profile.mode,
        base_url,
        profile.peak_level,
        size,
    )
    # One pool of at most `size` connections. The pool hands out the most
    # recently freed connection first, so at a modest open-loop rate the same
    # few kept-alive connections carry every request (a fresh connection per
    # request would measure TCP setup). No proxy from the environment
    # (trust_env=False), or the proxy would be measured instead.
    connector = aiohttp.TCPConnector(limit=size, limit_per_host=size)
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=profile.timeout_s),
        trust_env=False,
        auto_decompress=False,
    )
    async with session:
        run = _Run(session, profile, base_url.rstrip("/"))
        loop = _closed_loop if profile.mode == "closed" else _open_loop
        try:
            await loop(run, payload)
        except ExceptionGroup as group:
            # A malformed payload is the caller's mistake: raise it as itself,
            # not wrapped in the task group's exception group.
            _, others = group.split(ConfigError)
            if others is None:
                raise _first_leaf(group) from None
            raise
        elapsed = run.now()

    report = LoadReport(base_url, profile, tuple(run.records), elapsed)
    log.info(
        "load test: %d requests in %.1f s, %d ok, %.1f ok/s, p50 %.1f ms, p99 %.1f ms",
        report.requests,
        elapsed,
        report.ok,
        report.throughput,
        report.p50_ms,
        report.p99_ms,
    )
    if report.errors:
        log.warning(
            "load test: %d of %d requests failed: %s",
            report.requests - report.ok,
            report.requests,
            report.errors,
        )
    return report


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def run_load_sync(
    base_url: str,
    profile: LoadProfile | Mapping[str, Any],
    payload: Payload,
) -> LoadReport:
    """:func:`run_load` for code without an event loop, and for notebooks.

    A notebook kernel already runs an event loop in its thread and asyncio
    refuses to nest loops, so there the run gets its own loop in a worker
    thread; the call blocks until the run ends either way.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run_load(base_url, profile, payload))
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(
            lambda: asyncio.run(run_load(base_url, profile, payload))
        ).result()
