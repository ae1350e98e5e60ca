"""How the C library's allocator behaves in a server process.

glibc's malloc gives each thread that allocates its own arena, up to eight
per core, and hands free memory in an arena back to the system only from the
arena's top. A server whose event loop, decode threads and model workers all
allocate tensors of changing sizes therefore keeps growing long after its load
settles. Capping the arenas makes the threads share a few of them, so freed
blocks get reused; with the serving benchmark's default model on 2 cores it
lowered the server's peak resident memory at the same throughput (see
``ServeConfig.malloc_arenas``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)

# mallopt's parameter for the arena limit (M_ARENA_MAX in glibc's malloc.h).
_M_ARENA_MAX = -8
# The variable through which glibc reads the same limit at start-up.
_ARENA_ENV = "MALLOC_ARENA_MAX"


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap this process's glibc malloc arenas at ``arenas``; True if done.

    Takes effect for threads that allocate for the first time afterwards, so
    call it before the server starts its threads. Does nothing, and returns
    False, for ``arenas`` 0, when MALLOC_ARENA_MAX is set in the environment
    (the operator's choice wins) and on a C library other than glibc.
    """
    if arenas < 0:
        raise ValueError(f"arenas must be 0 (no limit) or more, got {arenas}")
    if arenas == 0:
        return False
    if _ARENA_ENV in os.environ:
        log.info(
            "%s=%s is set in the environment; leaving malloc arenas as it says",
            _ARENA_ENV,
            os.environ[_ARENA_ENV],
        )
        return False
    if platform.libc_ver()[0] != "glibc":
        log.info("not glibc: malloc arenas are left as they are")
        return False
    # The C library the interpreter itself is linked against.
    done = ctypes.CDLL(None).mallopt(_M_ARENA_MAX, arenas) == 1
    if done:
        log.info("malloc arenas limited to %s", arenas)
    else:
        log.warning("glibc refused to limit malloc arenas to %s", arenas)
    return done
