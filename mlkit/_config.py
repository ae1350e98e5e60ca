"""Configuration files: packaged by name, or YAML by path, merged with overrides.

Training configs, deploy configs and pipeline profiles are all found the same
way: a name (``ci``, ``dev``) means a YAML file shipped in the package, a path
means that file. These helpers do it once, with the same errors everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mlkit.errors import ConfigError


def packaged_names(package: str, folder: str) -> list[str]:
    """The names of the YAML files in ``package``'s ``folder``, sorted."""
    entries = resources.files(package).joinpath(folder).iterdir()
    return sorted(
        e.name.removesuffix(".yaml") for e in entries if e.name.endswith(".yaml")
    )


def read_config(
    name_or_path: str | Path, *, package: str, folder: str, what: str
) -> tuple[dict[str, Any], str]:
    """(the mapping in the file, where it came from), for a name or a path.

    Anything ending in .yaml/.yml, or naming an existing file, is a path.
    Raises ConfigError for an unknown name, a missing file, invalid YAML or
    a document that is not a mapping (an empty file is an empty mapping).
    """
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} or path.is_file():
        if not path.is_file():
            raise ConfigError(f"{path}: {what} file not found")
        text, source = path.read_text(encoding="utf-8"), str(path)
    else:
        known = packaged_names(package, folder)
        if str(name_or_path) not in known:
            raise ConfigError(
                f"unknown {what} {str(name_or_path)!r}; known: {', '.join(known)} "
                "or a path to a YAML file"
            )
        ref = resources.files(package).joinpath(folder, f"{name_or_path}.yaml")
        text, source = ref.read_text(encoding="utf-8"), f"{what} {name_or_path}"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping, got {type(data).__name__}")
    return data, source


def merge_settings(
    base: Mapping[str, Any], overrides: Mapping[str, Any], *, skip_none: bool = False
) -> dict[str, Any]:
    """``base`` with ``overrides`` on top; mappings present in both merge
    recursively, anything else (lists included) replaces. With ``skip_none``
    an override of None means "not given" and keeps the base value."""
    merged = dict(base)
    for key, value in overrides.items():
        if value is None and skip_none:
            continue
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_settings(merged[key], value, skip_none=skip_none)
        else:
            merged[key] = value
    return merged
