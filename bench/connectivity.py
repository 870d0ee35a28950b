"""Benchmark case `connectivity`: FRAGSTATS class-level patch metrics of one year, ours against pylandstats.

Sides (each runs in its own process, see bench.run):

- ``ours``: ``pipeline.indicators.connectivity.compute`` on a lazy class-index array read chunk by chunk from
  the GeoTIFF (``pipeline.sources.local.lazy_raster`` + the legend lookup, as ``pipeline.runner`` does),
  threaded dask scheduler. Timed: building the graph and computing every metric for every ecosystem type
  and ``all_natural`` (patch_count, patch_density, largest_patch_index, mean_patch_area_ha,
  area_weighted_mean_patch_ha, effective_mesh_size_ha, edge_density_m_per_ha, core_area_ha). ECA and the
  patch polygons are **excluded** (``min_patch_ha`` is set above the landscape's area, so no patch enters the
  ECA graph or the patches layer); they are not pylandstats metrics. Before the timer, the same on the 512 px
  top-left window (``bench.common.warm_up``: numba's cached kernels loaded, dask's scheduler imported; its
  seconds are in the notes), as pylandstats' imports come before its timer.
- ``ours-full``: the same with ``min_patch_ha: 1`` and dispersal 1 and 10 km: ECA and patch polygons
  included (optional, ``--full``; nothing to compare it with).
- ``pylandstats``: read the whole band, ``pylandstats.Landscape(arr, res=(10, 10), nodata=0)`` and
  ``compute_class_metrics_df`` of the same metrics for the natural classes (one class per ecosystem type
  in the bench legend), then the same on the natural / non-natural array for ``all_natural``. Timed: read +
  both landscapes.

Comparison: patch counts exactly; the other metrics to a relative 1e-9 (the formulas sum in different orders).
``core_area_ha`` is reported but not part of "identical": pylandstats erodes core from the array border,
the pipeline does not count the study-area edge as habitat edge (see pipeline/indicators/connectivity.py).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict

import numpy as np

from bench.common import WARM_UP_CHUNK, WARM_UP_SHAPE, _classify, stage_timers, warm_up
from bench.generate import LEGEND, NODATA, ROOT, Dataset

NAME = "connectivity"
SIDES = ("ours", "pylandstats")
OPTIONAL_SIDES = ("ours-full",)
PEER = "pylandstats"
EDGE_DEPTH_M = 100.0
NEIGHBOURHOOD = 8
# ours -> pylandstats metric names
METRICS = {
    "patch_count": "number_of_patches",
    "patch_density": "patch_density",
    "largest_patch_index": "largest_patch_index",
    "mean_patch_area_ha": "area_mn",
    "area_weighted_mean_patch_ha": "area_am",
    "effective_mesh_size_ha": "effective_mesh_size",
    "edge_density_m_per_ha": "edge_density",
    "core_area_ha": "total_core_area",
}
EXACT = {"patch_count"}
RTOL = 1e-9
NOT_COMPARED = {"core_area_ha": "pylandstats erodes core from the array border; the pipeline does not"}


def _legend():
    from pipeline import legend as legend_mod

    return legend_mod.load(LEGEND, ROOT / "configs" / "legends")


def _group_codes(legend, codes: list[int]) -> dict[str, int]:
    """Ecosystem type -> the one product code of that type among ``codes`` (the bench legend has one each)."""
    from pipeline.config import ECOSYSTEMS

    groups: dict[str, list[int]] = defaultdict(list)
    for code in codes:
        i = int(np.flatnonzero(legend.codes == code)[0])
        if legend.natural[i]:
            groups[ECOSYSTEMS[legend.ecosystem[i]]].append(code)
    many = {g: c for g, c in groups.items() if len(c) > 1}
    if many:
        raise ValueError(f"the connectivity bench needs one code per ecosystem type to compare per class; got {many}")
    return {g: c[0] for g, c in groups.items()}


# ------------------------------------------------------------------------------------------------ ours
def _stage_timers(stages: dict[str, float]):
    """Exclusive times of the pipeline's main connectivity steps (bench.common.stage_timers)."""
    from pipeline import blocks, graph
    from pipeline.indicators import connectivity

    # year_group_stats is one pass per year: counts, edges, core and the patch labels of every group
    return stage_timers(stages, [(connectivity, "year_group_stats", "year_group_stats"),
                                 (blocks, "label_patches", "label_patches"), (connectivity, "_zone_parts", "zone_parts"),
                                 (blocks.Patches, "polygons", "polygons"), (graph, "equivalent_connected_area", "eca")])




def run_ours(ds: Dataset, *, year: int, chunk_px: int, workers: int, full: bool = False) -> dict:
    warm = warm_up(lambda: _run_ours(ds, year=year, chunk_px=WARM_UP_CHUNK, workers=workers, full=full,
                                     shape=WARM_UP_SHAPE))
    result = _run_ours(ds, year=year, chunk_px=chunk_px, workers=workers, full=full)
    result["notes"] += f"; warm-up before the timer {warm:.2f} s"
    return result


def _run_ours(ds: Dataset, *, year: int, chunk_px: int, workers: int, full: bool = False,
              shape: tuple[int, int] | None = None) -> dict:
    import dask
    import xarray as xr
    from pyproj import CRS
    from rasterio.env import set_gdal_config

    from pipeline.config import ComputeConfig
    from pipeline.grid import LandscapeGrid
    from pipeline.indicators import connectivity
    from pipeline.sources import local
    from pipeline.testing import make_config, make_context

    set_gdal_config("GDAL_CACHEMAX", ComputeConfig().gdal_cachemax_mb * 2**20)  # as a run
    p = ds.params
    stages: dict[str, float] = {}
    started = time.perf_counter()
    legend = _legend()
    grid = LandscapeGrid(CRS.from_user_input(p.crs), p.transform, shape or (p.rows, p.cols), chunk_px)
    lut = legend.lookup_table(np.dtype("uint8"), outside_code=NODATA)
    layer = local.lazy_raster(ds.path(year), shape=grid.shape, chunks=grid.chunks, dtype="uint8")
    classes = layer.map_blocks(_classify, lut=lut, dtype=lut.dtype)[None]
    stack = xr.DataArray(classes, dims=("year", "y", "x"), coords={"year": [year]}, name="class_index")
    total_ha = grid.shape[0] * grid.shape[1] * grid.pixel_area_ha
    settings = {"neighbourhood": NEIGHBOURHOOD, "edge_depth_m": EDGE_DEPTH_M, "dispersal_m": [1000, 10000],
                "min_patch_ha": 1.0 if full else 10 * total_ha}
    config = make_config(sorted({*p.years, year}), indicators={"connectivity": settings},
                         compute={"scheduler": "threads", "workers": max(workers, 1)})
    ctx = make_context(grid, legend, config)
    scheduler = "threads" if workers > 0 else "synchronous"  # 0: one thread, for profilers (bench/README.md)
    with dask.config.set(scheduler=scheduler, num_workers=max(workers, 1)), _stage_timers(stages):
        result = connectivity.compute(stack, ctx)
    seconds = time.perf_counter() - started
    table = result.table
    rows = table[(table["zone_layer"] == "landscape") & table["metric"].isin(list(METRICS)) & (table["year"] == year)]
    values = {f"{r.ecosystem}/{r.metric}": float(r.value) for r in rows.itertuples()}
    if full:
        eca = table[table["metric"].str.startswith("equivalent_connected_area_ha")]
        values.update({f"{r.ecosystem}/{r.metric}": float(r.value) for r in eca.itertuples()})
    stages["other"] = seconds - sum(stages.values())  # the wrapped steps are disjoint calls from compute()
    return {"seconds": seconds, "stages": stages, "values": values,
            "notes": ("ECA and patch polygons included" if full else "ECA and patch polygons excluded")
            + f"; chunk {chunk_px}, threads x{workers}"}


# ------------------------------------------------------------------------------------------------ peer
def run_pylandstats(ds: Dataset, *, year: int, **_) -> dict:
    import pylandstats
    import rasterio

    p = ds.params
    legend = _legend()
    depth = int(math.floor(EDGE_DEPTH_M / p.res_m + 0.5))
    metrics = list(METRICS.values())
    kwargs = {"total_core_area": {"edge_depth": depth}}
    stages: dict[str, float] = {}
    started = time.perf_counter()
    with rasterio.open(ds.path(year)) as src:
        arr = src.read(1)
    stages["read"] = time.perf_counter() - started
    codes = [int(c) for c in np.flatnonzero(np.bincount(arr.ravel(), minlength=256)) if c != NODATA]
    groups = _group_codes(legend, codes)
    tick = time.perf_counter()
    landscape = pylandstats.Landscape(arr, res=(p.res_m, p.res_m), nodata=NODATA, neighborhood_rule=str(NEIGHBOURHOOD))
    by_class = landscape.compute_class_metrics_df(metrics=metrics, classes=list(groups.values()), metrics_kwargs=kwargs)
    del landscape
    stages["ecosystem_types"] = time.perf_counter() - tick
    tick = time.perf_counter()
    natural = np.zeros(256, np.uint8)
    for code in codes:
        natural[code] = 1 if legend.natural[int(np.flatnonzero(legend.codes == code)[0])] else 2
    binary = natural[arr]
    del arr
    landscape = pylandstats.Landscape(binary, res=(p.res_m, p.res_m), nodata=NODATA, neighborhood_rule=str(NEIGHBOURHOOD))
    all_natural = landscape.compute_class_metrics_df(metrics=metrics, classes=[1], metrics_kwargs=kwargs)
    stages["all_natural"] = time.perf_counter() - tick
    seconds = time.perf_counter() - started
    values = {}
    for group, frame, key in [*((g, by_class, c) for g, c in groups.items()), ("all_natural", all_natural, 1)]:
        for ours, theirs in METRICS.items():
            values[f"{group}/{ours}"] = float(frame.loc[key, theirs])
    return {"seconds": seconds, "stages": stages, "values": values,
            "notes": f"pylandstats {pylandstats.__version__}, whole array in memory, single thread"}


SIDE_FUNCTIONS = {"ours": run_ours, "ours-full": lambda ds, **kw: run_ours(ds, full=True, **kw),
                  "pylandstats": run_pylandstats}


def run_side(side: str, ds: Dataset, **kw) -> dict:
    return SIDE_FUNCTIONS[side](ds, **kw)


# ------------------------------------------------------------------------------------------------ compare
def compare(ours: dict[str, float], peer: dict[str, float]) -> dict:
    """identical: every compared metric of every group equal (counts exactly, others to RTOL);
    max_rel_diff over the compared metrics; mismatches lists the differing (key, ours, peer)."""
    mismatches, worst, compared = [], 0.0, 0
    others = {}
    for key, theirs in sorted(peer.items()):
        group, metric = key.split("/")
        mine = ours.get(key, math.nan)
        rel = 0.0 if mine == theirs else abs(mine - theirs) / max(abs(theirs), 1e-300)
        if metric in NOT_COMPARED:
            others[key] = {"ours": mine, "peer": theirs, "rel_diff": rel}
            continue
        compared += 1
        ok = (mine == theirs) if metric in EXACT else (rel <= RTOL)
        worst = max(worst, rel if not math.isnan(rel) else math.inf)
        if not ok:
            mismatches.append((key, mine, theirs))
    return {"identical": not mismatches and compared > 0, "compared": compared, "max_rel_diff": worst,
            "mismatches": mismatches, "not_compared": others}
