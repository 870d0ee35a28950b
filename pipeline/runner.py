"""Run the stages in order: prepare, align, indicators, outputs written atomically (DESIGN.md §1)."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import shapely
import xarray as xr
from rasterio.env import set_gdal_config

from pipeline import __version__, align, cluster, kernels, outputs, sensitivity, trends
from pipeline.config import LandscapeConfig
from pipeline.errors import ConfigError
from pipeline.fetch import fetch_record
from pipeline.indicators import REGISTRY
from pipeline.indicators.base import Context, IndicatorResult
from pipeline.indicators.mining import OUTSIDE_ZONES
from pipeline.legend import Legend
from pipeline.prepare import Prepared, area_check, prepare
from pipeline.sources import local
from pipeline.zones import LANDSCAPE


@dataclass(eq=False)
class RunResult:
    """What a run made. ``results`` keeps each indicator's table, metadata and notes; its features were written
    to <indicator>.gpkg as soon as it was computed and are not kept (``features`` is empty)."""

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
    """Context of the configured scheduler; yields the dask.distributed Client or None (pipeline/cluster.py)."""
    return cluster.scheduler(config.compute)


def run(config_path: Path, *, chunk_px: int | None = None, out_dir: Path | None = None,
        progress: Callable[[str], object] | None = None, sensitivity_reruns: bool = True) -> RunResult:
    """Run every configured indicator and write data/processed/<name>/ atomically.

    ``progress(stage)`` returns a context manager shown while a stage computes (the CLI's progress bar).
    ``sensitivity_reruns=False`` skips the configured sensitivity reruns (no value_lo/value_hi columns).
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

    with (_scheduler(config) as client, outputs.Staging(final_dir) as staging, ThreadPoolExecutor(1) as cog_writer,
          local.closing_open_rasters(), cluster.reusing_freed_buffers(), cluster.full_collections_at_stage_ends()):
        # 1. align every year onto the grid and write it, counting codes in the same pass
        tick = time.perf_counter()
        if prep.bands:
            stack_xr, face_ids, inside_px, tiled, resampling, outside_code = _align_landcover(
                prep, staging, progress, client)
        else:
            warnings.warn(f"{prep.landcover_missing}; computing what the shipped data allow (the mining footprint)",
                          stacklevel=2)
            stack_xr, tiled, resampling, outside_code = None, [], {}, None
            face_ids = {z.name: z.face_ids(grid) for z in prep.zones}
            with progress("rasterise the boundary"):
                inside_px = int((prep.zones[0].face_ids(grid) > 0).sum().compute())
        timings["align"] = time.perf_counter() - tick
        area = area_check(prep, inside_px)

        # 2. indicators on class indices read back from the aligned rasters
        ctx = Context(grid=grid, legend=legend, config=config, zones=prep.zones,
                      face_ids=face_ids, vectors=prep.vectors,
                      rasters=_aligned_masks(prep))
        results: dict[str, IndicatorResult] = {}
        not_computed: list[dict] = []
        zone_geoms = {(z.name, n): g for z in prep.zones for n, g in zip(z.zone_names, z.zone_geometries, strict=True)}
        for z in prep.zones[1:]:  # "(outside all zones)" rows (mining) map to the rest of the landscape
            zone_geoms[(z.name, OUTSIDE_ZONES)] = shapely.difference(prep.boundary, shapely.union_all(list(z.zone_geometries)))
        write_s = 0.0
        cogs = [(src, staging.path(f"landcover_{year}.tif")) for year, src in zip(config.years, tiled, strict=False)]
        cogs_done = None
        runnable = [name for name, module in REGISTRY.items() if getattr(config.indicators, name, None) is not None
                    and not (stack_xr is None and module.NEEDS_LANDCOVER)]
        for name, module in REGISTRY.items():
            if getattr(config.indicators, name, None) is None:
                continue
            if stack_xr is None and module.NEEDS_LANDCOVER:
                not_computed.append({"indicator": name, "metric": "all", "reason": prep.landcover_missing})
                continue
            if name == runnable[-1]:  # the COGs are copied in a thread of their own from the last indicator on: its
                # polygons, GeoPackage and the CSVs leave a core idle (from the start, they slowed the indicators)
                cogs_done = cog_writer.submit(_timed, outputs.to_cogs, cogs, threads=1)
            tick = time.perf_counter()
            with progress(f"indicator {name}"):
                results[name] = module.compute(stack_xr, ctx)
            not_computed += [{"indicator": name, **item} for item in results[name].not_computed]
            timings[name] = time.perf_counter() - tick
            # the GeoPackage now (its zone layer takes `value` only, which sensitivity reruns do not change), so
            # one indicator's features at a time are in memory, not every indicator's until the end (writing it in
            # a thread while the next indicator computed was slower, and took 2.2 GB at 576 Mpx x 2 years)
            tick = time.perf_counter()
            zones_gdf = outputs.zones_layer(results[name].table, zone_geoms, results[name].zone_metrics, grid.crs)
            outputs.write_gpkg({"zones": zones_gdf, **results[name].features}, staging.path(f"{name}.gpkg"))
            results[name] = dataclasses.replace(results[name], features={})
            cluster.release_memory()
            write_s += time.perf_counter() - tick

        ctx.natural_patches.clear()  # connectivity's labelling of natural land, if degradation did not take it
        sensitivity_meta = {}
        if config.sensitivity is not None and sensitivity_reruns and results:
            tick = time.perf_counter()
            with progress("sensitivity reruns"):
                results, sensitivity_meta = _sensitivity(stack_xr, ctx, results)
            timings["sensitivity"] = time.perf_counter() - tick

        # 3. outputs: tables, GeoPackages, COGs, trends, manifest; then move everything into place
        tick = time.perf_counter()
        names = []
        for name, result in results.items():  # GeoPackages were written after each indicator
            outputs.write_csv(result.table, staging.path(f"{name}.csv"))
            names += [f"{name}.csv", f"{name}.gpkg"]
        if results:
            band = _stable_band(config, grid)
            trend = trends.trend_table(pd.concat([r.table for r in results.values()], ignore_index=True),
                                       years=config.years, periods=config.periods(), band=band)
            outputs.write_csv(trend, staging.path("trends.csv"))
            names.append("trends.csv")
        with progress("write cloud-optimised GeoTIFFs"):
            if cogs_done is None:
                outputs.to_cogs(cogs, threads=config.compute.workers)
            else:
                timings["cogs_overlapped"] = cogs_done.result()
            names += [dst.name for _, dst in cogs]
        timings["write"] = write_s + time.perf_counter() - tick
        manifest = _manifest(prep, area, started, timings, [(n, staging.path(n)) for n in names], resampling,
                             outside_code, not_computed, results)
        manifest["sensitivity"] = sensitivity_meta
        if results:
            manifest["trends"] = {"relative_tolerance_pct": band.relative_tolerance_pct,
                                  "mapping_unit_ha": band.mapping_unit_ha}
        outputs.write_json(manifest, staging.path("manifest.json"))
        files = staging.commit([*names, "manifest.json"])
    return RunResult(prep, results, files, manifest, timings)


def _timed(function: Callable, *args, **kwargs) -> float:
    """Call ``function``; return the seconds it took."""
    tick = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - tick


def _sensitivity(stack_xr, ctx: Context, results: dict[str, IndicatorResult]):
    """Rerun the affected indicators once per parameter variant; add value_lo/value_hi to their tables."""
    config = ctx.config
    reruns: dict[str, dict[str, pd.DataFrame]] = {name: {} for name in results}
    skipped = []
    for variant in sensitivity.variants(config, config.sensitivity, ctx.grid.pixel_area_ha):
        variant_ctx = dataclasses.replace(ctx, config=variant.config, features=False)  # their tables only
        for name in variant.indicators:
            if name not in results:
                continue
            try:
                reruns[name][variant.label] = REGISTRY[name].compute(stack_xr, variant_ctx).table
            except ConfigError as exc:  # e.g. a wider edge depth than the chunk halo allows
                skipped.append({"indicator": name, "variant": variant.label, "reason": str(exc)})
        variant_ctx.natural_patches.clear()  # a variant's labelling that its degradation did not take
        cluster.release_memory()  # full collections wait for the stage ends (full_collections_at_stage_ends)
    updated = {name: dataclasses.replace(result, table=sensitivity.envelope(result.table, list(reruns[name].values())))
               if reruns[name] else result for name, result in results.items()}
    meta = {"variants": {name: list(tables) for name, tables in reruns.items() if tables},
            "rows_moved": {name: sensitivity.moved_by(results[name].table, tables)
                           for name, tables in reruns.items() if tables},
            "skipped": skipped}
    return updated, meta


def _stable_band(config: LandscapeConfig, grid) -> trends.StableBand:
    """Stable band of trends.csv: the configured relative tolerance and the minimum mapping unit (at least a pixel)."""
    conversion = config.indicators.conversion
    unit = max(grid.pixel_area_ha, conversion.min_mapping_unit_ha if conversion else 0.0)
    return trends.StableBand(config.trends.relative_tolerance_pct, unit)


@dataclass(eq=False)
class AlignGraph:
    """The align stage as lazy dask arrays, built without computing anything (tests/integration/test_laziness.py).

    Every array has the grid's chunks (one task per chunk, chunks outside the boundary read nothing)."""

    codes: da.Array  # (year, y, x) product codes on the grid; outside_code outside the boundary
    faces: dict[str, da.Array]  # zone layer -> (y, x) face ids in the smallest unsigned dtype, rasterised per chunk
    histogram: da.Array  # (year, code) pixel counts
    tiled: list[Path]  # aligned years, written to the staging folder (the COGs are made from them)
    face_files: dict[str, Path]  # face ids, written beside them (read back by the indicators, then discarded)
    outside_code: int


def align_graph(prep: Prepared, staging: outputs.Staging) -> AlignGraph:
    """Build (not compute) the aligned land cover of every year and the face ids of every zone layer."""
    config, grid, legend = prep.config, prep.grid, prep.legend
    bands = [prep.bands[y] for y in config.years]
    dtype = np.result_type(*[np.dtype(b.dtype) for b in bands])
    outside_code = legend.outside_code(dtype)
    codes = align.aligned_stack(grid, prep.boundary, bands, resampling=config.grid.resampling,
                                outside_code=outside_code, unmapped_code=legend.unmapped_code,
                                legend_path=str(legend.path))
    faces = {z.name: z.face_ids(grid) for z in prep.zones}
    return AlignGraph(codes, faces, align.code_histogram(codes, size=int(np.iinfo(dtype).max) + 1),
                      [staging.path(f".tiled_landcover_{y}.tif") for y in config.years],
                      {name: staging.path(f".faces_{i}.tif") for i, name in enumerate(faces)}, outside_code)


def _align_landcover(prep: Prepared, staging: outputs.Staging, progress, client=None):
    """Align every year and rasterise every zone layer in one pass, write them, count codes; check codes; return
    the lazy class indices and face ids the indicators read: (stack, faces, inside px, tiled paths, resampling
    per year, outside code).

    Dask's local schedulers write the rasters from the tasks and read them back chunk by chunk (each indicator
    pass then decodes a tile instead of reprojecting and rasterising again). On a dask.distributed cluster the
    aligned codes and face ids are persisted in the workers' memory (1 byte per pixel and year, plus 1-2 bytes
    per pixel and zone layer) and only the land cover comes back here to be written."""
    config, grid, legend = prep.config, prep.grid, prep.legend
    years = config.years
    bands = [prep.bands[y] for y in years]
    graph = align_graph(prep, staging)
    outside_code, dtype = graph.outside_code, graph.codes.dtype
    colormap = _colormap(legend) if dtype.itemsize <= 2 else None
    n_codes = int(np.iinfo(dtype).max) + 1
    in_flight = 2 * config.compute.workers * config.compute.threads_per_worker
    with progress("align land cover"):
        if client is not None:
            codes, *faces = client.persist([graph.codes, *graph.faces.values()])
            face_ids = dict(zip(graph.faces, faces, strict=True))
            datasets = outputs.open_rasters(graph.tiled, grid, dtype=dtype.name, nodata=outside_code, colormap=colormap)
            try:
                counts = outputs.write_gathered(codes, datasets, count_codes=n_codes, in_flight=in_flight)
            finally:
                for d in datasets:
                    d.close()
        else:
            counts = _write_local(graph, grid, colormap, in_flight=in_flight, gathered=config.compute.scheduler == "processes")
            codes = None
            face_ids = {name: local.lazy_raster(path, shape=grid.shape, chunks=grid.chunks, dtype=graph.faces[name].dtype.name)
                        for name, path in graph.face_files.items()}
    for year, band, year_counts in zip(years, bands, counts, strict=True):
        legend.check_codes(year_counts, source=f"{band.path} (band {band.band}, year {year})", outside_code=outside_code)
    inside_px = int(counts[0].sum() - counts[0][outside_code])
    lut = legend.lookup_table(dtype, outside_code=outside_code)
    layers = list(codes) if codes is not None else [
        local.lazy_raster(p, shape=grid.shape, chunks=grid.chunks, dtype=dtype.name) for p in graph.tiled]
    # one year per chunk: a step that takes one year reads only that year; steps that need every year of a
    # chunk at once (conversion counts, mining) merge them themselves
    classes = da.stack([layer.map_blocks(_classify, lut=lut, dtype=lut.dtype) for layer in layers])
    stack_xr = xr.DataArray(classes, dims=("year", "y", "x"), coords={"year": years}, name="class_index")
    resampling = {y: align.choose_resampling(config.grid.resampling, grid, b) for y, b in zip(years, bands, strict=True)}
    return stack_xr, face_ids, inside_px, graph.tiled, resampling, outside_code


def _write_local(graph: AlignGraph, grid, colormap, *, in_flight: int, gathered: bool) -> np.ndarray:
    """Write the aligned years and face ids to the staging folder on dask's local schedulers; return the code
    counts. Threads: each task writes its block (da.store); processes: blocks come back here (write_gathered)."""
    layers = [(graph.codes, graph.tiled, graph.outside_code, colormap)]
    layers += [(f[np.newaxis], [graph.face_files[name]], None, None) for name, f in graph.faces.items()]
    if gathered:
        counts = None
        for i, (stack, paths, nodata, cmap) in enumerate(layers):
            datasets = outputs.open_rasters(paths, grid, dtype=stack.dtype.name, nodata=nodata, colormap=cmap)
            try:
                written = outputs.write_gathered(stack, datasets, in_flight=in_flight,
                                                 count_codes=graph.histogram.shape[1] if i == 0 else None)
            finally:
                for d in datasets:
                    d.close()
            counts = written if i == 0 else counts
        return counts
    stores, datasets = [], []
    try:
        for stack, paths, nodata, cmap in layers:
            store, opened = outputs.store_rasters(stack, paths, grid, nodata=nodata, colormap=cmap)
            stores.append(store)
            datasets += opened
        *_, counts = _compute_settled(*stores, graph.histogram)
    finally:
        for d in datasets:
            d.close()
    return counts


def _compute_settled(*collections):
    """``dask.compute`` whose tasks have all stopped when it returns or raises. When one task fails (a bad class
    code found while aligning), the threaded scheduler raises at once while the others still write into the open
    rasters; closing those under them crashed the process (CPLDestroyMutex, exit -11) instead of printing the
    error. A pool of our own is shut down first: queued tasks are cancelled, running ones finish."""
    if dask.config.get("scheduler", None) not in (None, "threads", "threading"):  # None: dask arrays' default, threads
        return dask.compute(*collections)
    pool = ThreadPoolExecutor(dask.config.get("num_workers", None) or os.cpu_count() or 1)
    try:
        return dask.compute(*collections, pool=pool)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _classify(block: np.ndarray, *, lut: np.ndarray) -> np.ndarray:
    return kernels.lookup(lut, block)


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
        "fetch": fetch_record(prep.config, prep.root),  # fetch_manifest.json of Earth Engine land cover, if any
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


