"""The common indicator interface (DESIGN.md §1): ``compute(stack, ctx) -> IndicatorResult``.

Indicators receive aligned class-index arrays and zone face ids, and return a tidy table and feature
layers. They never open or write files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import geopandas as gpd
import pandas as pd

from pipeline.config import LandscapeConfig
from pipeline.grid import LandscapeGrid
from pipeline.legend import Legend
from pipeline.zones import ZoneLayer

COLUMNS = (
    "landscape", "indicator", "metric", "unit", "zone_layer", "zone", "ecosystem",
    "class_from", "class_to", "year", "year_from", "year_to", "value",
)
ALL_NATURAL = "all_natural"


@dataclass(frozen=True, eq=False)
class Context:
    """Everything an indicator may use besides the land-cover stack."""

    grid: LandscapeGrid
    legend: Legend
    config: LandscapeConfig
    zones: tuple[ZoneLayer, ...]
    face_ids: dict[str, da.Array] = field(repr=False)  # zone layer name -> lazy face ids per pixel (unsigned)
    vectors: dict[str, gpd.GeoDataFrame] = field(default_factory=dict, repr=False)  # in the grid CRS, clipped
    # e.g. "rivers", "mining:<name>" (with an int `year` column), "mining_rights", "surface_rights"
    rasters: dict[str, tuple] = field(default_factory=dict, repr=False)
    # "mining:<name>" -> (observed bool per year, lazy bool (year, y, x) on the grid)
    features: bool = True  # False: the caller keeps the table only (sensitivity reruns); feature layers that no
    # number of the table depends on may be left empty
    natural_patches: dict = field(default_factory=dict, repr=False)  # (dask name of the stack, year, neighbourhood)
    # -> blocks.Patches of all natural land with their runs kept, left by connectivity for degradation's patch
    # sizes (the same labelling of the same stack)


@dataclass(frozen=True, eq=False)
class IndicatorResult:
    """A tidy table (COLUMNS) and feature layers; ``zone_metrics`` become columns of the zones layer."""

    table: pd.DataFrame
    features: dict[str, gpd.GeoDataFrame]
    zone_metrics: tuple[str, ...] = ()
    not_computed: tuple[dict, ...] = ()  # {"metric": ..., "reason": ...} for metrics the inputs do not allow
    metadata: dict = field(default_factory=dict)  # assumptions to record in the manifest (e.g. matrices)


def tidy(rows: list[dict[str, Any]], *, landscape: str, indicator: str) -> pd.DataFrame:
    """Rows (dicts with any subset of COLUMNS) -> a table with exactly COLUMNS, years as nullable ints."""
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["landscape"] = landscape
    frame["indicator"] = indicator
    for column in ("year", "year_from", "year_to"):
        frame[column] = frame[column].astype("Int64")
    for column in ("zone_layer", "zone", "ecosystem", "class_from", "class_to", "metric", "unit"):
        frame[column] = frame[column].astype("string")
    frame["value"] = frame["value"].astype(float)
    return frame
