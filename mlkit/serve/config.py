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
    resize uploaded images in parallel; ``torch_threads`` is torch's intra-op
    thread count (0: the number of CPUs this process may use).
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
    # The model always runs on blocks of exactly this many items, zero-padded,
    # so that an answer never depends on the batch it ran in (see
    # mlkit.serve.predictor). Larger blocks use the CPU better under load and
    # cost a lone request more; never more than max_batch_size.
    model_block: int = Field(default=4, ge=1, le=64)

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
    torch_threads: int = Field(default=0, ge=0, le=256)
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
    def block_size(self) -> int:
        """The model's block size: ``model_block``, at most ``max_batch_size``."""
        return min(self.model_block, self.max_batch_size)

    @property
    def max_body_bytes(self) -> int:
        """The largest request body accepted: one image as base64, plus slack."""
        return int(self.max_upload_bytes * _BASE64_RATIO) + _BODY_SLACK_BYTES

    def batcher_config(self) -> dict[str, Any]:
        return {
            "max_batch_size": self.max_batch_size,
            "max_wait_ms": self.max_wait_ms,
            "max_queue": self.max_queue,
        }


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
