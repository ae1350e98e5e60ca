"""The commit a checkout is at, for model cards and image tags."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

GIT_SHA_RE = re.compile(r"[0-9a-f]{7,40}")


def git_head(cwd: str | Path | None = None) -> str | None:
    """The commit checked out in ``cwd`` (default: the current directory), or
    None outside a git checkout or without git."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = result.stdout.strip()
    return sha if result.returncode == 0 and GIT_SHA_RE.fullmatch(sha) else None
