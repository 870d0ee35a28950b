"""Benchmark case ``pipeline`` (issue 8): the whole run, ``pipeline.runner.run``, on a generated landscape.

Sides (each in its own process, see bench.run):

- ``ours``: ``pipeline.runner.run`` on ``data/bench/<key>/configs/landscapes/bench.yaml`` (bench.generate.
  landscape_inputs): both years (2020, 2024), ``grid.crs: native`` (the generated rasters are already on a 10 m
  equal-area grid, as an export from Earth Engine would be), the ~4,000-vertex boundary (~64 % of the raster)
  and 9 districts as a zone layer, all four indicators as configured for lourenco (degradation: all five
  rules; mining: rivers.gpkg, riparian 500 m, affected 100 m) except that connectivity's ECA graph and patches
  layer are left out (``min_patch_ha`` above the landscape's area, as in the connectivity case: ECA grows with
  the square of the patch count); every output written: CSVs, trends.csv, GeoPackages, COGs, manifest.
  Timed: the whole ``run`` call. Stages: the runner's own ``timings_s`` (prepare, align, one per indicator,
  write), with write split into write_gpkg (``outputs.write_gpkg``) and write_other (CSV, trends, zones layer
  geometry, waiting for the COGs); cogs_overlapped: the COG copies' own time, in a thread of their own from the
  last indicator on (it overlaps the other stages, so it is not part of their sum).
- ``ours-full`` (``--full``): the same with ``min_patch_ha: 1`` and dispersal 1 km (ECA and patch polygons).
- ``rasterio-mask``: the usual clip of the same rasters to the same boundary: for each year
  ``rasterio.mask.mask(src, [boundary], crop=True)`` (read the boundary's window, set pixels outside to
  nodata; whole window in memory). Compared: pixels inside the boundary (pixel-centre rule on both sides), which
  must equal ours exactly.
- ``pylandstats`` (144 Mpx only): the connectivity case's peer (FRAGSTATS class metrics of one year, whole
  array, one thread); when the connectivity case ran in the same ``bench.run``, its measurement is reused.

Mpx/s counts pixel-years (rows x cols x 2 years) for ours and rasterio-mask, rows x cols for pylandstats.
"""

from __future__ import annotations

import time

from bench import generate
from bench.common import stage_timers
from bench.generate import Dataset

NAME = "pipeline"
SIDES = ("ours", "rasterio-mask", "pylandstats")
OPTIONAL_SIDES = ("ours-full",)
PEER = "rasterio-mask"
PEERS = ("rasterio-mask", "pylandstats")  # every side whose time ours is compared with
SIDE_SIZES = {"pylandstats": ("144",)}  # sides run only at these sizes
REUSE = {"pylandstats": ("connectivity", "pylandstats")}  # same measurement, taken from that case when it ran
PIXEL_YEARS = 2
GOAL_SIZE = "576"
GOAL_MPX_PER_S = 576 * 2 / 30  # issue 8: ~576 Mpx x 2 years in <= 30 s (38.4 Mpx/s), <= 2 GB
NO_ECA_PATCH_HA = 1e9  # above any landscape's area: no patch enters the ECA graph or the patches layer


def run_ours(ds: Dataset, *, chunk_px: int, workers: int, full: bool = False, **_) -> dict:
    import pandas as pd

    from pipeline import outputs, runner

    indicators = dict(generate.INDICATORS)
    if not full:
        indicators["connectivity"] = {**indicators["connectivity"], "min_patch_ha": NO_ECA_PATCH_HA}
    config = generate.landscape_inputs(ds, chunk_px=chunk_px, workers=max(workers, 1),
                                       scheduler="threads" if workers > 0 else "synchronous", indicators=indicators)
    stages: dict[str, float] = {}
    targets = [(outputs, "write_gpkg", "write_gpkg")]
    started = time.perf_counter()
    with stage_timers(stages, targets):
        result = runner.run(config, out_dir=ds.directory / ("pipeline_out_full" if full else "pipeline_out"))
    seconds = time.perf_counter() - started
    timings = dict(result.timings_s)
    timings["write_other"] = timings.pop("write") - sum(stages.values())
    timings.update(stages)
    table = result.results
    values = {"inside_px": float(result.manifest["area_check"]["grid_inside_px"])}
    for name, res in table.items():
        t = res.table
        rows = t[(t["zone_layer"] == "landscape") & t["class_from"].isna() & t["class_to"].isna()
                 & (t["ecosystem"].isna() | (t["ecosystem"] == "all_natural")) & (t["unit"] == "ha")]
        for r in rows.itertuples():
            when = (str(int(r.year)) if pd.notna(r.year)
                    else f"{int(r.year_from)}-{int(r.year_to)}" if pd.notna(r.year_from) else "-")
            values[f"{name}/{r.metric}/{when}"] = float(r.value)
    files = {f.name: f.stat().st_size for f in result.files}
    return {"seconds": seconds, "stages": timings, "values": values,
            "notes": f"runner.run, 4 indicators ({'with' if full else 'without'} ECA + connectivity patches), native "
                     f"grid, chunk {chunk_px}, threads x{workers}; outputs {len(files)} files, "
                     f"{sum(files.values()) / 2**20:.0f} MB; Mpx/s = px x 2 years / wall"}


def run_mask(ds: Dataset, **_) -> dict:
    import geopandas as gpd
    import numpy as np
    import rasterio
    import rasterio.mask

    stages: dict[str, float] = {}
    started = time.perf_counter()
    boundary = gpd.read_file(ds.directory / "boundary.gpkg").geometry.iloc[0]
    inside = []
    with rasterio.Env(GDAL_CACHEMAX=256 * 2**20):
        for year in ds.params.years:
            tick = time.perf_counter()
            with rasterio.open(ds.path(year)) as src:
                clipped, _ = rasterio.mask.mask(src, [boundary], crop=True, nodata=generate.NODATA, filled=True)
            stages[f"read_mask_{year}"] = time.perf_counter() - tick
            inside.append(int(np.count_nonzero(clipped != generate.NODATA)))
            del clipped
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "stages": stages, "values": {"inside_px": float(inside[0])},
            "notes": f"rasterio {rasterio.__version__} rasterio.mask.mask(crop=True) of both years, whole window in memory"}


def run_pylandstats(ds: Dataset, **kw) -> dict:
    from bench import connectivity

    result = connectivity.run_side("pylandstats", ds, year=ds.params.years[0], **{k: v for k, v in kw.items() if k != "year"})
    return {**result, "pixel_years": 1, "values": {},
            "notes": f"connectivity case's peer (one year): {result.get('notes', '')}"}


def run_side(side: str, ds: Dataset, **kw) -> dict:
    if side == "ours":
        return run_ours(ds, **kw)
    if side == "ours-full":
        return run_ours(ds, full=True, **kw)
    if side == "rasterio-mask":
        return run_mask(ds, **kw)
    if side == "pylandstats":
        return run_pylandstats(ds, **kw)
    raise ValueError(side)


def compare(ours: dict[str, float], peer: dict[str, float]) -> dict:
    """Pixels inside the boundary: ours (grid_inside_px) against rasterio.mask's, exactly."""
    if "inside_px" not in peer:
        return {"identical": False, "compared": 0, "max_rel_diff": float("nan"), "mismatches": []}
    a, b = ours["inside_px"], peer["inside_px"]
    diff = abs(a - b) / max(abs(b), 1.0)
    return {"identical": a == b, "compared": 1, "max_rel_diff": diff,
            "mismatches": [] if a == b else [{"metric": "inside_px", "ours": a, "peer": b}]}
