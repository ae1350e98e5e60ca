"""Tests of the serve settings: defaults, environment, flags, errors."""

from __future__ import annotations

import pytest

from mlkit.errors import ConfigError
from mlkit.serve.config import ServeConfig, env_settings, load_serve_config


def test_defaults_without_environment():
    config = load_serve_config(environ={})
    assert config == ServeConfig()
    assert config.port == 8080
    assert config.max_upload_bytes == 10 * 1024 * 1024
    # A base64 image is a third larger than the file; the body limit allows it.
    assert config.max_body_bytes > config.max_upload_bytes * 4 / 3


def test_environment_then_flags():
    environ = {
        "MLKIT_SERVE_PORT": "9000",
        "MLKIT_SERVE_MAX_BATCH_SIZE": "4",
        "MLKIT_SERVE_MIN_CONFIDENCE": "0.7",
        "OTHER": "ignored",
    }
    config = load_serve_config({"port": 9100, "max_wait_ms": None}, environ=environ)
    assert config.port == 9100  # the flag wins
    assert config.max_batch_size == 4  # from the environment
    assert config.max_wait_ms == 0.0  # a flag left unset does not override
    assert config.thresholds.min_confidence == 0.7
    assert config.batcher_config(cpus=3) == {
        "max_batch_size": 4,
        "max_wait_ms": 0.0,
        "max_queue": 256,
        "workers": 3,
    }


def test_unknown_environment_variable_is_named():
    with pytest.raises(ConfigError, match="MLKIT_SERVE_MAX_BATCH"):
        env_settings({"MLKIT_SERVE_MAX_BATCH": "8"})


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"port": "eighty"}, "port"),
        ({"max_batch_size": "0"}, "max_batch_size"),
        ({"max_wait_ms": "nan"}, "max_wait_ms"),
        ({"min_margin": "1.5"}, "min_margin"),
        ({"default_top_k": "50"}, "default_top_k"),
        ({"expected_model_sha256": "abc"}, "expected_model_sha256"),
        ({"log_level": "chatty"}, "log_level"),
        ({"model_workers": "-1"}, "model_workers"),
        ({"model_block": "65"}, "model_block"),
        ({"malloc_arenas": "-1"}, "malloc_arenas"),
    ],
)
def test_bad_values_name_the_setting(settings, field):
    environ = {f"MLKIT_SERVE_{k.upper()}": v for k, v in settings.items()}
    with pytest.raises(ConfigError, match=field) as info:
        load_serve_config(environ=environ)
    assert "MLKIT_SERVE_" in str(info.value)


def test_block_size_never_exceeds_the_batch_size():
    # 0 (the default): the predictor finds the exact batch sizes at load.
    assert load_serve_config(environ={}).block_size is None
    naive = load_serve_config({"max_batch_size": 1, "model_block": 4}, environ={})
    # A server that never batches gains nothing from padding.
    assert naive.block_size == 1
    assert load_serve_config({"model_block": 8}, environ={}).block_size == 8


@pytest.mark.parametrize(
    ("settings", "cpus", "expected"),
    [
        ({}, 2, (2, 1)),  # one single-threaded worker per CPU
        ({}, 1, (1, 1)),
        ({"model_workers": 1}, 4, (1, 4)),  # one worker on every CPU
        ({"model_workers": 2}, 5, (2, 2)),
        ({"model_workers": 8}, 2, (8, 1)),  # never fewer than one thread
        ({"torch_threads": 3}, 2, (2, 3)),
        ({"model_workers": 1, "torch_threads": 2}, 8, (1, 2)),
    ],
)
def test_model_threads_share_the_cpus_among_the_workers(settings, cpus, expected):
    config = load_serve_config(settings, environ={})
    assert config.model_threads(cpus) == expected
    assert config.batcher_config(cpus)["workers"] == expected[0]


def test_model_threads_default_to_the_cpus_this_process_may_use():
    import os

    cpus = len(os.sched_getaffinity(0))
    assert ServeConfig().model_threads() == (cpus, 1)
