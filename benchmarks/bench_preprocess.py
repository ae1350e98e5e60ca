"""Benchmark: standardize + harmonize + leakage-filter Derm1M-style rows.

Goals (issue: foundation and data): 1,000,000 generated Derm1M-style rows in at
most 20 s on 2 cores, at least 10x faster than a straightforward row-by-row
implementation of the same rules, with a peak memory of at most 4 GiB.

Both implementations run in this script on the same generated file and their
outputs are compared row by row, so the speed-up is between two programs that
agree. The vectorized run happens in a child process, so its peak resident
memory is its own.

    python benchmarks/bench_preprocess.py                # 1,000,000 rows
    python benchmarks/bench_preprocess.py --rows 100000  # quicker look
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

import pandas as pd

from mlkit.data.harmonize import Taxonomy, harmonize
from mlkit.data.leakage import PHRASE_RULES, filter_leakage
from mlkit.data.sources import read_source
from mlkit.data.synthetic import write_derm1m_csv

RESULTS = Path(__file__).resolve().parent / "results"
GOAL_SECONDS, GOAL_RATIO, GOAL_PEAK_GIB = 20.0, 10.0, 4.0


def vectorized(data_root: Path) -> pd.DataFrame:
    """mlkit's own path: the Derm1M reader, harmonize, filter_leakage."""
    taxonomy = Taxonomy.load()
    data = read_source("derm1m", data_root)
    frame, _ = harmonize(data.frame, taxonomy)
    frame["text"], _ = filter_leakage(frame["text"], frame["label"], taxonomy)
    return frame[["sample_id", "label", "text"]]


# The baseline: the same rules, one row and one sentence at a time, in plain
# Python with the `re` module, as one would first write them.

_DERMOSCOPY = re.compile(r"dermoscop|dermatoscop", re.I)
_NUMBER = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")
_PHRASES = [re.compile(p) for p in PHRASE_RULES.values()]


def _normalize(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"['\u2019`]", "", text.lower())
    return re.sub(r"[^a-z0-9]+", " ", text).strip()


def _sentence(prefix: str, value: str | None) -> str | None:
    return None if value is None else prefix + value.rstrip(". ") + "."


def baseline(csv_path: Path) -> pd.DataFrame:
    taxonomy = Taxonomy.load()
    label_patterns: dict[str, re.Pattern] = {}
    out_ids, out_labels, out_texts = [], [], []
    with open(csv_path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            filename = (row["filename"] or "").replace("\\", "/").lstrip("/")
            caption = row["caption"] or None
            symptoms = row.get("symptoms") or None
            if _DERMOSCOPY.search(caption or "") or _DERMOSCOPY.search(symptoms or ""):
                continue
            hierarchy = re.sub(r"(?:\s*>\s*)+$", "", row["hierarchical_disease_label"])
            raw_label = hierarchy.rsplit(">", 1)[-1].strip()
            age = row.get("age") or None
            if not filename or not raw_label:
                continue
            if age is not None and (
                not _NUMBER.match(age) or not 0 <= float(age) <= 150
            ):
                continue

            # Harmonize.
            label = taxonomy.resolve(raw_label)
            if label is None:
                continue

            # Compose the description as the reader does.
            parts = []
            if caption is not None:
                text = " ".join(caption.split())
                if text:
                    parts.append(text if text[-1] in ".!?" else text + ".")
            gender = row.get("gender") or None
            years = None if age is None else re.sub(r"\.0*$", "", age) + " years old"
            who = ", ".join(p for p in (gender, years) if p is not None) or None
            for piece in (
                _sentence("Patient: ", who),
                _sentence("Site: ", row.get("body_location") or None),
                _sentence("Symptoms: ", symptoms),
            ):
                if piece is not None:
                    parts.append(piece)
            text = " ".join(" ".join(parts).split())

            # Filter leakage sentence by sentence.
            if label not in label_patterns:
                terms = sorted(
                    set(taxonomy.terms(label)) | {label}, key=lambda t: -len(t)
                )
                alternatives = "|".join(re.escape(t) for t in terms)
                label_patterns[label] = re.compile(rf"\b(?:{alternatives})\b")
            kept = []
            for sentence in re.split(r"(?<=[.!?]) ", text):
                if not sentence:
                    continue
                norm = _normalize(sentence)
                if label_patterns[label].search(norm):
                    continue
                if any(p.search(norm) for p in _PHRASES):
                    continue
                kept.append(sentence)
            out_ids.append("derm1m:" + filename)
            out_labels.append(label)
            out_texts.append(" ".join(kept))
    return pd.DataFrame({"sample_id": out_ids, "label": out_labels, "text": out_texts})


def _child(data_root: Path, out: Path, repeat: int) -> None:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        frame = vectorized(data_root)
        times.append(time.perf_counter() - started)
    frame.to_parquet(out)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {
        "seconds": statistics.median(times),
        "first_seconds": times[0],
        "all_seconds": times,
        "peak_rss_gib": peak_kib / 2**20,
        "rows": len(frame),
    }
    print(json.dumps(result))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeat", type=int, default=3, help="vectorized runs; the median is reported"
    )
    parser.add_argument(
        "--child", nargs=2, metavar=("DATA_ROOT", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        _child(Path(args.child[0]), Path(args.child[1]), args.repeat)
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        data_root = Path(tmp) / "data"
        csv_path = data_root / "derm1m" / "Derm1M.csv"
        started = time.perf_counter()
        write_derm1m_csv(csv_path, args.rows, seed=args.seed)
        seconds = time.perf_counter() - started
        size_mib = csv_path.stat().st_size / 2**20
        print(
            f"generated {args.rows:,} Derm1M-style rows in {seconds:.1f} s "
            f"({size_mib:.0f} MiB)"
        )

        out = Path(tmp) / "vectorized.parquet"
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(data_root),
                str(out),
                "--repeat",
                str(args.repeat),
            ],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        fast = json.loads(child.stdout.strip().splitlines()[-1])
        vec = pd.read_parquet(out)

        started = time.perf_counter()
        base = baseline(csv_path)
        slow_seconds = time.perf_counter() - started

    # The two implementations must agree before their times mean anything.
    vec = vec.astype(str).reset_index(drop=True)
    base = base.astype(str).reset_index(drop=True)
    same_rows = len(vec) == len(base)
    mismatches = int((vec != base).any(axis=1).sum()) if same_rows else -1

    ratio = slow_seconds / fast["seconds"]
    result = {
        "rows_generated": args.rows,
        "rows_out": fast["rows"],
        "vectorized_seconds": round(fast["seconds"], 2),
        "vectorized_first_run_seconds": round(fast["first_seconds"], 2),
        "vectorized_runs": [round(t, 2) for t in fast["all_seconds"]],
        "row_by_row_seconds": round(slow_seconds, 2),
        "speedup": round(ratio, 1),
        "peak_rss_gib": round(fast["peak_rss_gib"], 2),
        "outputs_identical": same_rows and mismatches == 0,
        "mismatched_rows": mismatches,
        "cpu_count": os.cpu_count(),
        "goals": {
            "seconds": GOAL_SECONDS,
            "speedup": GOAL_RATIO,
            "peak_rss_gib": GOAL_PEAK_GIB,
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "preprocess.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"vectorized:  {result['vectorized_seconds']:8.2f} s  (median of "
        f"{args.repeat} runs: {result['vectorized_runs']}; goal <= {GOAL_SECONDS} s)"
    )
    print(f"row by row:  {result['row_by_row_seconds']:8.2f} s")
    print(f"speed-up:    {result['speedup']:8.1f} x  (goal >= {GOAL_RATIO} x)")
    print(
        f"peak memory: {result['peak_rss_gib']:8.2f} GiB (goal <= {GOAL_PEAK_GIB} GiB)"
    )
    same = result["outputs_identical"]
    print(f"outputs identical: {same} ({mismatches} mismatched rows)")
    met = (
        result["outputs_identical"]
        and fast["seconds"] <= GOAL_SECONDS
        and ratio >= GOAL_RATIO
        and fast["peak_rss_gib"] <= GOAL_PEAK_GIB
    )
    print("all goals met" if met else "GOALS NOT MET")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
