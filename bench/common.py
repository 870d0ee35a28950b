"""Helpers shared by the benchmark cases: the generated landscape as a lazy class-index stack, stage timers,
and the run_side / compare of cases without a peer."""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np

from bench.generate import LEGEND, NODATA, ROOT, Dataset


def legend():
    from pipeline import legend as legend_mod

    return legend_mod.load(LEGEND, ROOT / "configs" / "legends")


def _classify(block: np.ndarray, *, lut: np.ndarray) -> np.ndarray:
    from pipeline import kernels

    return kernels.lookup(lut, block)


WARM_UP_SHAPE = (512, 512)  # the window of the warm-up run (warm_up)
WARM_UP_CHUNK = 256


def warm_up(run) -> float:
    """Call ``run()`` (the measured code on the WARM_UP_SHAPE window at the top left) before the timer; returns
    its seconds. A process's first call into numba loads its cached kernels (~0.3 s) and dask's first compute
    imports its scheduler (~0.2 s): one-off costs, like the imports that neither side's timer counts."""
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def grid_and_stack(ds: Dataset, lg, chunk_px: int, shape: tuple[int, int] | None = None):
    """The grid of the generated files (or of their top-left window of ``shape``) and the lazy class-index
    stack (year, y, x) of both years on it."""
    import dask.array as da
    import xarray as xr
    from pyproj import CRS

    from pipeline.grid import LandscapeGrid
    from pipeline.sources import local

    p = ds.params
    grid = LandscapeGrid(CRS.from_user_input(p.crs), p.transform, shape or (p.rows, p.cols), chunk_px)
    lut = lg.lookup_table(np.dtype("uint8"), outside_code=NODATA)
    layers = [local.lazy_raster(ds.path(y), shape=grid.shape, chunks=grid.chunks, dtype="uint8")
              .map_blocks(_classify, lut=lut, dtype=lut.dtype) for y in p.years]
    stack = xr.DataArray(da.stack(layers), dims=("year", "y", "x"), coords={"year": list(p.years)}, name="class_index")
    return grid, stack


def two_year_context(ds: Dataset, *, chunk_px: int, workers: int, indicators: dict, vectors=None,
                     shape: tuple[int, int] | None = None):
    """GDAL cache bounded; the lazy class-index stack of both generated years; a Context for ``indicators``
    (settings per indicator) on a threaded scheduler. ``vectors(grid)`` returns the context's vector layers.
    Returns (stack, ctx)."""
    from rasterio.env import set_gdal_config

    from pipeline.config import ComputeConfig
    from pipeline.testing import make_config, make_context

    set_gdal_config("GDAL_CACHEMAX", ComputeConfig().gdal_cachemax_mb * 2**20)  # as a run
    lg = legend()
    grid, stack = grid_and_stack(ds, lg, chunk_px, shape)
    config = make_config(list(ds.params.years), indicators=indicators,
                         compute={"scheduler": "threads", "workers": max(workers, 1)})
    return stack, make_context(grid, lg, config, vectors=vectors(grid) if vectors else None)


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


def timed_compute(compute, stack, ctx, *, workers: int, stages: dict[str, float], targets: list) -> object:
    """``compute(stack, ctx)`` on the threaded scheduler (``workers`` 0: one synchronous thread, for profilers),
    with the exclusive time of each target step added to ``stages``."""
    import dask

    scheduler = "threads" if workers > 0 else "synchronous"
    with dask.config.set(scheduler=scheduler, num_workers=max(workers, 1)), stage_timers(stages, targets):
        return compute(stack, ctx)


def ours_only(run_ours):
    """``run_side`` of a case without a peer."""

    def run_side(side: str, ds: Dataset, **kw) -> dict:
        if side != "ours":
            raise ValueError(side)
        return run_ours(ds, **kw)

    return run_side


def no_comparison(ours: dict[str, float], peer: dict[str, float]) -> dict:  # pragma: no cover - no peer
    """``compare`` of a case without a peer."""
    return {"identical": False, "compared": 0, "max_rel_diff": float("nan"), "mismatches": []}
