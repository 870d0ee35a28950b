"""Run the stages in order: prepare, align, indicators, outputs written atomically (DESIGN.md §1)."""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import shapely
import xarray as xr
from rasterio.env import set_gdal_config

from pipeline import __version__, align, outputs
from pipeline.config import LandscapeConfig
from pipeline.indicators import REGISTRY
from pipeline.indicators.base import Context, IndicatorResult
from pipeline.indicators.mining import OUTSIDE_ZONES
from pipeline.legend import Legend
from pipeline.prepare import Prepared, area_check, prepare
from pipeline.sources import local
from pipeline.zones import LANDSCAPE


@dataclass(eq=False)
class RunResult:
    prepared: Prepared
    results: dict[str, IndicatorResult]
    files: list[Path]
    manifest: dict
    timings_s: dict[str, float]


def _aligned_masks(prep: Prepared) -> dict[str, tuple]:
    """Lazy (year, y, x) booleans of every yearly mask raster on the grid (values in the source's mining or
    degraded values), and the years each observes."""
    out = {}
    grid, years = prep.grid, prep.config.years
    for key, (cfg, bands) in prep.mask_rasters.items():
        values = getattr(cfg, "mining_values", None) or cfg.degraded_values
        observed = np.array([y in bands for y in years])
        dtype = np.result_type(*[np.dtype(b.dtype) for b in bands.values()])
        outside = next(c for c in (0, int(np.iinfo(dtype).max), 1) if c not in values)
        codes = align.aligned_stack(grid, prep.boundary, list(bands.values()), resampling=prep.config.grid.resampling,
                                    outside_code=outside, unmapped_code=outside, legend_path=None)
        masks = iter(da.isin(codes, values))
        layers = [next(masks) if seen else da.zeros(grid.shape, bool, chunks=grid.chunks) for seen in observed]
        out[key] = (observed, da.stack(layers).rechunk((len(years), *grid.chunks)))
    return out


def _scheduler(config: LandscapeConfig):
    return dask.config.set(scheduler=config.compute.scheduler, num_workers=config.compute.workers)


def run(config_path: Path, *, chunk_px: int | None = None, out_dir: Path | None = None,
        progress: Callable[[str], object] | None = None) -> RunResult:
    """Run every configured indicator and write data/processed/<name>/ atomically.

    ``progress(stage)`` returns a context manager shown while a stage computes (the CLI's progress bar).
    """
    progress = progress or (lambda stage: nullcontext())
    started = datetime.now(UTC)
    timings: dict[str, float] = {}
    tick = time.perf_counter()
    prep = prepare(config_path, chunk_px=chunk_px)
    set_gdal_config("GDAL_CACHEMAX", prep.config.compute.gdal_cachemax_mb * 1024 * 1024)
    final_dir = out_dir or prep.out_dir
    timings["prepare"] = time.perf_counter() - tick
    config, grid, legend = prep.config, prep.grid, prep.legend

    with _scheduler(config), outputs.Staging(final_dir) as staging:
        # 1. align every year onto the grid and write it, counting codes in the same pass
        tick = time.perf_counter()
        if prep.bands:
            stack_xr, inside_px, tiled, resampling, outside_code = _align_landcover(prep, staging, progress)
        else:
            warnings.warn(f"{prep.landcover_missing}; computing what the shipped data allow (the mining footprint)",
                          stacklevel=2)
            stack_xr, tiled, resampling, outside_code = None, [], {}, None
            with progress("rasterise the boundary"):
                inside_px = int((prep.zones[0].face_ids(grid) > 0).sum().compute())
        timings["align"] = time.perf_counter() - tick
        area = area_check(prep, inside_px)

        # 2. indicators on class indices read back from the aligned rasters
        ctx = Context(grid=grid, legend=legend, config=config, zones=prep.zones,
                      face_ids={z.name: z.face_ids(grid) for z in prep.zones}, vectors=prep.vectors,
                      rasters=_aligned_masks(prep))
        results: dict[str, IndicatorResult] = {}
        not_computed: list[dict] = []
        for name, module in REGISTRY.items():
            if getattr(config.indicators, name, None) is None:
                continue
            if stack_xr is None and module.NEEDS_LANDCOVER:
                not_computed.append({"indicator": name, "metric": "all", "reason": prep.landcover_missing})
                continue
            tick = time.perf_counter()
            with progress(f"indicator {name}"):
                results[name] = module.compute(stack_xr, ctx)
            not_computed += [{"indicator": name, **item} for item in results[name].not_computed]
            timings[name] = time.perf_counter() - tick

        # 3. outputs: tables, GeoPackages, COGs, manifest; then move everything into place
        tick = time.perf_counter()
        names = []
        zone_geoms = {(z.name, n): g for z in prep.zones for n, g in zip(z.zone_names, z.zone_geometries, strict=True)}
        for z in prep.zones[1:]:  # "(outside all zones)" rows (mining) map to the rest of the landscape
            zone_geoms[(z.name, OUTSIDE_ZONES)] = shapely.difference(prep.boundary, shapely.union_all(list(z.zone_geometries)))
        for name, result in results.items():
            outputs.write_csv(result.table, staging.path(f"{name}.csv"))
            zones_gdf = outputs.zones_layer(result.table, zone_geoms, result.zone_metrics, grid.crs)
            outputs.write_gpkg({"zones": zones_gdf, **result.features}, staging.path(f"{name}.gpkg"))
            names += [f"{name}.csv", f"{name}.gpkg"]
        with progress("write cloud-optimised GeoTIFFs"):
            for year, src in zip(config.years, tiled, strict=False):
                outputs.to_cog(src, staging.path(f"landcover_{year}.tif"))
                names.append(f"landcover_{year}.tif")
        timings["write"] = time.perf_counter() - tick
        manifest = _manifest(prep, area, started, timings, [(n, staging.path(n)) for n in names], resampling,
                             outside_code, not_computed, results)
        outputs.write_json(manifest, staging.path("manifest.json"))
        files = staging.commit([*names, "manifest.json"])
    return RunResult(prep, results, files, manifest, timings)


def _align_landcover(prep: Prepared, staging: outputs.Staging, progress):
    """Align and write every year (one pass that also counts codes); check codes; read the result back lazily
    as class indices. Returns (stack, inside px, tiled paths, resampling per year, outside code)."""
    config, grid, legend = prep.config, prep.grid, prep.legend
    years = config.years
    bands = [prep.bands[y] for y in years]
    dtype = np.result_type(*[np.dtype(b.dtype) for b in bands])
    outside_code = legend.outside_code(dtype)
    stack = align.aligned_stack(grid, prep.boundary, bands, resampling=config.grid.resampling,
                                outside_code=outside_code, unmapped_code=legend.unmapped_code,
                                legend_path=str(legend.path))
    tiled = [staging.path(f".tiled_landcover_{y}.tif") for y in years]
    colormap = _colormap(legend) if dtype.itemsize <= 2 else None
    store, datasets = outputs.store_rasters(stack, tiled, grid, nodata=outside_code, colormap=colormap)
    histogram = align.code_histogram(stack, size=int(np.iinfo(dtype).max) + 1)
    try:
        with progress("align land cover"):
            _, counts = dask.compute(store, histogram)
    finally:
        for d in datasets:
            d.close()
    for year, band, year_counts in zip(years, bands, counts, strict=True):
        legend.check_codes(year_counts, source=f"{band.path} (band {band.band}, year {year})", outside_code=outside_code)
    inside_px = int(counts[0].sum() - counts[0][outside_code])
    lut = legend.lookup_table(dtype, outside_code=outside_code)
    layers = [local.lazy_raster(p, shape=grid.shape, chunks=grid.chunks, dtype=dtype.name) for p in tiled]
    classes = da.stack([layer.map_blocks(_classify, lut=lut, dtype=lut.dtype) for layer in layers]).rechunk({0: -1})
    stack_xr = xr.DataArray(classes, dims=("year", "y", "x"), coords={"year": years}, name="class_index")
    resampling = {y: align.choose_resampling(config.grid.resampling, grid, b) for y, b in zip(years, bands, strict=True)}
    return stack_xr, inside_px, tiled, resampling, outside_code


def _classify(block: np.ndarray, *, lut: np.ndarray) -> np.ndarray:
    return lut[block]


def _colormap(legend: Legend) -> dict[int, tuple[int, int, int, int]]:
    colours = {}
    for code, cls in legend.config.classes.items():
        if cls.color:
            h = cls.color.lstrip("#")
            colours[code] = (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16), 255)
    return colours


def _manifest(prep: Prepared, area: dict, started: datetime, timings: dict, outputs_: list[tuple[str, Path]],
              resampling: dict[int, str], outside_code: int | None, not_computed: list[dict],
              results: dict[str, IndicatorResult]) -> dict:
    return {
        "pipeline_version": __version__,
        "landscape": prep.config.name,
        "title": prep.config.title,
        "command": " ".join(sys.argv),
        "started_utc": started.isoformat(timespec="seconds"),
        "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "config": prep.config.model_dump(mode="json"),
        "legend": {"name": prep.legend.name, "product": prep.legend.config.product,
                   "reference": prep.legend.config.reference, "path": str(prep.legend.path)},
        "inputs": [outputs.file_record(path, role=role) for role, path in prep.input_files],
        "grid": prep.grid.describe(),
        "raster_codes": {"outside_boundary": outside_code, "unmapped": prep.legend.unmapped_code},
        "resampling": {str(k): v for k, v in resampling.items()},
        "boundary_notes": prep.boundary_notes,
        "area_check": area,
        "not_computed": not_computed,
        "indicators": {name: result.metadata for name, result in results.items() if result.metadata},
        "outputs": [{"file": name, **outputs.file_record(path)} for name, path in outputs_],
        "packages": outputs.package_versions(),
        "zones": {z.name: {"zones": len(z.zone_names), "faces": z.n_faces - 1} for z in prep.zones if z.name != LANDSCAPE},
        "python": sys.version.split()[0],
    }


