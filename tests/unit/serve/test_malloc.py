"""Tests of the malloc arena limit, in child processes: it lasts for a process."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from mlkit.serve import malloc
from mlkit.serve.malloc import limit_malloc_arenas

glibc_only = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="malloc arenas are glibc's"
)

# Starts threads that each allocate, then has glibc list its arenas on stderr.
_COUNT_ARENAS = textwrap.dedent(
    """
    import ctypes, sys, threading
    from mlkit.serve.malloc import limit_malloc_arenas

    print(limit_malloc_arenas(int(sys.argv[1])))
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    started = threading.Barrier(6)

    def allocate():
        started.wait()
        libc.malloc(1 << 16)

    threads = [threading.Thread(target=allocate) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    libc.malloc_stats()
    """
)


def _arenas_in_a_child(limit: int) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    done = subprocess.run(
        [sys.executable, "-c", _COUNT_ARENAS, str(limit)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    arenas = sum(line.startswith("Arena ") for line in done.stderr.splitlines())
    return done.stdout.strip(), arenas


@glibc_only
def test_the_limit_makes_threads_share_arenas():
    assert _arenas_in_a_child(1) == ("True", 1)
    # Without a limit each allocating thread gets an arena of its own.
    answer, arenas = _arenas_in_a_child(0)
    assert answer == "False"
    assert arenas > 1


def test_the_environment_variable_wins(monkeypatch, caplog):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    with caplog.at_level("INFO", logger="mlkit.serve.malloc"):
        assert limit_malloc_arenas(2) is False
    assert "MALLOC_ARENA_MAX=4" in caplog.text


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.setattr(malloc.platform, "libc_ver", lambda: ("musl", "1.2"))
    assert limit_malloc_arenas(2) is False


def test_a_negative_limit_is_refused():
    with pytest.raises(ValueError, match="arenas must be 0"):
        limit_malloc_arenas(-1)
