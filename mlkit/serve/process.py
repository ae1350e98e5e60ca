"""The real server in a child process, for notebooks, benchmarks and tests.

``LocalServer`` starts ``mlkit serve`` exactly as a container would (same
command, settings from ``MLKIT_SERVE_*`` variables) on a free local port, waits
until ``/readyz`` answers 200, and stops it with SIGTERM so that the drain
runs. It also reads the child's resident memory and CPU time from /proc, which
is how the scaling notebook calibrates its per-pod model.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from mlkit.errors import MlkitError
from mlkit.serve.config import ENV_PREFIX

log = logging.getLogger(__name__)

# The command the container image runs (its ENTRYPOINT), and the tests start.
SERVE_COMMAND = ("mlkit", "serve")


class ServerError(MlkitError):
    """The server process did not start, did not get ready, or died."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command() -> list[str]:
    """``mlkit serve`` from this interpreter's install, as the container runs it.

    The console script beside the interpreter is used when there is one, so
    that the tests start exactly the image's entrypoint.
    """
    script = Path(sys.executable).parent / SERVE_COMMAND[0]
    if script.is_file():
        return [str(script), *SERVE_COMMAND[1:]]
    return [sys.executable, "-m", "mlkit.cli", *SERVE_COMMAND[1:]]


class LocalServer:
    """``mlkit serve`` in a child process on 127.0.0.1.

    ``settings`` are serve settings (``max_batch_size=8`` ...) passed as
    ``MLKIT_SERVE_*`` environment variables; ``log_file`` receives the
    server's output (a temporary file by default). Use it as a context
    manager, or call ``start()`` and ``stop()``.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        settings: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        log_file: str | Path | None = None,
        port: int | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = dict(settings or {})
        self._env = dict(env or {})
        self.log_file = Path(log_file) if log_file else None
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._started_at: float | None = None
        # Seconds from the process start to the first 200 from /readyz: the
        # model load and warm-up a new pod also goes through.
        self.ready_after_s: float | None = None

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.update(self._env)
        env[f"{ENV_PREFIX}MODEL_DIR"] = str(self.model_dir)
        env[f"{ENV_PREFIX}HOST"] = "127.0.0.1"
        env[f"{ENV_PREFIX}PORT"] = str(self.port)
        for key, value in self.settings.items():
            env[f"{ENV_PREFIX}{key.upper()}"] = str(value)
        return env

    def start(self, *, wait: bool = True, timeout_s: float = 120.0) -> LocalServer:
        """Start the process and, with ``wait``, block until it is ready."""
        if self.process is not None:
            raise ServerError("the server was already started")
        if self.log_file is None:
            import tempfile

            handle, name = tempfile.mkstemp(prefix="mlkit-serve-", suffix=".log")
            os.close(handle)
            self.log_file = Path(name)
        self._log = self.log_file.open("wb")
        self._started_at = time.perf_counter()
        self.process = subprocess.Popen(
            serve_command(),
            env=self.environment(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        log.info("started mlkit serve (pid %s) on %s", self.process.pid, self.url)
        if wait:
            try:
                self.wait_ready(timeout_s)
            except BaseException:
                self.stop()
                raise
        return self

    def wait_ready(self, timeout_s: float = 120.0) -> float:
        """Block until ``/readyz`` is 200; return the seconds it took.

        Raises ServerError with the end of the server log if the process exits
        or is not ready within ``timeout_s``.
        """
        started = time.perf_counter()
        deadline = started + timeout_s
        with httpx.Client(base_url=self.url, timeout=2.0, trust_env=False) as client:
            while time.perf_counter() < deadline:
                if self.returncode is not None:
                    raise ServerError(
                        f"the server exited with status {self.returncode} before "
                        f"it was ready:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/readyz").status_code == 200:
                        if self.ready_after_s is None and self._started_at is not None:
                            self.ready_after_s = time.perf_counter() - self._started_at
                        return time.perf_counter() - started
                time.sleep(0.1)
        raise ServerError(
            f"the server was not ready after {timeout_s} s:\n{self.log_tail()}"
        )

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServerError("the server is not started")
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def terminate(self) -> None:
        """Send SIGTERM (the server drains, then exits); do not wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, wait up to ``timeout_s`` for the drain, then SIGKILL.

        Returns the exit status (0 after a clean drain).
        """
        if self.process is None:
            return 0
        self.terminate()
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning(
                "server pid %s did not exit in %s s; killing", self.pid, timeout_s
            )
            self.process.kill()
            code = self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def log_tail(self, lines: int = 40) -> str:
        if self.log_file is None or not self.log_file.exists():
            return "(no log)"
        if self._log is not None:
            self._log.flush()
        text = self.log_file.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def rss_bytes(self) -> int:
        """Resident memory of the server process now."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise ServerError(f"no VmRSS in /proc/{self.pid}/status")

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> LocalServer:
        if self.process is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
