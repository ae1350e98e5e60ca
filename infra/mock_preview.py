"""Run the Pulumi program under mocks and write the resources it declares.

    python infra/mock_preview.py --stack dev --json out.json

No Pulumi CLI, engine, cloud account or cluster is involved: the program runs
with ``pulumi.runtime`` mocks (``mlkit_infra.mocks``) on the stack file's
config. ``--set key=value`` adds or replaces a config value (``mlkit:`` is
implied); the commit and model sha that CI sets are replaced by placeholders
when missing, and the report says so.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mlkit_infra.mocks import preview_report  # noqa: E402

from mlkit.errors import ConfigError  # noqa: E402


def _parse_set(items: list[str]) -> dict[str, str]:
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        values[key.strip()] = value
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--stack", default="dev", help="stack name (Pulumi.<stack>.yaml)"
    )
    parser.add_argument(
        "--json", type=Path, help="write the report here (default: stdout)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config value on top of the stack file (repeatable)",
    )
    parser.add_argument(
        "--full", action="store_true", help="include every input of every resource"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )

    try:
        report = preview_report(
            args.stack, overrides=_parse_set(args.set), full=args.full
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=2) + "\n"
    if args.json is None:
        sys.stdout.write(text)
    else:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text, encoding="utf-8")
        print(f"{report['resource_count']} resources -> {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
