"""The dataset manifest (parquet) and its dataset card (JSON).

The manifest is the one file that later stages read: one row per image in the
standard schema, with its split. The card beside it records what is in the
manifest (counts per dataset, label and split), the sha256 of the manifest file
and the parameters that produced it, so a model card can pin the exact data.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import mlkit
from mlkit._io import atomic_path, sha256_file, write_json
from mlkit.data.schema import COLUMNS, REQUIRED, conform
from mlkit.errors import DataError

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.parquet"
CARD_NAME = "dataset_card.json"
QUARANTINE_NAME = "quarantine.csv"
CARD_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ManifestPaths:
    manifest: Path
    card: Path
    quarantine: Path


def _counts(frame: pd.DataFrame, *by: str) -> dict[str, Any]:
    """Nested {a: {b: count}} counts, sorted, with JSON-friendly keys."""
    if frame.empty:
        return {}
    grouped = frame.groupby(list(by), observed=True, dropna=False).size()
    out: dict[str, Any] = {}
    for key, count in grouped.items():
        keys = key if isinstance(key, tuple) else (key,)
        node = out
        for part in keys[:-1]:
            node = node.setdefault(str(part), {})
        node[str(keys[-1])] = int(count)
    return out


def build_card(
    manifest: pd.DataFrame,
    *,
    manifest_sha256: str,
    parameters: dict[str, Any],
    reports: dict[str, Any] | None = None,
    synthetic: bool = False,
) -> dict[str, Any]:
    """The dataset card for ``manifest``: counts, provenance and reports."""
    return {
        "card_schema_version": CARD_SCHEMA_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mlkit_version": mlkit.__version__,
        "synthetic": synthetic,
        "manifest": {"file": MANIFEST_NAME, "sha256": manifest_sha256},
        "rows": len(manifest),
        "labels": sorted(manifest["label"].dropna().unique().tolist()),
        "counts": {
            "dataset": _counts(manifest, "dataset"),
            "label": _counts(manifest, "label"),
            "split": _counts(manifest, "split"),
            "dataset_split": _counts(manifest, "dataset", "split"),
            "label_split": _counts(manifest, "label", "split"),
            "fitzpatrick_group_split": _counts(
                manifest.assign(
                    fitzpatrick_group=manifest["fitzpatrick_group"].fillna("unknown")
                ),
                "fitzpatrick_group",
                "split",
            ),
        },
        "parameters": parameters,
        "reports": reports or {},
    }


def write_manifest(
    manifest: pd.DataFrame,
    out_dir: str | Path,
    *,
    parameters: dict[str, Any],
    quarantine: pd.DataFrame | None = None,
    reports: dict[str, Any] | None = None,
    synthetic: bool = False,
) -> tuple[ManifestPaths, dict[str, Any]]:
    """Write manifest, quarantine report and card into ``out_dir``, atomically.

    The card is written last, so a card on disk always describes a complete
    manifest whose sha256 it records.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = ManifestPaths(
        manifest=out_dir / MANIFEST_NAME,
        card=out_dir / CARD_NAME,
        quarantine=out_dir / QUARANTINE_NAME,
    )

    table = pa.Table.from_pandas(conform(manifest), preserve_index=False)
    with atomic_path(paths.manifest) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    digest = sha256_file(paths.manifest)

    if quarantine is not None:
        with atomic_path(paths.quarantine) as tmp:
            quarantine.to_csv(tmp, index=False)

    card = build_card(
        manifest,
        manifest_sha256=digest,
        parameters=parameters,
        reports=reports,
        synthetic=synthetic,
    )
    write_json(paths.card, card)
    log.info(
        "wrote manifest %s (%s rows, sha256 %s)", paths.manifest, len(manifest), digest
    )
    return paths, card


def manifest_file(path: str | Path) -> Path:
    """The manifest file, given the file itself or the folder that holds it."""
    path = Path(path)
    return path / MANIFEST_NAME if path.is_dir() else path


def read_card(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise DataError("dataset card not found", path=path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON ({exc})", path=path) from exc


def read_manifest(path: str | Path, *, verify: bool = True) -> pd.DataFrame:
    """Read a manifest, given its file or the directory that holds it.

    With ``verify`` (the default) the file's sha256 must match the dataset card
    beside it, so a manifest edited after preparation is refused.
    """
    path = manifest_file(path)
    if not path.is_file():
        raise DataError(
            "manifest not found", path=path, hint="run `mlkit data prepare` first"
        )
    if verify:
        card = read_card(path.with_name(CARD_NAME))
        expected = card.get("manifest", {}).get("sha256")
        actual = sha256_file(path)
        if expected != actual:
            raise DataError(
                "manifest does not match its dataset card",
                path=path,
                expected=f"sha256 {expected}",
                got=actual,
                hint="re-run preparation instead of editing the manifest",
            )
    try:
        frame = pq.read_table(path).to_pandas()
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"not a readable parquet file ({exc})", path=path) from exc
    missing = [c for c in REQUIRED + ("label", "split") if c not in frame.columns]
    if missing:
        raise DataError(
            "manifest lacks columns",
            path=path,
            expected=", ".join(COLUMNS),
            got=f"missing {', '.join(missing)}",
        )
    return conform(frame, extra=True)
