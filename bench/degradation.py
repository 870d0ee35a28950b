"""Benchmark case ``degradation`` (issue 4): all five rules on both generated years, our side only.

- ``ours``: ``pipeline.indicators.degradation.compute`` (the real entry point) with rules transition,
  condition, edge, small_patch and isolation (edge_depth_m 100, isolation_m 1000, small_patch_ha 5,
  large_patch_ha 100, 8-neighbour) for the period between the two generated years, on a lazy class-index stack
  (year, y, x) read chunk by chunk from the GeoTIFFs (``pipeline.sources.local.lazy_raster`` + the legend
  lookup table, as ``pipeline/runner.py`` does), a Context from ``pipeline.testing.make_context``, chunks
  ``chunk_px``, threaded scheduler. Timed end to end: graph building, every compute, and the degraded-patch
  polygons (>= 0.5 ha, ``degraded_patches`` layer); nothing is written to disk.

There is no peer (nothing else computes these rules), so nothing is compared; ``values`` holds the landscape
totals (degraded ha per rule and any, natural_both_ha, patch count) to compare across commits.
Mpx/s counts pixel-years: rows x cols x 2 years / wall (``PIXEL_YEARS``).
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np

from bench.generate import LEGEND, NODATA, ROOT, Dataset

NAME = "degradation"
SIDES = ("ours",)
OPTIONAL_SIDES = ()
PEER = None
PIXEL_YEARS = 2  # both years are read and processed: Mpx/s = rows x cols x 2 / wall
GOAL_MPX_PER_S = 50.0  # issue 4: >= 50 Mpx/s on 2 cores with <= 2 GB at >= 144 Mpx
RULES = ["transition", "condition", "edge", "small_patch", "isolation"]
SETTINGS = {"rules": RULES, "neighbourhood": 8, "edge_depth_m": 100.0, "isolation_m": 1000.0,
            "small_patch_ha": 5.0, "large_patch_ha": 100.0}


def legend():
    from pipeline import legend as legend_mod

    return legend_mod.load(LEGEND, ROOT / "configs" / "legends")


def _classify(block: np.ndarray, *, lut: np.ndarray) -> np.ndarray:
    return lut[block]


def grid_and_stack(ds: Dataset, lg, chunk_px: int):
    """The grid of the generated files and the lazy class-index stack (year, y, x) of both years."""
    import dask.array as da
    import xarray as xr
    from pyproj import CRS

    from pipeline.grid import LandscapeGrid
    from pipeline.sources import local

    p = ds.params
    grid = LandscapeGrid(CRS.from_user_input(p.crs), p.transform, (p.rows, p.cols), chunk_px)
    lut = lg.lookup_table(np.dtype("uint8"), outside_code=NODATA)
    layers = [local.lazy_raster(ds.path(y), shape=grid.shape, chunks=grid.chunks, dtype="uint8")
              .map_blocks(_classify, lut=lut, dtype=lut.dtype) for y in p.years]
    stack = xr.DataArray(da.stack(layers), dims=("year", "y", "x"), coords={"year": list(p.years)}, name="class_index")
    return grid, stack


@contextmanager
def stage_timers(stages: dict[str, float], targets: list[tuple[object, str, str]]):
    """Time the pipeline's steps by wrapping ``owner.attr`` in this process (pipeline/ is not modified).
    Times are exclusive: a wrapped call inside another wrapped call is counted only in its own stage."""
    saved, active = [], []

    for owner, attr, stage in targets:
        original = getattr(owner, attr, None)
        if original is None:
            continue

        def timed(*a, _f=original, _s=stage, **kw):
            t = time.perf_counter()
            active.append(0.0)  # time spent in nested wrapped calls
            try:
                return _f(*a, **kw)
            finally:
                total = time.perf_counter() - t
                nested = active.pop()
                stages[_s] = stages.get(_s, 0.0) + total - nested
                if active:
                    active[-1] += total

        saved.append((owner, attr, original))
        setattr(owner, attr, timed)
    try:
        yield
    finally:
        for owner, attr, original in reversed(saved):
            setattr(owner, attr, original)


def run_ours(ds: Dataset, *, chunk_px: int, workers: int, **_) -> dict:
    import dask
    from rasterio.env import set_gdal_config

    from pipeline import blocks
    from pipeline.indicators import degradation
    from pipeline.testing import make_config, make_context

    set_gdal_config("GDAL_CACHEMAX", 256 * 2**20)
    p = ds.params
    stages: dict[str, float] = {}
    started = time.perf_counter()
    lg = legend()
    grid, stack = grid_and_stack(ds, lg, chunk_px)
    config = make_config(list(p.years), indicators={"degradation": SETTINGS},
                         compute={"scheduler": "threads", "workers": max(workers, 1)})
    ctx = make_context(grid, lg, config)
    targets = [(degradation, "_patch_masks", "natural_patches"), (degradation, "_count", "flags_counts"),
               (degradation, "_patches", "degraded_patches"), (blocks.Patches, "polygons", "polygons")]
    scheduler = "threads" if workers > 0 else "synchronous"  # 0: one thread, for profilers (bench/README.md)
    with dask.config.set(scheduler=scheduler, num_workers=max(workers, 1)), stage_timers(stages, targets):
        result = degradation.compute(stack, ctx)
    seconds = time.perf_counter() - started
    table = result.table
    rows = table[(table["zone_layer"] == "landscape") & (table["ecosystem"] == "all_natural") & (table["unit"] == "ha")]
    values = {r.metric: float(r.value) for r in rows.itertuples()}
    patches = result.features[degradation.PATCH_LAYER]
    values["degraded_patches"] = float(len(patches))
    stages["other"] = seconds - sum(stages.values())
    return {"seconds": seconds, "stages": stages, "values": values,
            "notes": f"rules {'+'.join(RULES)}, {p.years[0]}-{p.years[1]}; patch polygons included "
                     f"({len(patches)} >= {degradation.MIN_PATCH_HA} ha); Mpx/s = px x 2 years / wall; "
                     f"chunk {chunk_px}, threads x{workers}"}


def run_side(side: str, ds: Dataset, **kw) -> dict:
    if side != "ours":
        raise ValueError(side)
    return run_ours(ds, **kw)


def compare(ours: dict[str, float], peer: dict[str, float]) -> dict:  # pragma: no cover - no peer
    return {"identical": False, "compared": 0, "max_rel_diff": float("nan"), "mismatches": []}
