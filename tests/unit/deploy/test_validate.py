"""Tests of the offline schema validation of Kubernetes objects."""

from __future__ import annotations

import copy

import pytest

from mlkit.deploy import build_objects
from mlkit.deploy.validate import KUBERNETES_VERSIONS, check_objects, validate_objects

SHA = "ab" * 32


@pytest.fixture(scope="module")
def objects():
    image = f"registry.example/mlkit-serve:abc-{SHA[:12]}"
    return build_objects({"image": image, "model_sha256": SHA})


def test_every_object_is_valid_on_every_version(objects):
    rows = validate_objects(objects)
    assert len(rows) == len(objects) * len(KUBERNETES_VERSIONS)
    assert all(row["ok"] for row in rows)
    assert check_objects(objects) == len(rows)


def test_an_unknown_field_fails_strictly_and_is_named(objects):
    broken = copy.deepcopy(objects)
    hpa = next(o for o in broken if o["kind"] == "HorizontalPodAutoscaler")
    hpa["spec"]["maxReplica"] = 3
    rows = validate_objects(broken, ["1.31.0"])
    bad = [r for r in rows if not r["ok"]]
    assert [(r["kind"], r["version"]) for r in bad] == [
        ("HorizontalPodAutoscaler", "1.31.0")
    ]
    assert "maxReplica" in bad[0]["error"]
    with pytest.raises(ValueError, match="HorizontalPodAutoscaler/.* on 1.30.0"):
        check_objects(broken)
    # Without strict mode the same typo passes: why strict matters.
    assert all(r["ok"] for r in validate_objects(broken, ["1.31.0"], strict=False))
