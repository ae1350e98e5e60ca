"""Kubernetes objects checked against the upstream OpenAPI schemas, offline.

``kubernetes-validate`` ships the JSON schemas that the Kubernetes project
publishes for each release; strict mode also rejects fields the schema does not
know, which catches a misspelled key that an API server would silently drop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# The releases the objects must be valid for: GKE's supported versions when this
# was written. Later releases are checked by adding them here.
KUBERNETES_VERSIONS = ("1.30.0", "1.31.0", "1.32.0", "1.33.0")


def validate_objects(
    objects: Iterable[Mapping[str, Any]],
    versions: Sequence[str] = KUBERNETES_VERSIONS,
    *,
    strict: bool = True,
) -> list[dict[str, Any]]:
    """One row per object and version: kind, name, version, ok, error.

    Never raises for an invalid object; the row carries the schema's message.
    Use :func:`check_objects` to fail instead.
    """
    import kubernetes_validate

    rows = []
    for obj in objects:
        for version in versions:
            error = None
            try:
                kubernetes_validate.validate(dict(obj), version, strict=strict)
            except kubernetes_validate.ValidationError as exc:
                error = str(exc).splitlines()[0]
            rows.append(
                {
                    "kind": obj.get("kind"),
                    "name": obj.get("metadata", {}).get("name"),
                    "version": version,
                    "ok": error is None,
                    "error": error,
                }
            )
    return rows


def check_objects(
    objects: Iterable[Mapping[str, Any]],
    versions: Sequence[str] = KUBERNETES_VERSIONS,
) -> int:
    """Validate strictly; return the number of checks, or raise naming failures.

    Raises ValueError listing every object, version and schema message that
    failed, so that nothing invalid is applied or published.
    """
    rows = validate_objects(objects, versions)
    failed = [r for r in rows if not r["ok"]]
    if failed:
        lines = [
            f"{r['kind']}/{r['name']} on {r['version']}: {r['error']}" for r in failed
        ]
        raise ValueError(
            f"{len(failed)} of {len(rows)} schema checks failed:\n" + "\n".join(lines)
        )
    return len(rows)
