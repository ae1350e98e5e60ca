"""The HTTP API of the inference service (FastAPI).

``create_app(config)`` returns an app whose lifespan loads the model in the
background: the server answers ``/healthz`` at once and ``/readyz`` with 503
until the model is loaded and warmed up, so Kubernetes sends traffic only to
ready pods. Predictions go through a MicroBatcher; image decoding runs in a
thread pool, so the event loop only moves bytes.

Every error is JSON ``{"error": <code>, "detail": <sentence>}`` (codes in
``mlkit.serve.errors.ERROR_CODES``); no response ever carries a stack trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlkit.errors import MlkitError
from mlkit.serve.batching import Draining, MicroBatcher, QueueFull
from mlkit.serve.config import IMAGE_FORMATS, ServeConfig
from mlkit.serve.errors import ApiError
from mlkit.serve.images import decode_image
from mlkit.serve.metrics import CONTENT_TYPE_LATEST, Metrics
from mlkit.serve.predictor import EmbedJob, JobResult, PredictJob, Predictor
from mlkit.serve.requests import (
    PredictRequest,
    parse_embed_text,
    parse_embeddings,
    parse_predict,
)

log = logging.getLogger(__name__)

API_VERSION = "v1"
# Paths reported as themselves in metrics; anything else is "other", so that
# scanners probing random paths cannot blow up the number of time series.
ROUTES = (
    "/healthz",
    "/readyz",
    "/metrics",
    "/v1/predict",
    "/v1/predict/embeddings",
    "/v1/embed-text",
    "/v1/classes",
    "/v1/model",
)


def _load_predictor(config: ServeConfig) -> Predictor:
    """Load and check the model directory; runs in a worker thread."""
    from mlkit.train.run import load_model

    loaded = load_model(config.model_dir)
    version = loaded.card.get("weights_sha256")
    expected = config.expected_model_sha256
    if expected is not None and version != expected:
        raise MlkitError(
            f"{config.model_dir}: the model's weights sha256 is {version}, but "
            f"this server was built to serve {expected}; refusing to serve it"
        )
    return Predictor(
        loaded, block_size=config.block_size, max_rows=config.max_batch_size
    )


class Service:
    """The model, its batcher and the server's lifecycle state.

    States: ``loading`` -> ``ready`` (or ``failed``, with the reason) ->
    ``draining`` after :meth:`begin_drain`. Only ``ready`` takes predictions.
    """

    def __init__(
        self,
        config: ServeConfig,
        load: Callable[[ServeConfig], Predictor] = _load_predictor,
    ) -> None:
        self.config = config
        self._load = load
        self.predictor: Predictor | None = None
        self.batcher: MicroBatcher[PredictJob | EmbedJob, JobResult] | None = None
        self.state = "loading"
        self.failure: str | None = None
        self.metrics = Metrics(self._queue_depth)
        self.decode_pool = ThreadPoolExecutor(
            max_workers=config.decode_workers, thread_name_prefix="mlkit-decode"
        )
        # Requests admitted past parsing and not yet answered. Bounding them
        # bounds memory (decoded images) and the latency of accepted requests.
        self.admitted = 0
        self.max_admitted = config.max_queue + config.max_batch_size
        self._drained = False

    def _queue_depth(self) -> float:
        return float(self.batcher.stats()["queue_depth"]) if self.batcher else 0.0

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    async def load(self) -> None:
        """Load the model and warm it up; never raises (a failure is a state)."""
        started = time.perf_counter()
        try:
            predictor = await asyncio.to_thread(self._load, self.config)
            warm_s = await asyncio.to_thread(predictor.warm_up)
        except Exception as exc:
            self.state = "failed"
            self.failure = str(exc)
            log.error("model not loaded, the server stays unready: %s", exc)
            return
        self.predictor = predictor
        self.batcher = MicroBatcher(self._run_batch, self.config.batcher_config())
        await self.batcher.start()
        self.metrics.set_model(
            predictor.version,
            predictor.card["text_encoder"]["id"],
            len(predictor.classes),
        )
        if self.state == "loading":
            self.state = "ready"
            self.metrics.ready.set(1)
        log.info(
            "model %s loaded from %s in %.1f s (warm-up %.2f s); ready",
            predictor.version[:12],
            self.config.model_dir,
            time.perf_counter() - started,
            warm_s,
        )

    def _run_batch(self, jobs: list[PredictJob | EmbedJob]) -> list[JobResult]:
        assert self.predictor is not None
        results = self.predictor.run_batch(jobs)
        if results:
            self.metrics.observe_batch(results[0].batch.size, results[0].batch.seconds)
        return results

    def begin_drain(self) -> None:
        """Turn unready at once; new predictions get 503 ``draining``."""
        if self.state != "draining":
            log.info("draining: readiness is now 503, finishing queued requests")
        self.state = "draining"
        self.metrics.ready.set(0)

    async def drain(self, timeout_s: float | None = None) -> None:
        """Finish every queued request, then stop the batcher and the pools.

        Raises TimeoutError when the queue does not empty in time.
        """
        self.begin_drain()
        if self._drained:
            return
        timeout_s = timeout_s or self.config.drain_timeout_s
        deadline = time.perf_counter() + timeout_s
        # Admitted requests may still be decoding their image, before they
        # reach the batcher; they were accepted, so they are answered. Only
        # then does the batcher stop taking items.
        while self.admitted and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        if self.admitted:
            raise TimeoutError(
                f"{self.admitted} accepted requests were still running after "
                f"{timeout_s} s"
            )
        if self.batcher is not None:
            await self.batcher.drain(max(deadline - time.perf_counter(), 0.01))
        self.decode_pool.shutdown(wait=False, cancel_futures=True)
        self._drained = True
        log.info("drained")

    def check_ready(self) -> Predictor:
        if self.state == "draining":
            raise ApiError(
                "draining",
                "the server is shutting down; send the request to another replica",
                headers={"Connection": "close", "Retry-After": "1"},
            )
        if self.state == "failed":
            raise ApiError("not_ready", f"the model failed to load: {self.failure}")
        if self.predictor is None or self.batcher is None:
            raise ApiError(
                "not_ready", "the model is still loading", headers={"Retry-After": "1"}
            )
        return self.predictor

    def retry_after(self) -> str:
        seconds = self.batcher.retry_after_s() if self.batcher else 1.0
        return str(max(1, math.ceil(seconds)))

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Count a request in; 503 ``overloaded`` when too many are admitted."""
        if self.admitted >= self.max_admitted:
            self.metrics.rejected.labels("overloaded").inc()
            raise ApiError(
                "overloaded",
                f"{self.admitted} requests are being handled; retry later",
                headers={"Retry-After": self.retry_after()},
            )
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    async def submit(self, job: PredictJob | EmbedJob) -> JobResult:
        assert self.batcher is not None
        try:
            return await self.batcher.submit(job)
        except QueueFull as exc:
            self.metrics.rejected.labels("queue_full").inc()
            raise ApiError(
                "overloaded",
                str(exc),
                headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))},
            ) from None
        except Draining:
            self.begin_drain()
            raise ApiError(
                "draining",
                "the server is shutting down; send the request to another replica",
                headers={"Connection": "close", "Retry-After": "1"},
            ) from None


class _Guard:
    """ASGI middleware: body size limit, metrics and one log line per request.

    The limit is enforced twice: a declared Content-Length above it is refused
    before the body is read, and a body sent without one is counted while it
    arrives, so a client cannot make the server buffer more than the limit.
    """

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        route = path if path in ROUTES else "other"
        method = scope["method"]
        limit = self.service.config.max_body_bytes
        metrics = self.service.metrics
        status = 500

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(limit)
            return message

        metrics.in_flight.inc()
        try:
            declared = _content_length(scope)
            if declared is not None and declared > limit:
                metrics.rejected.labels("too_large").inc()
                await _error_response(_too_large(limit))(scope, receive, send_counted)
            else:
                await self.app(scope, receive_limited, send_counted)
        finally:
            metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            metrics.requests.labels(route, method, str(status)).inc()
            metrics.latency.labels(route).observe(elapsed)
            log.info("%s %s %s %.1f ms", method, path, status, 1000 * elapsed)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(limit: int) -> ApiError:
    return ApiError(
        "payload_too_large",
        f"the request body is larger than {limit} bytes; images may have at most "
        f"{int(limit * 3 / 4)} bytes",
        headers={"Connection": "close"},
    )


def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def create_app(
    config: ServeConfig,
    *,
    load: Callable[[ServeConfig], Predictor] = _load_predictor,
) -> FastAPI:
    """The service as an ASGI app; ``load`` is replaceable for tests."""
    service = Service(config, load)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(service.load())
        try:
            yield
        finally:
            loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loading
            try:
                await service.drain()
            except TimeoutError as exc:
                log.error("shutdown: %s", exc)

    app = FastAPI(
        title="mlkit inference service",
        version=API_VERSION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    app.add_middleware(_Guard, service=service)
    _add_error_handlers(app)
    _add_routes(app, service)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return _error_response(ApiError("invalid_request", problems))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 405:
            error = ApiError(
                "method_not_allowed",
                f"{request.method} is not allowed on {request.url.path}",
            )
        elif exc.status_code == 404:
            error = ApiError("not_found", f"no such path: {request.url.path}")
        else:
            error = ApiError("malformed_body", str(exc.detail))
        return _error_response(error)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error_response(
            ApiError("internal_error", "an unexpected error; see the server log")
        )


def _add_routes(app: FastAPI, service: Service) -> None:
    config = service.config

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        try:
            predictor = service.check_ready()
        except ApiError as exc:
            return _error_response(exc)
        return JSONResponse({"status": "ready", "model_version": predictor.version})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/model")
    async def model() -> dict[str, Any]:
        predictor = service.check_ready()
        return {"serving": predictor.describe(), "card": predictor.card}

    @app.get("/v1/classes")
    async def classes() -> dict[str, Any]:
        predictor = service.check_ready()
        return {"classes": predictor.classes, "model_version": predictor.version}

    @app.post("/v1/predict")
    async def predict(request: Request) -> dict[str, Any]:
        return await _predict(
            request, lambda body, ctype: parse_predict(body, ctype, config)
        )

    @app.post("/v1/predict/embeddings")
    async def predict_embeddings(request: Request) -> dict[str, Any]:
        vision_dim = service.check_ready().vision_dim
        return await _predict(
            request,
            lambda body, ctype: parse_embeddings(body, ctype, config, vision_dim),
        )

    @app.post("/v1/embed-text")
    async def embed_text(request: Request) -> dict[str, Any]:
        started = time.perf_counter()
        body = await request.body()
        texts = parse_embed_text(body, request.headers.get("content-type"), config)
        predictor = service.check_ready()
        with service.admit():
            result = await _within_timeout(service.submit(EmbedJob(tuple(texts))))
        return {
            **result.value,
            "dim": predictor.text_dim,
            "encoder": predictor.card["text_encoder"]["id"],
            "model_version": predictor.version,
            "timing_ms": _timing(started, result),
        }

    async def _predict(
        request: Request, parse: Callable[[bytes, str | None], PredictRequest]
    ) -> dict[str, Any]:
        started = time.perf_counter()
        body = await request.body()
        parsed = parse(body, request.headers.get("content-type"))
        predictor = service.check_ready()
        with service.admit():
            result = await _within_timeout(_run_prediction(parsed, predictor))
        return {
            **result.value,
            "model_version": predictor.version,
            "timing_ms": _timing(started, result),
        }

    async def _run_prediction(
        parsed: PredictRequest, predictor: Predictor
    ) -> JobResult:
        image = None
        if parsed.image is not None:
            loop = asyncio.get_running_loop()
            image = await loop.run_in_executor(
                service.decode_pool, _decode, parsed.image, config, predictor
            )
        embedding = None
        if parsed.vision_embedding is not None:
            embedding = torch.tensor(parsed.vision_embedding, dtype=torch.float32)
        job = PredictJob(image, embedding, parsed.text, parsed.top_k, parsed.thresholds)
        return await service.submit(job)

    async def _within_timeout(work: Awaitable[JobResult]) -> JobResult:
        try:
            async with asyncio.timeout(config.request_timeout_s):
                return await work
        except TimeoutError:
            service.metrics.rejected.labels("timeout").inc()
            raise ApiError(
                "timeout",
                f"the request took longer than {config.request_timeout_s} s",
            ) from None


def _decode(data: bytes, config: ServeConfig, predictor: Predictor) -> torch.Tensor:
    image = decode_image(
        data,
        max_bytes=config.max_upload_bytes,
        max_pixels=config.max_image_pixels,
        formats=IMAGE_FORMATS,
    )
    return predictor.prepare_image(image)


def _timing(started: float, result: JobResult) -> dict[str, float]:
    batch = result.batch
    done = time.perf_counter()
    return {
        "total": round(1000 * (done - started), 3),
        "queue": round(1000 * max(batch.started - started, 0.0), 3),
        "inference": round(1000 * batch.seconds, 3),
        "batch_size": batch.size,
    }
