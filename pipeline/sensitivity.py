"""Parameter sensitivity: cheap reruns of the indicator kernels on the already aligned land cover.

Each variant changes one parameter of the landscape config (4 vs 8 neighbours; edge depth -50 % and +50 %;
minimum patch size -1 and +1 pixel; mining persistence 1 vs 2 years) and reruns only the indicators that read
it. A metric's ``value_lo``/``value_hi`` are the smallest and largest value over the base run and every
variant; a metric no variant moves has value_lo = value = value_hi.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.config import LandscapeConfig, SensitivityConfig
from pipeline.indicators.base import COLUMNS

MATCH = [c for c in COLUMNS if c not in ("landscape", "indicator", "unit", "value")]


@dataclass(frozen=True)
class Variant:
    label: str  # e.g. "edge_depth x0.5"
    indicators: tuple[str, ...]  # the indicators whose numbers can move
    config: LandscapeConfig


def _with(config: LandscapeConfig, **sections: dict) -> LandscapeConfig:
    """A copy of ``config`` with fields of indicator sections replaced: _with(c, connectivity={"neighbourhood": 4})."""
    indicators = config.indicators
    for name, fields in sections.items():
        current = getattr(indicators, name)
        indicators = indicators.model_copy(update={name: current.model_copy(update=fields)})
    return config.model_copy(update={"indicators": indicators})


def variants(config: LandscapeConfig, settings: SensitivityConfig, pixel_area_ha: float) -> list[Variant]:
    """The reruns ``settings`` asks for, restricted to the indicators the config runs."""
    ind = config.indicators
    out: list[Variant] = []

    def add(label: str, **sections: Callable) -> None:
        present = {name: make for name, make in sections.items() if getattr(ind, name) is not None}
        if present:
            updates = {name: make(getattr(ind, name)) for name, make in present.items()}
            out.append(Variant(label, tuple(present), _with(config, **updates)))

    if settings.neighbourhood:
        add("neighbourhood 4<->8", connectivity=lambda c: {"neighbourhood": 12 - c.neighbourhood},
            degradation=lambda c: {"neighbourhood": 12 - c.neighbourhood})
    f = settings.edge_depth_factor
    if f > 0:
        for factor in (1 - f, 1 + f):
            add(f"edge_depth x{factor:g}", connectivity=lambda c, k=factor: {"edge_depth_m": c.edge_depth_m * k},
                degradation=lambda c, k=factor: {"edge_depth_m": c.edge_depth_m * k})
    step = settings.mapping_unit_px * pixel_area_ha
    if step > 0:
        for sign in (-1, 1):
            add(f"min_patch {sign * settings.mapping_unit_px:+d} px",
                connectivity=lambda c, s=sign: {"min_patch_ha": max(0.0, c.min_patch_ha + s * step)})
    if settings.persistence:
        add("persistence 1<->2", mining=lambda c: {"min_persistence_years": 3 - min(c.min_persistence_years, 2)})
    return out


def _row_keys(frame: pd.DataFrame) -> pd.Index:
    """One 64-bit hash per row of its MATCH columns (missing values alike): rows match across runs by it."""
    return pd.Index(pd.util.hash_pandas_object(frame[MATCH].astype("string").fillna("<empty>"), index=False))


def envelope(base: pd.DataFrame, reruns: list[pd.DataFrame]) -> pd.DataFrame:
    """``base`` with value_lo/value_hi: min and max of each row's value over the base and the reruns.

    Rows are matched on metric, zone, ecosystem, classes and year/period; a row missing from a rerun (e.g. an
    ecosystem with no patch at 4 neighbours) does not narrow or widen the range.
    """
    out = base.copy()
    values = [out["value"].to_numpy(float)]
    key = _row_keys(out)
    for rerun in reruns:
        series = pd.Series(rerun["value"].to_numpy(float), index=_row_keys(rerun))
        series = series[~series.index.duplicated()]
        values.append(series.reindex(key).to_numpy(float))
    stacked = np.vstack(values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows (metrics without a value) stay NaN
        out["value_lo"] = np.where(np.isnan(values[0]), np.nan, np.nanmin(stacked, axis=0))
        out["value_hi"] = np.where(np.isnan(values[0]), np.nan, np.nanmax(stacked, axis=0))
    return out


def moved_by(base: pd.DataFrame, reruns: dict[str, pd.DataFrame], tolerance: float = 1e-9) -> dict[str, int]:
    """How many rows of ``base`` each variant changed (for the manifest: which parameter matters)."""
    counts = {}
    for label, rerun in reruns.items():
        widened = envelope(base, [rerun])
        counts[label] = int(((widened["value_hi"] - widened["value_lo"]).abs() > tolerance).sum())
    return counts
