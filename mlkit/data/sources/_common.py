"""Pieces every dataset reader shares: options, the result type, row sieving, text.

Readers work on whole columns (pyarrow compute kernels), never row by row,
because Derm1M has about a million rows.
"""

from __future__ import annotations

import codecs
import logging
import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, field_validator

from mlkit.data import schema
from mlkit.data.sources._csv import CsvRows, read_csv

log = logging.getLogger(__name__)

STRING = schema.STRING


@dataclass
class SourceData:
    """What a reader made of one dataset.

    ``frame`` holds the standard rows (``schema.conform``), with ``label`` still
    null. ``quarantine`` holds the rows that were bad, each with a reason code
    and a detail naming the column and value. ``dropped`` counts rows left out on
    purpose (reason code -> count), such as dermoscopic images. ``files`` are the
    metadata files that were read.
    """

    dataset: str
    frame: pd.DataFrame
    quarantine: pd.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


class SourceOptions(BaseModel):
    """Options every source has; unknown keys are an error, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Folder of the source under the data root; the dataset name when unset.
    dir: str | None = None
    #: Text encoding of the metadata files (any name Python's codecs know).
    encoding: str = "utf-8"

    @field_validator("dir")
    @classmethod
    def _relative_dir(cls, value: str | None) -> str | None:
        # Image paths are stored relative to the data root, so the source folder
        # must stay inside it.
        if value is None:
            return value
        path = PurePosixPath(value.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or value.strip() == "":
            raise ValueError(
                f"dir must be a folder inside the data root, like 'isic'; got {value!r}"
            )
        return path.as_posix()

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r}") from None
        return value

    def folder(self, dataset: str) -> str:
        """The source folder relative to the data root, POSIX style."""
        return self.dir if self.dir is not None else dataset


def read_metadata(
    data_root: Path,
    dataset: str,
    options: SourceOptions,
    required: list[str],
    file_option: str = "csv",
) -> CsvRows:
    """Read the source's CSV named by option ``file_option`` under its folder."""
    folder = options.folder(dataset)
    path = data_root / folder / getattr(options, file_option)
    hint = (
        f"Put the {dataset} metadata there, or point the `dir` ({folder!r}) and "
        f"`{file_option}` options of source {dataset!r} at it "
        f"(the data root is {data_root})"
    )
    return read_csv(
        path,
        dataset=dataset,
        source_file=display_path(path, data_root),
        required=required,
        encoding=options.encoding,
        hint=hint,
    )


def optional(frame: pd.DataFrame, column: str) -> pd.Series:
    """A column the source may lack; all null when it is absent."""
    if column in frame.columns:
        return frame[column]
    return pd.Series(pd.NA, index=frame.index, dtype=STRING)


def posix_join(*parts: str) -> str:
    """Join path parts with "/", skipping empty ones (an empty image_dir)."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def display_path(path: Path, data_root: Path) -> str:
    """``path`` relative to the data root when it is inside it, else as given."""
    try:
        return path.relative_to(data_root).as_posix()
    except ValueError:
        return str(path)


def to_mask(values: pd.Series | np.ndarray) -> np.ndarray:
    """A plain boolean array; nulls count as false."""
    if isinstance(values, pd.Series):
        return values.fillna(False).to_numpy(dtype=bool)
    return np.asarray(values, dtype=bool)


class Sieve:
    """Moves rows of a frame to the quarantine or the dropped counts.

    The frame is never copied while sieving: ``keep`` marks the rows still in,
    and each step only looks at those, so a row gets at most one reason (the
    first step that catches it).
    """

    def __init__(
        self,
        dataset: str,
        source_file: str,
        lines: np.ndarray,
        sample_ids: pd.Series,
    ) -> None:
        self.dataset = dataset
        self.source_file = source_file
        self.lines = np.asarray(lines, dtype="int64")
        self.sample_ids = sample_ids.reset_index(drop=True)
        self.keep = np.ones(len(self.lines), dtype=bool)
        self.dropped: Counter[str] = Counter()
        self._parts: list[pd.DataFrame] = []

    @classmethod
    def from_rows(cls, dataset: str, rows: CsvRows, sample_ids: pd.Series) -> Sieve:
        """A sieve over a CSV file's rows, holding its malformed rows already."""
        sieve = cls(dataset, rows.source_file, rows.lines, sample_ids)
        sieve.add(rows.malformed)
        return sieve

    def drop(self, mask: pd.Series | np.ndarray, reason: str) -> int:
        """Leave out, by design, the kept rows where ``mask`` is true."""
        hit = to_mask(mask) & self.keep
        count = int(hit.sum())
        if count:
            self.dropped[reason] += count
            self.keep &= ~hit
        return count

    def quarantine(
        self,
        mask: pd.Series | np.ndarray,
        reason: str,
        detail: str,
        *,
        values: pd.Series | None = None,
        source_file: str | None = None,
        lines: pd.Series | np.ndarray | None = None,
    ) -> int:
        """Quarantine the kept rows where ``mask`` is true.

        ``detail`` says what is wrong; when ``values`` is given, each row's
        offending value is appended to it. ``source_file`` and ``lines`` override
        where the rows are said to come from (SCIN's labels live in another file).
        """
        hit = to_mask(mask) & self.keep
        positions = np.flatnonzero(hit)
        if not len(positions):
            return 0
        self.keep &= ~hit
        if values is not None:
            got = values.reset_index(drop=True).iloc[positions]
            details = [
                f"{detail}, got {'empty' if v is pd.NA else repr(v)}" for v in got
            ]
        else:
            details = [detail] * len(positions)
        files = [source_file or self.source_file] * len(positions)
        if lines is None:
            row_lines = self.lines[positions]
        else:
            row_lines = pd.Series(lines).reset_index(drop=True).iloc[positions]
        self._parts.append(
            pd.DataFrame(
                {
                    "dataset": self.dataset,
                    "source_file": files,
                    "line": pd.array(row_lines, dtype="Int64"),
                    "sample_id": self.sample_ids.iloc[positions].to_numpy(),
                    "reason": reason,
                    "detail": details,
                }
            )
        )
        return len(positions)

    def add(self, quarantined: pd.DataFrame) -> None:
        """Add quarantine rows made elsewhere (malformed CSV rows)."""
        if len(quarantined):
            self._parts.append(quarantined)

    def quarantined(self) -> pd.DataFrame:
        if not self._parts:
            return schema.empty_quarantine()
        parts = [schema.conform_quarantine(p) for p in self._parts]
        frame = pd.concat(parts, ignore_index=True)
        # In file order, so a reader can walk through the file.
        frame = frame.sort_values(
            ["source_file", "line"], kind="stable", na_position="last"
        )
        return frame.reset_index(drop=True)


def result(
    dataset: str,
    rows: dict[str, pd.Series | str],
    sieve: Sieve,
    files: list[Path],
    *,
    announce: bool = True,
) -> SourceData:
    """Assemble the kept rows into a standard frame.

    Each column holds either every row the sieve started with or only the kept
    ones (a reader may build costly columns for the kept rows only). With
    ``announce`` false the summary is not logged (a block of a larger read).
    """
    length = int(sieve.keep.sum())
    columns: dict[str, pd.Series | str] = {}
    for name, value in rows.items():
        if isinstance(value, str):
            columns[name] = value
        elif len(value) == length:  # already only the kept rows
            columns[name] = value.reset_index(drop=True)
        else:
            columns[name] = value.reset_index(drop=True)[sieve.keep].reset_index(
                drop=True
            )
    frame = pd.DataFrame(columns, index=pd.RangeIndex(length))
    frame = schema.conform(frame)
    data = SourceData(
        dataset=dataset,
        frame=frame,
        quarantine=sieve.quarantined(),
        dropped=dict(sieve.dropped),
        files=files,
    )
    if announce:
        _announce(data)
    return data


def _announce(data: SourceData) -> None:
    log.info(
        "read %s: %d rows, %d quarantined, dropped %s",
        data.dataset,
        len(data.frame),
        len(data.quarantine),
        data.dropped or "none",
    )


def in_blocks(
    rows: CsvRows,
    standardize: Callable[[CsvRows], SourceData],
    *,
    block_rows: int = 200_000,
    workers: int | None = None,
) -> list[SourceData]:
    """Run a row-by-row ``standardize`` on blocks of ``rows`` in threads.

    pyarrow's kernels release the GIL, so blocks use every core. Each block
    keeps its own file line numbers; the malformed lines go with the first
    block only, so they are reported once.
    """
    n = len(rows.frame)
    starts = list(range(0, max(n, 1), block_rows))

    def block(start: int) -> SourceData:
        stop = start + block_rows
        part = CsvRows(
            path=rows.path,
            source_file=rows.source_file,
            frame=rows.frame.iloc[start:stop].reset_index(drop=True),
            lines=rows.lines[start:stop],
            malformed=rows.malformed if start == 0 else rows.malformed.iloc[:0],
        )
        return standardize(part)

    if len(starts) == 1:
        return [block(0)]
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(block, starts))


def merge(dataset: str, parts: list[SourceData], files: list[Path]) -> SourceData:
    """One SourceData from blocks read by ``in_blocks``, in their order."""
    dropped: Counter[str] = Counter()
    for part in parts:
        dropped.update(part.dropped)
    quarantine = schema.conform_quarantine(
        pd.concat([p.quarantine for p in parts], ignore_index=True)
    )
    # In file order, as within one block.
    quarantine = quarantine.sort_values(
        ["source_file", "line"], kind="stable", na_position="last"
    ).reset_index(drop=True)
    data = SourceData(
        dataset=dataset,
        frame=pd.concat([p.frame for p in parts], ignore_index=True),
        quarantine=quarantine,
        dropped=dict(dropped),
        files=files,
    )
    _announce(data)
    return data


# -- column helpers on pyarrow ------------------------------------------------
# pandas sends some regular expressions (\s, $) to Python's re, row by row; these
# helpers call pyarrow's compute kernels directly so a million rows stay fast.


def arrow(values: pd.Series | pa.ChunkedArray | pa.Array) -> pa.ChunkedArray:
    """The text column as a pyarrow large_string array (no copy for text series)."""
    if isinstance(values, pd.Series):
        values = pa.array(values)
    if isinstance(values, pa.Array):
        values = pa.chunked_array([values])
    if values.type != pa.large_string():
        values = values.cast(pa.large_string())
    return values


def text_series(values: pa.ChunkedArray | pa.Array) -> pd.Series:
    """A pyarrow text array as a standard text Series with a default index."""
    return pd.Series(pd.array(values, dtype=STRING))


def _text(value: str) -> pa.Scalar:
    return pa.scalar(value, pa.large_string())


def matches(
    values: pd.Series, pattern: str, *, ignore_case: bool = False
) -> np.ndarray:
    """Rows whose text contains a match of the RE2 ``pattern``; nulls never do."""
    found = pc.match_substring_regex(arrow(values), pattern, ignore_case=ignore_case)
    return found.fill_null(False).to_numpy(zero_copy_only=False).astype(bool)


def per_value(
    values: pd.Series, transform: Callable[[pd.Series], pd.Series]
) -> pd.Series:
    """Apply a column-wise ``transform`` to the distinct values only.

    Columns like a label repeat a few thousand values over a million rows, so
    transforming the distinct values and mapping back is much cheaper.
    """
    encoded = pc.dictionary_encode(arrow(values)).combine_chunks()
    distinct = arrow(transform(text_series(encoded.dictionary)))
    return text_series(pc.take(distinct, encoded.indices))


def join_present(parts: list[pd.Series], sep: str) -> pd.Series:
    """Join each row's non-null parts with ``sep``; null when all are null."""
    # Not pyarrow's null_handling="skip": in pyarrow 26 it leaves out the rows
    # whose parts are all null, so the result is shorter than its input.
    out = arrow(parts[0])
    for part in map(arrow, parts[1:]):
        both = pc.binary_join_element_wise(out, part, _text(sep))
        out = pc.coalesce(both, out, part)
    return text_series(out)


def wrap(value: pd.Series, prefix: str = "", suffix: str = "") -> pd.Series:
    """``prefix + value + suffix``, or null where the value is null."""
    return text_series(
        pc.binary_join_element_wise(
            _text(prefix), arrow(value), _text(suffix), _text("")
        )
    )


def sentence(prefix: str, value: pd.Series) -> pd.Series:
    """``"<prefix><value>."``, or null where the value is null.

    Trailing dots and spaces of the value are dropped so that the sentence ends
    with exactly one ".".
    """
    return wrap(text_series(pc.utf8_rtrim(arrow(value), characters=". ")), prefix, ".")


def as_sentence(value: pd.Series) -> pd.Series:
    """Free text as one line that ends with ".", "!" or "?"; null when blank.

    Each fix rewrites only the rows that need it: on a million captions a full
    copy per step would cost more than all the checks.
    """
    text = arrow(value)
    messy = pc.match_substring_regex(text, r"^\s|\s$|\s\s|[\t\n\r\f\v]")
    if pc.any(messy).as_py():
        text, messy = text.combine_chunks(), _fill_false(messy)
        cleaned = pc.replace_substring_regex(pc.filter(text, messy), r"\s+", " ")
        cleaned = pc.utf8_trim_whitespace(cleaned)
        cleaned = pc.if_else(pc.equal(cleaned, ""), _NULL_TEXT, cleaned)
        text = pc.replace_with_mask(text, messy, cleaned)
    ended = pc.match_substring_regex(text, r"[.!?]$")
    unended = pc.and_(pc.invert(ended), pc.is_valid(text))
    if pc.any(unended).as_py():
        text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
        unended = _fill_false(unended)
        dotted = pc.binary_join_element_wise(
            pc.filter(text, unended), _text("."), _text("")
        )
        text = pc.replace_with_mask(text, unended, dotted)
    return text_series(text)


def compose(sentences: list[pd.Series]) -> pd.Series:
    """Sentences joined by one space; "" where a row has none.

    The text is written in one pass: every sentence after the first brings its
    own leading space (sentences are short; the first may be a long caption).
    """
    first = arrow(sentences[0])
    rest = [arrow(wrap(s, " ")) for s in sentences[1:]]
    joined = pc.binary_join_element_wise(
        first, *rest, _text(""), null_handling="replace", null_replacement=""
    )
    # Where the first sentence is missing, the text starts with a space.
    stray = pc.and_(pc.is_null(first), pc.starts_with(joined, " "))
    if pc.any(stray).as_py():
        joined, stray = joined.combine_chunks(), _fill_false(stray)
        trimmed = pc.utf8_slice_codeunits(pc.filter(joined, stray), 1)
        joined = pc.replace_with_mask(joined, stray, trimmed)
    return text_series(joined)


def _fill_false(mask: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(mask, pa.ChunkedArray):
        mask = mask.combine_chunks()
    return mask.fill_null(False)


_NULL_TEXT = pa.scalar(None, pa.large_string())


_NUMBER = r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"


def parse_number(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Parse decimal text; return the numbers and a mask of unparseable values.

    Nulls stay null and are not flagged.
    """
    text = arrow(values)
    valid = pc.match_substring_regex(text, _NUMBER)
    numbers = pc.cast(pc.if_else(valid, text, pa.scalar(None, text.type)), pa.float64())
    bad = pc.and_(pc.is_valid(text), pc.invert(valid)).fill_null(False)
    return (
        pd.Series(pd.array(numbers, dtype="Float64")),
        bad.to_numpy(zero_copy_only=False).astype(bool),
    )


def parse_age(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Ages in years, 0 to 150; anything else is flagged (nulls are fine)."""
    numbers, bad = parse_number(values)
    out_of_range = to_mask((numbers < 0) | (numbers > 150))
    return numbers.where(~out_of_range), bad | out_of_range


def age_words(values: pd.Series) -> pd.Series:
    """An age as written in text: "45.0" -> "45"."""
    return text_series(pc.replace_substring_regex(arrow(values), r"\.0*$", ""))
