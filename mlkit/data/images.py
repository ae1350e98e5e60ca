"""Check that every row's image exists, is an allowed format and decodes.

A bad image is quarantined with a stable reason code and never stops the run:
training on a manifest that names unreadable files fails hours later, in a
data-loader worker, with an error that does not say which file was bad.
"""

from __future__ import annotations

import logging
import os
import posixpath
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Literal

import pandas as pd
from PIL import Image
from tqdm import tqdm

from mlkit.data.schema import STRING, conform_quarantine, empty_quarantine
from mlkit.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: Formats (as PIL names them) that the training pipeline accepts. MPO is how
#: PIL identifies a JPEG that carries extra frames (many phone cameras write
#: one); its first frame is an ordinary JPEG. BMP, TIFF, GIF and the rest are
#: rejected: none of the supported datasets ships them, and every extra
#: decoder is more untrusted-file parsing.
ALLOWED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP"})

MODES = ("full", "header", "none")

# Paths handed to the thread pool at a time; bounds the number of pending
# futures on a million-image manifest.
_BATCH = 4096

Problem = tuple[str, str] | None


def validate_images(
    frame: pd.DataFrame,
    data_root: str | Path,
    *,
    mode: Literal["full", "header", "none"] = "full",
    max_pixels: int = 50_000_000,
    workers: int | None = None,
    progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``frame`` into rows whose image is usable and quarantined rows.

    Each row's ``image_path`` is taken relative to ``data_root``. Reasons:

    - ``missing_image``: no file there (or ``image_path`` is null/empty);
    - ``unreadable_image``: not an image PIL can identify, not a regular file,
      or a path that escapes ``data_root`` (absolute, or ``..`` leading out);
    - ``unsupported_format``: an image, but not one of ``ALLOWED_FORMATS``;
    - ``image_too_large``: width x height above ``max_pixels``, judged from
      the header before any pixel is decoded;
    - ``truncated_image``: the pixel data ends early (``full`` mode only).

    ``mode`` is ``full`` (open, check, decode every pixel), ``header`` (open
    and check format and size only; much faster, misses truncation) or
    ``none`` (no checks; every row is kept). Rows keep their order and index.
    The quarantine has the standard quarantine columns, with ``source_file``
    set to the row's image_path and ``line`` null. Images are checked in a
    thread pool of ``workers`` threads (default: up to 8); a path that several
    rows share is checked once.

    Limitation: PIL refuses, before this function can look at the size, any
    image above twice ``PIL.Image.MAX_IMAGE_PIXELS`` (about 179 million
    pixels); such images are quarantined as image_too_large even when
    ``max_pixels`` is higher. The process-wide ``MAX_IMAGE_PIXELS`` is left
    alone on purpose.

    Raises ConfigError for a bad mode, max_pixels or workers, and DataError
    when ``image_path`` is absent or ``data_root`` is not a directory.
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int):
        raise ConfigError(f"max_pixels must be an integer; got {max_pixels!r}")
    if max_pixels < 1:
        raise ConfigError(f"max_pixels must be positive; got {max_pixels}")
    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer; got {workers!r}")
    if "image_path" not in frame.columns:
        raise DataError(
            "frame lacks the image_path column", expected="column 'image_path'"
        )

    if mode == "none":
        log.info("image checks skipped (mode none): kept %s rows", len(frame))
        return frame.copy(), empty_quarantine()

    root = Path(data_root)
    if not root.is_dir():
        raise DataError(
            "data root is not a directory",
            path=root,
            hint="pass the folder that image_path values are relative to",
        )

    # Check each distinct path once; null paths get code -1.
    codes, paths = pd.factorize(frame["image_path"].astype(STRING))
    check = partial(_check_image, root, mode=mode, max_pixels=max_pixels)
    found = _run_checks(check, [str(p) for p in paths], workers, progress)
    no_path: Problem = ("missing_image", "image_path is null")
    problems = [no_path if code < 0 else found[code] for code in codes]

    bad = [i for i, problem in enumerate(problems) if problem is not None]
    kept = frame.iloc[[i for i, p in enumerate(problems) if p is None]].copy()
    quarantine = _quarantine_rows(frame.iloc[bad], [problems[i] for i in bad])

    by_reason = dict(sorted(Counter(quarantine["reason"]).items()))
    log.info(
        "checked images of %s rows under %s (mode %s): kept %s, quarantined %s %s",
        len(frame),
        root,
        mode,
        len(kept),
        len(quarantine),
        by_reason,
    )
    return kept, quarantine


def _run_checks(
    check: Callable[[str], Problem],
    paths: Sequence[str],
    workers: int,
    progress: bool,
) -> list[Problem]:
    """Run ``check`` over ``paths`` in a thread pool; results in input order."""
    results: list[Problem] = []
    bar = tqdm(
        total=len(paths), desc="checking images", unit="img", disable=not progress
    )
    # PIL warns about oversized images and about files it tried to identify.
    # Here those are findings reported as quarantine reasons, not warnings for
    # the user; max_pixels replaces the decompression-bomb warning.
    # Limitation: warning filters are process-wide, so while this runs the same
    # PIL warnings are hidden from other threads too.
    with warnings.catch_warnings(), bar, ThreadPoolExecutor(workers) as pool:
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        for start in range(0, len(paths), _BATCH):
            for result in pool.map(check, paths[start : start + _BATCH]):
                results.append(result)
                bar.update()
    return results


def _check_image(root: Path, image_path: str, *, mode: str, max_pixels: int) -> Problem:
    """(reason, detail) for one image, or None when it is usable."""
    path = _resolve(root, image_path)
    if not isinstance(path, Path):
        return path
    if not path.exists():
        return ("missing_image", "no file at this path under the data root")
    if not path.is_file():
        return ("unreadable_image", "path is not a regular file")

    # Any failure of one file becomes that file's finding; the run goes on.
    try:
        with Image.open(path) as image:
            # Format first: pixels of a disallowed format are never decoded.
            if image.format not in ALLOWED_FORMATS:
                return (
                    "unsupported_format",
                    f"format {image.format} is not one of "
                    f"{', '.join(sorted(ALLOWED_FORMATS))}",
                )
            width, height = image.size
            if width * height > max_pixels:
                return (
                    "image_too_large",
                    f"{width}x{height} = {width * height} pixels exceeds "
                    f"max_pixels {max_pixels}",
                )
            if mode == "full":
                image.load()
    except FileNotFoundError:
        return ("missing_image", "file disappeared while being checked")
    except Image.DecompressionBombError as exc:
        return ("image_too_large", str(exc))
    except Image.UnidentifiedImageError:
        return ("unreadable_image", "not an image file PIL can identify")
    except OSError as exc:
        if "truncated" in str(exc):
            return ("truncated_image", str(exc))
        return ("unreadable_image", f"{type(exc).__name__}: {exc}")
    except Exception as exc:
        return ("unreadable_image", f"{type(exc).__name__}: {exc}")
    return None


def _resolve(root: Path, image_path: str) -> Path | tuple[str, str]:
    """The file for ``image_path``, or a problem if it is empty or escapes root.

    The test is on the path's text: absolute paths and ``..`` leading out of
    the root are refused. Symbolic links inside the root are followed, since
    data roots are often links to a larger disk.
    """
    if not image_path:
        return ("missing_image", "image_path is empty")
    if PurePosixPath(image_path).is_absolute() or PureWindowsPath(image_path).anchor:
        return (
            "unreadable_image",
            "image_path is absolute; it must be relative to the data root",
        )
    normal = posixpath.normpath(image_path)
    if normal == ".." or normal.startswith("../"):
        return (
            "unreadable_image",
            "image_path leads outside the data root (..); refused for safety",
        )
    return root / normal


def _quarantine_rows(rows: pd.DataFrame, problems: list[Problem]) -> pd.DataFrame:
    if not len(rows):
        return empty_quarantine()
    reasons = [p[0] for p in problems if p is not None]
    details = [p[1] for p in problems if p is not None]
    null = pd.Series(pd.NA, index=rows.index, dtype=STRING)
    return conform_quarantine(
        pd.DataFrame(
            {
                "dataset": rows.get("dataset", null),
                "source_file": rows["image_path"],
                "sample_id": rows.get("sample_id", null),
                "reason": pd.Series(reasons, index=rows.index),
                "detail": pd.Series(details, index=rows.index),
            }
        )
    )
