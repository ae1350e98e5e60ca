"""On-disk cache of text embeddings, so a rerun encodes nothing twice.

An entry is keyed by (encoder_id, sample_id, sha256 of the text). A changed
text has a new hash and is encoded again; another encoder has another id and
never sees these entries. Samples without text (empty or blank) get a zero
vector and ``has_text`` False, and are never sent to the encoder.

Layout: one folder per encoder under the cache directory, named after the
encoder kind and a hash of its id, holding ``encoder.json`` (the id and dim,
for people and for checking) and parquet shards ``part-*.parquet`` with
columns sample_id, text_sha256 and embedding (fixed-size float32 list). Each
shard is written atomically, so a crash loses at most the shard being
written; the shards already on disk are kept and reused.

Limitation: entries are never removed, so texts that were later changed, and
samples that left the manifest, keep their old entries, and each run that
encodes something adds a shard. Delete an encoder's folder to reclaim the
space; the next run recomputes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlkit._io import atomic_path, write_json
from mlkit.errors import DataError, MlkitError
from mlkit.text.base import TextEncoder

log = logging.getLogger(__name__)

_META_FILE = "encoder.json"


def text_sha256(text: str) -> str:
    """Hex sha256 of the UTF-8 bytes of ``text``, exactly as given."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class _Store:
    """Entries of one encoder that are on disk, indexed in memory."""

    folder: Path
    dim: int
    index: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    blocks: list[np.ndarray] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def add(
        self, sample_ids: list[str], hashes: list[str], vectors: np.ndarray
    ) -> None:
        block = len(self.blocks)
        self.blocks.append(vectors)
        for row, key in enumerate(zip(sample_ids, hashes, strict=True)):
            self.index[key] = (block, row)

    def get(self, key: tuple[str, str]) -> np.ndarray:
        block, row = self.index[key]
        return self.blocks[block][row]


class EmbeddingCache:
    """Text embeddings cached in ``directory``, shared by every run that uses it.

    ``chunk_size`` is how many distinct texts are encoded (and written as one
    shard) at a time: an interrupted run keeps every finished chunk.
    """

    def __init__(self, directory: str | Path, *, chunk_size: int = 8192) -> None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
            raise MlkitError(f"chunk_size must be an integer, got {chunk_size!r}")
        if chunk_size < 1:
            raise MlkitError(f"chunk_size must be at least 1, got {chunk_size}")
        self.directory = Path(directory)
        self.chunk_size = chunk_size
        self._stores: dict[str, _Store] = {}

    def embed(
        self,
        encoder: TextEncoder,
        sample_ids: Sequence[str],
        texts: Sequence[str | None],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (embeddings float32 (n, dim), has_text bool (n,)) in input order.

        A text that is empty, blank, None or NaN has no text: zero vector,
        has_text False. Texts already cached for this encoder and sample are
        read from disk; the rest are encoded (each distinct text once) and
        cached. Raises DataError for mismatched lengths or a sample id or text
        of the wrong type, and MlkitError when the encoder returns the wrong
        shape.
        """
        ids, items = _check_inputs(sample_ids, texts)
        has_text = np.array([t is not None and t.strip() != "" for t in items], bool)
        encoder_id = encoder.encoder_id
        dim = int(encoder.dim)
        store = self._store(encoder_id, dim)

        keys = [
            (sid, text_sha256(text)) if present else None
            for sid, text, present in zip(ids, items, has_text, strict=True)
        ]
        missing = [i for i, key in enumerate(keys) if key and key not in store.index]
        cached = int(has_text.sum()) - len(missing)
        started = time.perf_counter()
        distinct = self._compute(encoder, store, missing, ids, items, keys)

        embeddings = np.zeros((len(ids), dim), dtype=np.float32)
        for i, key in enumerate(keys):
            if key is not None:
                embeddings[i] = store.get(key)
        log.info(
            "text embeddings (%s): %d rows, %d without text, %d from cache, "
            "%d encoded (%d distinct texts) in %.1f s",
            encoder_id,
            len(ids),
            int((~has_text).sum()),
            cached,
            len(missing),
            distinct,
            time.perf_counter() - started,
        )
        return embeddings, has_text

    def _compute(
        self,
        encoder: TextEncoder,
        store: _Store,
        missing: list[int],
        ids: list[str],
        texts: list[str | None],
        keys: list[tuple[str, str] | None],
    ) -> int:
        """Encode the rows in ``missing`` chunk by chunk; return distinct texts."""
        # Rows that share a text are encoded once; dict keeps first-seen order.
        rows_of: dict[str, list[int]] = {}
        for i in missing:
            rows_of.setdefault(texts[i], []).append(i)
        distinct = list(rows_of)

        for start in range(0, len(distinct), self.chunk_size):
            chunk = distinct[start : start + self.chunk_size]
            vectors = np.asarray(encoder.encode(chunk), dtype=np.float32)
            if vectors.shape != (len(chunk), store.dim):
                raise MlkitError(
                    f"text encoder {encoder.encoder_id!r} returned shape "
                    f"{vectors.shape} for {len(chunk)} texts; expected "
                    f"({len(chunk)}, {store.dim})"
                )
            rows = [i for text in chunk for i in rows_of[text]]
            which = {text: n for n, text in enumerate(chunk)}
            block = vectors[[which[texts[i]] for i in rows]]
            sample_ids = [ids[i] for i in rows]
            hashes = [keys[i][1] for i in rows]
            self._write_shard(store, sample_ids, hashes, block)
            store.add(sample_ids, hashes, block)
        return len(distinct)

    def _store(self, encoder_id: str, dim: int) -> _Store:
        """The encoder's store, with any shards written since last time loaded."""
        store = self._stores.get(encoder_id)
        if store is None:
            store = _Store(folder=self._folder(encoder_id, dim), dim=dim)
            self._stores[encoder_id] = store
        elif store.dim != dim:
            raise MlkitError(
                f"text encoder {encoder_id!r} now reports dim {dim}, "
                f"but was {store.dim} earlier"
            )

        for path in sorted(store.folder.glob("part-*.parquet")):
            if path.name not in store.seen:
                store.seen.add(path.name)
                shard = _read_shard(path, dim)
                if shard is not None:
                    store.add(*shard)
        return store

    def _folder(self, encoder_id: str, dim: int) -> Path:
        """The encoder's folder; created with its encoder.json, or checked."""
        kind = re.sub(r"[^A-Za-z0-9._-]+", "-", encoder_id.split(":", 1)[0])
        digest = hashlib.sha256(encoder_id.encode("utf-8")).hexdigest()[:16]
        folder = self.directory / f"{kind}-{digest}"
        meta = folder / _META_FILE
        if not meta.is_file():
            write_json(meta, {"encoder_id": encoder_id, "dim": dim})
            return folder

        try:
            recorded = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(
                f"unreadable embedding cache metadata: {exc}",
                path=meta,
                hint="delete the folder; its embeddings will be recomputed",
            ) from exc
        expected = {"encoder_id": encoder_id, "dim": dim}
        if {k: recorded.get(k) for k in expected} != expected:
            raise DataError(
                "embedding cache folder belongs to another encoder",
                path=meta,
                expected=str(expected),
                got=str(recorded),
                hint="delete the folder; its embeddings will be recomputed",
            )
        return folder

    @staticmethod
    def _write_shard(
        store: _Store, sample_ids: list[str], hashes: list[str], vectors: np.ndarray
    ) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        flat = pa.array(np.ascontiguousarray(vectors).reshape(-1), type=pa.float32())
        table = pa.table(
            {
                "sample_id": pa.array(sample_ids, type=pa.string()),
                "text_sha256": pa.array(hashes, type=pa.string()),
                "embedding": pa.FixedSizeListArray.from_arrays(flat, store.dim),
            }
        )
        name = f"part-{time.time_ns():020d}-{secrets.token_hex(4)}.parquet"
        path = store.folder / name
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        store.seen.add(name)
        log.debug("wrote %d text embeddings to %s", len(sample_ids), path)
        return path


def _read_shard(path: Path, dim: int) -> tuple[list[str], list[str], Any] | None:
    """Read one shard; a damaged one is reported and skipped (its rows recompute)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
        column = table.column("embedding").combine_chunks()
        if not pa.types.is_fixed_size_list(column.type) or column.type.list_size != dim:
            raise ValueError(f"embedding column is {column.type}, expected {dim} wide")
        vectors = column.flatten().to_numpy().astype(np.float32).reshape(-1, dim)
        sample_ids = table.column("sample_id").to_pylist()
        hashes = table.column("text_sha256").to_pylist()
    except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
        log.warning("skipping damaged embedding cache shard %s: %s", path, exc)
        return None
    return sample_ids, hashes, vectors


def _check_inputs(
    sample_ids: Sequence[str], texts: Sequence[str | None]
) -> tuple[list[str], list[str | None]]:
    """Lists of ids and texts, with None/NaN texts turned into None."""
    ids = list(sample_ids)
    items = list(texts)
    if len(ids) != len(items):
        raise DataError(
            "sample_ids and texts differ in length",
            expected=f"{len(ids)} texts, one per sample id",
            got=f"{len(items)} texts",
        )
    for index, sample_id in enumerate(ids):
        if not isinstance(sample_id, str) or not sample_id:
            raise DataError(
                f"sample id at position {index} is not a non-empty string",
                column="sample_id",
                got=repr(sample_id),
            )

    cleaned: list[str | None] = []
    for index, text in enumerate(items):
        if isinstance(text, str):
            cleaned.append(text)
        elif _is_missing(text):
            cleaned.append(None)
        else:
            raise DataError(
                f"text of sample {ids[index]!r} is not a string",
                column="text",
                expected="str, or None/NaN for no text",
                got=f"{type(text).__name__} {text!r}",
            )
    return ids, cleaned


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    import pandas as pd

    # Only scalars: pd.isna of a list is an array, and a list is not "no text".
    return bool(pd.api.types.is_scalar(value) and pd.isna(value))
