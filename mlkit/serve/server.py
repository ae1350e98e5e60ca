"""Running the service under uvicorn, with a graceful drain on SIGTERM.

Kubernetes stops a pod by running its preStop hook, then sending SIGTERM, then
SIGKILL after the termination grace period. On the first SIGTERM (or SIGINT)
the server turns unready at once but keeps its socket open, lets every queued
and running request finish (new predictions get 503 ``draining``), and exits
with status 0 once drained, or when ``drain_timeout_s`` has passed. A second
signal exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from types import FrameType

import torch
import uvicorn

from mlkit.serve.app import Service, create_app
from mlkit.serve.config import ServeConfig

log = logging.getLogger(__name__)

# Once the queue is empty, open connections get this long to receive their
# responses before uvicorn closes them.
_CLOSE_GRACE_S = 2.0


class _DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self.service = service
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None
        self._draining = False

    async def serve(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining or self._loop is None:
            # A second signal, or one before the loop runs: stop now.
            self.should_exit = True
            self.force_exit = self._draining
            return
        self._draining = True
        log.info("received %s; draining", signal.Signals(sig).name)
        # Runs inside a signal handler: only hand work to the loop from here.
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self.service.begin_drain()
        self._drain = asyncio.ensure_future(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        started = time.perf_counter()
        budget = max(self.service.config.drain_timeout_s - _CLOSE_GRACE_S, 0.1)
        try:
            await self.service.drain(budget)
        except TimeoutError as exc:
            log.error("drain incomplete, exiting anyway: %s", exc)
        log.info("drain took %.2f s; exiting", time.perf_counter() - started)
        self.should_exit = True


def run_server(config: ServeConfig) -> None:
    """Serve until SIGTERM/SIGINT, then drain and return.

    Sets torch's intra-op thread count for this process: ``torch_threads``,
    or the CPUs this process may use shared among the model workers. The
    malloc arena cap (``malloc_arenas``) is set by ``mlkit serve`` before it
    imports this module, while no other thread has allocated yet; a caller of
    this function sets it with ``mlkit.serve.malloc.limit_malloc_arenas``.
    """
    workers, threads = config.model_threads()
    torch.set_num_threads(threads)
    app = create_app(config)
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level=config.log_level,
        # The app logs one line per request itself, with the latency.
        access_log=False,
        timeout_graceful_shutdown=int(_CLOSE_GRACE_S),
        # No limit_concurrency: uvicorn would answer excess connections with
        # a plain-text 503 and no Retry-After; the app's admission control
        # sheds load with a JSON 503 instead.
        h11_max_incomplete_event_size=64 * 1024,
        server_header=False,
    )
    server = _DrainingServer(uv_config, app.state.service)
    log.info(
        "serving %s on http://%s:%s (batch <= %s, wait <= %s ms, queue <= %s, "
        "%s model worker(s) x %s torch thread(s))",
        config.model_dir,
        config.host,
        config.port,
        config.max_batch_size,
        config.max_wait_ms,
        config.max_queue,
        workers,
        threads,
    )
    server.run()
