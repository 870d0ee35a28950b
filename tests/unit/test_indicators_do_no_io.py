"""Indicators receive arrays and return results: they never open or write files (DESIGN.md §1)."""

import builtins
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from pipeline.indicators import REGISTRY
from pipeline.testing import make_config, make_context, make_grid, make_legend, make_stack

FORBIDDEN = re.compile(r"rasterio\.open|read_file|to_file|to_csv|open\(|import sources|pipeline\.sources|pipeline import outputs|pipeline\.outputs")


def test_indicator_modules_do_not_mention_file_io():
    for path in Path("pipeline/indicators").glob("*.py"):
        hits = [line for line in path.read_text().splitlines() if FORBIDDEN.search(line)]
        assert not hits, f"{path}: {hits}"


def test_indicators_run_with_every_file_api_disabled(monkeypatch):
    legend, grid = make_legend(), make_grid((6, 5), chunk_px=4)
    rng = np.random.default_rng(1)
    codes = {y: rng.choice(np.array([3, 12, 15, 30, 33], np.uint8), size=(6, 5)) for y in (2000, 2010)}
    indicators = {"conversion": {"min_mapping_unit_ha": 0}, "connectivity": {"min_patch_ha": 0, "edge_depth_m": 30},
                  "mining": {}, "degradation": {"edge_depth_m": 30, "isolation_m": 30}}
    ctx = make_context(grid, legend, make_config([2000, 2010], indicators=indicators))
    stack = make_stack(codes, legend, grid)
    for module in REGISTRY.values():  # the first run loads dask's config and numba's compiled kernels from files
        module.compute(stack, ctx)

    def refuse(*args, **kwargs):
        raise AssertionError(f"file access from an indicator: {args[:1]}")

    for target, name in [(builtins, "open"), (rasterio, "open"), (gpd, "read_file"), (gpd.GeoDataFrame, "to_file"),
                         (Path, "open"), (Path, "write_text"), (Path, "read_text")]:
        monkeypatch.setattr(target, name, refuse)
    for name, module in REGISTRY.items():
        result = module.compute(stack, ctx)
        assert not result.table.empty, name
    with pytest.raises(AssertionError):
        builtins.open("anything")
