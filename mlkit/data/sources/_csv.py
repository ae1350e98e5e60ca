"""Reading a source's CSV file: fast, all text, and strict about what matters.

Every column is read as text (pyarrow's type guessing would turn an id like
"000123" into a number), with surrounding whitespace removed and empty values
as nulls. A row with the wrong number of fields does not stop the run: it goes
to the quarantine as ``malformed_row``. A file that is missing, empty, in the
wrong encoding, lacks a needed column or repeats an id raises ``DataError``.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from mlkit.data import schema
from mlkit.errors import DataError

log = logging.getLogger(__name__)

#: How many offending values an error message shows at most.
SHOW = 5
#: How much of the file the header is looked for in.
_HEADER_BYTES = 1 << 20


@dataclass
class CsvRows:
    """The rows of one CSV file.

    ``frame`` has one text column per CSV column and a default index; ``lines``
    gives each row's line in the file (header = 1); ``malformed`` holds the
    quarantine rows of lines that had the wrong number of fields.
    """

    path: Path
    source_file: str
    frame: pd.DataFrame
    lines: np.ndarray
    malformed: pd.DataFrame


def read_csv(
    path: Path,
    *,
    dataset: str,
    source_file: str,
    required: Sequence[str],
    encoding: str = "utf-8",
    hint: str = "",
) -> CsvRows:
    """Read ``path`` as text columns; see the module docstring for the rules.

    ``required`` are the columns the reader cannot do without; ``hint`` tells
    the user which option to set when the file is not found.
    """
    started = time.perf_counter()
    if not path.is_file():
        where = (
            "" if path.parent.is_dir() else f" (folder {path.parent} is missing too)"
        )
        raise DataError(
            f"metadata file of {dataset} not found{where}",
            path=path,
            hint=hint or None,
        )
    if path.stat().st_size == 0:
        raise DataError(
            "file is empty: no rows", path=path, expected="a header line and rows"
        )

    raw_names = _header(path, encoding, dataset)
    names = [name.strip() for name in raw_names]
    missing = [c for c in required if c not in names]
    if missing:
        raise DataError(
            f"missing required column(s) {', '.join(map(repr, missing))}",
            path=path,
            expected=f"columns {', '.join(required)}",
            got=f"columns {', '.join(map(repr, names))}",
        )

    bad_rows: list[pacsv.InvalidRow] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        bad_rows.append(row)
        return "skip"

    try:
        table = pacsv.read_csv(
            path,
            # Single-threaded: pyarrow only reports the line number of a bad row
            # then, and with few cores it is no slower.
            read_options=pacsv.ReadOptions(use_threads=False, encoding=encoding),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                # large_string is what pandas' pyarrow strings hold: no cast.
                column_types=dict.fromkeys(raw_names, pa.large_string()),
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
    except UnicodeDecodeError as exc:
        raise _encoding_error(path, encoding, dataset) from exc
    except pa.ArrowInvalid as exc:
        if "utf8" in str(exc).lower() or "utf-8" in str(exc).lower():
            raise _encoding_error(path, encoding, dataset) from exc
        raise DataError(f"cannot parse CSV: {exc}", path=path) from exc

    if table.num_rows + len(bad_rows) == 0:
        raise DataError("no rows: the file has a header line only", path=path)

    frame = _to_text_frame(table)
    lines = _good_lines(table.num_rows, bad_rows)
    malformed = _malformed(bad_rows, dataset, source_file)
    log.debug(
        "read %s: %d rows, %d malformed, in %.2fs",
        path,
        len(frame),
        len(malformed),
        time.perf_counter() - started,
    )
    return CsvRows(
        path=path,
        source_file=source_file,
        frame=frame,
        lines=lines,
        malformed=malformed,
    )


def check_unique(rows: CsvRows, column: str, values: pd.Series | None = None) -> None:
    """Raise ``DataError`` if non-null ``values`` (default: ``column``) repeat."""
    values = rows.frame[column] if values is None else values
    present = values.dropna()
    repeated = present[present.duplicated()]
    if len(repeated):
        shown = list(dict.fromkeys(repeated.tolist()))[:SHOW]
        raise DataError(
            f"{repeated.nunique()} value(s) occur more than once",
            path=rows.path,
            column=column,
            expected="a unique id per row",
            got=", ".join(map(repr, shown)),
            hint="Remove the duplicate rows",
        )


def _header(path: Path, encoding: str, dataset: str) -> list[str]:
    """Column names, as written, from the first line.

    pyarrow needs the names to read every column as text.
    """
    # pyarrow drops a UTF-8 byte-order mark itself; so must the header read.
    is_utf8 = codecs.lookup(encoding).name == "utf-8"
    decoder = codecs.getincrementaldecoder("utf-8-sig" if is_utf8 else encoding)()
    try:
        # pa.input_stream undoes compression named by the suffix (.gz, .bz2,
        # .zst) just as pyarrow's reader does, so "Derm1M.csv.gz" works too.
        with pa.input_stream(str(path)) as stream:
            head = decoder.decode(stream.read(_HEADER_BYTES))
    except UnicodeDecodeError as exc:
        raise _encoding_error(path, encoding, dataset) from exc
    header = next(csv.reader(io.StringIO(head, newline="")), [])
    names = [name.strip() for name in header]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(
            "column name(s) repeated in the header",
            path=path,
            got=", ".join(map(repr, repeated)),
        )
    if not names or names == [""]:
        raise DataError("no header line; expected column names on line 1", path=path)
    return header


def _encoding_error(path: Path, encoding: str, dataset: str) -> DataError:
    return DataError(
        f"file is not valid {encoding} text",
        path=path,
        hint=(
            f"Set the `encoding` option of source {dataset!r} to the file's encoding "
            "(for example encoding: latin-1), or convert the file to UTF-8"
        ),
    )


def _to_text_frame(table: pa.Table) -> pd.DataFrame:
    columns = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        trimmed = pc.utf8_trim_whitespace(column)
        # Empty fields are null already; a field of only spaces is empty now.
        blank = pc.equal(trimmed, "")
        if pc.any(blank).as_py():
            trimmed = pc.if_else(blank, None, trimmed)
        columns[name.strip()] = pd.Series(
            pd.array(trimmed, dtype=schema.STRING), copy=False
        )
    return pd.DataFrame(columns, index=pd.RangeIndex(table.num_rows))


def _good_lines(num_rows: int, bad_rows: list[pacsv.InvalidRow]) -> np.ndarray:
    """File line of each good row: data row i is line i + 2, minus skipped rows.

    Limitation: pyarrow counts CSV records, not physical lines, so a quoted
    field that spans lines (and a blank line, which is skipped) shifts the
    numbers of the rows after it; the line given is then a little too small.
    """
    total = num_rows + len(bad_rows)
    all_lines = np.arange(2, total + 2, dtype="int64")
    known = [row.number for row in bad_rows if row.number is not None]
    if len(known) != len(bad_rows):
        return all_lines[:num_rows]
    return np.setdiff1d(all_lines, np.asarray(known, dtype="int64"), assume_unique=True)


def _malformed(
    bad_rows: list[pacsv.InvalidRow], dataset: str, source_file: str
) -> pd.DataFrame:
    if not bad_rows:
        return schema.empty_quarantine()
    frame = pd.DataFrame(
        {
            "dataset": dataset,
            "source_file": source_file,
            "line": pd.array([row.number for row in bad_rows], dtype="Int64"),
            "sample_id": pd.NA,
            "reason": "malformed_row",
            "detail": [
                f"expected {row.expected_columns} fields, got {row.actual_columns}: "
                f"{_shorten(row.text)}"
                for row in bad_rows
            ],
        }
    )
    return schema.conform_quarantine(frame)


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
