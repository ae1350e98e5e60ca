"""Settings of the inference service, from CLI flags and the environment.

Every setting has an environment variable ``MLKIT_SERVE_<NAME>`` (the field
name in upper case), so a Kubernetes ConfigMap can set them; a CLI flag wins
over the environment, the environment over the default. Everything is checked
when the server starts: a bad value stops it with a message naming the
setting, before any port is opened.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlkit.errors import ConfigError, validate_config

ENV_PREFIX = "MLKIT_SERVE_"
# The formats a client may upload, as PIL names them.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP")
# Requests carry one image; JSON carries it as base64 (4 characters per 3
# bytes) plus a little more for the text and options.
_BASE64_RATIO = 4 / 3
_BODY_SLACK_BYTES = 64 * 1024


class Thresholds(BaseModel):
    """When a prediction is reported as ``uncertain`` instead of a class.

    A prediction is uncertain when its top probability is below
    ``min_confidence``, the gap between the two most probable classes is below
    ``min_margin``, or the entropy of the probabilities, divided by its maximum
    log(number of classes), is above ``max_entropy``. 0, 0 and 1 switch the
    three tests off.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_confidence: float = Field(default=0.5, ge=0.0, le=1.0, allow_inf_nan=False)
    min_margin: float = Field(default=0.1, ge=0.0, le=1.0, allow_inf_nan=False)
    max_entropy: float = Field(default=0.9, ge=0.0, le=1.0, allow_inf_nan=False)


class ServeConfig(BaseModel):
    """Everything the server needs; see the module docstring for the sources.

    ``expected_model_sha256`` pins the weights: a container built for one gated
    model refuses to serve any other. ``decode_workers`` threads decode and
    resize uploaded images in parallel. ``model_workers`` batches run at once,
    each on ``torch_threads`` of torch's intra-op threads; 0 derives them from
    the number of CPUs this process may use (see :meth:`model_threads`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_dir: Path = Path("/models/model")
    expected_model_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)

    # Batching and backpressure.
    max_batch_size: int = Field(default=16, ge=1, le=256)
    # 0: a request that finds the model idle runs at once; requests arriving
    # while a batch runs still form the next batch. Measured with the serving
    # benchmark, this was ~10 ms faster for a lone request than 5 ms, and no
    # slower under load.
    max_wait_ms: float = Field(default=0.0, ge=0.0, le=1000.0, allow_inf_nan=False)
    max_queue: int = Field(default=256, ge=1, le=100_000)
    # An answer never depends on the batch it ran in (see
    # mlkit.serve.predictor). 0: the batch sizes that agree bit for bit are
    # found when the model loads, and batches run whole. A positive value runs
    # the model on blocks of exactly that many items, zero-padded (never more
    # than max_batch_size): exact by construction, but a lone request pays for
    # a whole block.
    model_block: int = Field(default=0, ge=0, le=64)

    # Limits on what a request may carry and how long it may take.
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=256 << 20)
    max_image_pixels: int = Field(default=40_000_000, ge=64 * 64, le=400_000_000)
    max_text_chars: int = Field(default=2000, ge=1, le=100_000)
    max_texts: int = Field(default=64, ge=1, le=10_000)
    max_top_k: int = Field(default=20, ge=1, le=1000)
    default_top_k: int = Field(default=5, ge=1, le=1000)
    request_timeout_s: float = Field(default=30.0, gt=0.0, le=600.0)

    thresholds: Thresholds = Thresholds()

    # Shutdown: readiness turns 503, then queued requests get this long.
    drain_timeout_s: float = Field(default=20.0, gt=0.0, le=3600.0)

    decode_workers: int = Field(default=2, ge=1, le=64)
    # One batch per CPU, each on one torch thread, by default: measured with
    # the serving benchmark on 2 cores, two single-threaded batches at once
    # served more than one batch on two threads, whose threads wait for each
    # other whenever the event loop or a decode thread takes a core.
    model_workers: int = Field(default=0, ge=0, le=64)
    torch_threads: int = Field(default=0, ge=0, le=256)
    # glibc malloc arenas for the whole process (see mlkit.serve.malloc); 0
    # leaves glibc's default of up to eight per core. Measured with the
    # serving benchmark's load on 2 cores, the default model's server peaked
    # at 1.00 GiB resident with glibc's default and at 0.93 GiB with 2 arenas,
    # at the same throughput.
    malloc_arenas: int = Field(default=2, ge=0, le=64)
    log_level: str = Field(default="info", pattern=r"^(debug|info|warning|error)$")

    @model_validator(mode="after")
    def _consistent(self) -> ServeConfig:
        if self.default_top_k > self.max_top_k:
            raise ValueError(
                f"default_top_k ({self.default_top_k}) must not exceed max_top_k "
                f"({self.max_top_k})"
            )
        return self

    @property
    def block_size(self) -> int | None:
        """The fixed block size (``model_block``, at most ``max_batch_size``),
        or None to choose the batch sizes when the model loads."""
        if not self.model_block:
            return None
        return min(self.model_block, self.max_batch_size)

    def model_threads(self, cpus: int | None = None) -> tuple[int, int]:
        """(model workers, torch threads per worker) on ``cpus`` CPUs.

        ``cpus`` defaults to the CPUs this process may use. Unset (0) workers
        are one per CPU; unset torch threads share the CPUs among the workers.
        """
        cpus = cpus or available_cpus()
        workers = self.model_workers or cpus
        threads = self.torch_threads or max(1, cpus // workers)
        return workers, threads

    @property
    def max_body_bytes(self) -> int:
        """The largest request body accepted: one image as base64, plus slack."""
        return int(self.max_upload_bytes * _BASE64_RATIO) + _BODY_SLACK_BYTES

    def batcher_config(self, cpus: int | None = None) -> dict[str, Any]:
        return {
            "max_batch_size": self.max_batch_size,
            "max_wait_ms": self.max_wait_ms,
            "max_queue": self.max_queue,
            "workers": self.model_threads(cpus)[0],
        }


def available_cpus() -> int:
    """How many CPUs this process may run on (its affinity, where known)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


_THRESHOLD_FIELDS = tuple(Thresholds.model_fields)


def env_settings(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``MLKIT_SERVE_*`` variables as settings, unparsed.

    Threshold fields come flat (``MLKIT_SERVE_MIN_CONFIDENCE``). Raises
    ConfigError for a variable with the prefix that names no setting, so a typo
    in a ConfigMap is not silently ignored.
    """
    environ = os.environ if environ is None else environ
    known = set(ServeConfig.model_fields) - {"thresholds"} | set(_THRESHOLD_FIELDS)
    settings: dict[str, Any] = {}
    unknown = []
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name in known:
            settings[name] = value
        else:
            unknown.append(key)
    if unknown:
        raise ConfigError(
            "unknown serve setting(s) in the environment: "
            f"{', '.join(sorted(unknown))}; "
            f"known: {', '.join(ENV_PREFIX + k.upper() for k in sorted(known))}"
        )
    return settings


def load_serve_config(
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> ServeConfig:
    """Defaults, then the environment, then ``overrides`` (CLI flags; None is unset).

    Raises ConfigError naming every invalid setting and where it came from.
    """
    settings = env_settings(environ)
    settings.update({k: v for k, v in (overrides or {}).items() if v is not None})
    thresholds = {k: settings.pop(k) for k in _THRESHOLD_FIELDS if k in settings}
    if thresholds:
        settings["thresholds"] = thresholds
    return validate_config(
        ServeConfig,
        settings,
        what="serve settings",
        source=f"{ENV_PREFIX}* environment variables and command-line flags",
    )
