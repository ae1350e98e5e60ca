"""Readers that turn each public dataset's metadata into standard rows.

``read_source(name, data_root)`` reads one dataset (Fitzpatrick17k, DDI, ISIC,
Derm1M, SCIN) from its usual place under the data root and returns its standard
rows (see ``mlkit.data.schema``), the rows that were bad (quarantine, with a
reason each) and counts of rows left out on purpose. ``apply_skincap`` adds
SkinCap's captions to Fitzpatrick17k and DDI rows. Labels are not harmonized
here and label words are not removed from the text: later steps do that.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ValidationError

from mlkit.data.sources import (
    _ddi,
    _derm1m,
    _fitzpatrick17k,
    _isic,
    _scin,
    _skincap,
)
from mlkit.data.sources._common import SourceData
from mlkit.errors import ConfigError, describe_validation_error

__all__ = ["SOURCE_OPTIONS", "SourceData", "apply_skincap", "read_source"]

log = logging.getLogger(__name__)

#: Source name -> its options model. Unknown option keys are an error.
SOURCE_OPTIONS: dict[str, type[BaseModel]] = {
    "fitzpatrick17k": _fitzpatrick17k.Fitzpatrick17kOptions,
    "ddi": _ddi.DdiOptions,
    "isic": _isic.IsicOptions,
    "derm1m": _derm1m.Derm1mOptions,
    "scin": _scin.ScinOptions,
    "skincap": _skincap.SkincapOptions,
}

_READERS: dict[str, Callable[[Path, Any], SourceData]] = {
    "fitzpatrick17k": _fitzpatrick17k.read,
    "ddi": _ddi.read,
    "isic": _isic.read,
    "derm1m": _derm1m.read,
    "scin": _scin.read,
}


def read_source(
    name: str,
    data_root: str | Path,
    options: Mapping[str, Any] | BaseModel | None = None,
) -> SourceData:
    """Read dataset ``name`` from under ``data_root``.

    ``options`` are the source's options (see ``SOURCE_OPTIONS``), as a mapping
    or the options model. Raises ``ConfigError`` for an unknown name or option
    and ``DataError`` for a missing, empty or inconsistent metadata file; rows
    that are merely bad go to the quarantine instead.
    """
    if name not in _READERS:
        if name in SOURCE_OPTIONS:
            raise ConfigError(
                f"{name!r} adds captions to other datasets' rows; use apply_skincap, "
                f"not read_source. Datasets: {', '.join(_READERS)}"
            )
        raise ConfigError(
            f"unknown dataset {name!r}; known datasets: {', '.join(_READERS)}"
        )
    return _READERS[name](Path(data_root), _options(name, options))


def apply_skincap(
    frame: pd.DataFrame,
    data_root: str | Path,
    options: Mapping[str, Any] | BaseModel | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Add SkinCap's English captions to the Fitzpatrick17k and DDI rows.

    Returns a new frame and counts: ``matched``, ``appended``,
    ``already_present`` and ``unmatched_captions``. Applying it twice never
    adds a caption twice.
    """
    return _skincap.apply(frame, Path(data_root), _options("skincap", options))


def _options(name: str, options: Mapping[str, Any] | BaseModel | None) -> Any:
    model = SOURCE_OPTIONS[name]
    if isinstance(options, model):
        return options
    if isinstance(options, BaseModel):
        raise ConfigError(
            f"options for source {name!r} must be {model.__name__} or a mapping, "
            f"got {type(options).__name__}"
        )
    try:
        return model.model_validate(dict(options or {}))
    except ValidationError as exc:
        problems = describe_validation_error(exc)
        raise ConfigError(
            f"invalid options for source {name!r}: {problems}. "
            f"Known options: {', '.join(model.model_fields)}"
        ) from None
