"""The pipeline's stages in order: prepare (read and check inputs, build the grid), align, check codes and
areas, compute indicators, write outputs atomically (DESIGN.md §1).

``validate`` stops after the checks that need no indicator computation; ``run`` does everything.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import shapely
import xarray as xr
from pyproj import CRS, Geod, Transformer
from rasterio.env import set_gdal_config
from rasterio.features import geometry_mask
from rasterio.windows import Window, from_bounds
from rasterio.windows import transform as window_transform

from pipeline import __version__, align, outputs
from pipeline import legend as legend_mod
from pipeline.config import LandscapeConfig, legends_dir, load_landscape, project_root
from pipeline.errors import AreaCheckError, ConfigError, SourceError
from pipeline.grid import LandscapeGrid, build_grid
from pipeline.indicators import REGISTRY
from pipeline.indicators.base import Context, IndicatorResult
from pipeline.indicators.mining import OUTSIDE_ZONES
from pipeline.legend import Legend
from pipeline.sources import local
from pipeline.sources.layers import load_layers
from pipeline.zones import LANDSCAPE, ZoneLayer, build_zone_layer, landscape_layer

AREA_TOLERANCE_EDGE_FRACTION = 0.5  # tolerance = this x perimeter x pixel size (edge-pixel rasterisation error)


@dataclass(eq=False)
class Prepared:
    """Inputs read and checked, and the grid built; nothing computed yet."""

    config: LandscapeConfig
    config_path: Path
    root: Path
    legend: Legend
    boundary: shapely.Geometry  # in grid CRS
    boundary_lonlat: shapely.Geometry
    boundary_notes: list[str]
    bands: dict[int, local.RasterBand]
    grid: LandscapeGrid
    zones: tuple[ZoneLayer, ...]
    input_files: list[tuple[str, Path]] = field(default_factory=list)  # (role, path)
    vectors: dict = field(default_factory=dict)  # auxiliary layers in the grid CRS (sources/layers.py)
    landcover_missing: str | None = None  # why there is no land cover (only the mining footprint can run)

    @property
    def out_dir(self) -> Path:
        return self.root / "data" / "processed" / self.config.name


@dataclass(eq=False)
class RunResult:
    prepared: Prepared
    results: dict[str, IndicatorResult]
    files: list[Path]
    manifest: dict
    timings_s: dict[str, float]


def _resolve(root: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else root / p


def _vector_files(path: Path) -> list[Path]:
    """A vector file and its sidecars (shapefile parts) for checksums."""
    if path.suffix.lower() == ".shp":
        return sorted(p for p in path.parent.glob(path.stem + ".*") if p.suffix.lower() in {".shp", ".shx", ".dbf", ".prj", ".cpg"})
    return [path]


def _to_crs(geom: shapely.Geometry, src: CRS, dst: CRS | str) -> shapely.Geometry:
    transformer = Transformer.from_crs(src, dst, always_xy=True)
    return shapely.transform(geom, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))


def prepare(config_path: Path, *, chunk_px: int | None = None) -> Prepared:
    """Read the config, legend, boundary, land-cover metadata and zones; build the grid. Computes nothing."""
    config = load_landscape(config_path)
    root = project_root(config_path)
    legend = legend_mod.load(config.landcover.legend, legends_dir(root))
    boundary_path = _resolve(root, config.boundary)
    boundary, boundary_crs, notes = local.read_boundary(boundary_path, layer=config.boundary_layer)
    inputs: list[tuple[str, Path]] = [("config", config_path), ("legend", legend.path)]
    inputs += [("boundary", p) for p in _vector_files(boundary_path)]

    bands, missing_note = _landcover_bands(config, root)
    inputs += [(f"landcover_{y}", Path(b.path)) for y, b in bands.items()]
    if bands:
        first = bands[config.years[0]]
        _check_overlap(boundary, boundary_crs, boundary_path, first)
        source = {"source_crs": first.crs, "source_transform": first.transform, "source_shape": first.shape}
    else:
        source = {"source_crs": None, "source_transform": None, "source_shape": None}
    grid = build_grid(boundary, boundary_crs, crs_setting=config.grid.crs, resolution_m=config.grid.resolution_m,
                      chunk_px=chunk_px or config.grid.chunk_px, **source)
    _check_halos(config, grid, config_path)
    boundary_grid = _to_crs(boundary, boundary_crs, grid.crs)
    zones = [landscape_layer(config.name, boundary_grid)]
    for name, zone_cfg in config.zones.items():
        zone_path = _resolve(root, zone_cfg.path)
        frame = local.read_vector(zone_path, layer=zone_cfg.layer, where=zone_cfg.where, what=f"zones.{name}")
        if zone_cfg.id_field not in frame.columns:
            raise SourceError(
                f"{zone_path}: zones.{name}.id_field {zone_cfg.id_field!r} is not a field of the layer; "
                f"fields: {', '.join(c for c in frame.columns if c != 'geometry')}"
            )
        zones.append(build_zone_layer(name, frame, zone_cfg.id_field, boundary_grid, grid.crs))
        inputs += [(f"zones.{name}", p) for p in _vector_files(zone_path)]
    vectors, vector_inputs = load_layers(config, lambda p: _resolve(root, p), grid.crs, boundary_grid)
    inputs += vector_inputs
    return Prepared(config, config_path, root, legend, boundary_grid, _to_crs(boundary, boundary_crs, "EPSG:4326"),
                    notes, bands, grid, tuple(zones), inputs, vectors, missing_note)


def _check_halos(config: LandscapeConfig, grid: LandscapeGrid, config_path: Path) -> None:
    """Neighbourhood distances are computed per chunk with a halo: the halo must fit in a chunk."""
    conn = config.indicators.connectivity
    if conn is not None:
        from pipeline.indicators.connectivity import core_depth_px

        halo = core_depth_px(conn.edge_depth_m, grid.resolution_m)
        if halo > grid.chunk_px:
            raise ConfigError(
                f"{config_path}: indicators.connectivity.edge_depth_m {conn.edge_depth_m:g} needs a halo of {halo} px, "
                f"wider than grid.chunk_px {grid.chunk_px}; raise grid.chunk_px or lower edge_depth_m"
            )


def _landcover_bands(config: LandscapeConfig, root: Path) -> tuple[dict[int, local.RasterBand], str | None]:
    """The land-cover band of every year, or ({}, why) when Earth Engine land cover is not fetched yet and
    the mining footprint can still be computed from the shipped mining layers."""
    lc = config.landcover
    path = _resolve(root, lc.path)
    if lc.source == "earthengine":
        missing = [str(path).replace("{year}", str(y)) for y in config.years
                   if not Path(str(path).replace("{year}", str(y))).exists()]
        if missing:
            note = (
                f"land cover for landscape {config.name!r} is not on disk: missing {', '.join(missing)}. "
                f"It comes from Earth Engine ({config.landcover.legend}): run `make fetch landscape={config.name}` "
                "once the fetch stage exists (it is not built yet), or put GeoTIFFs at those paths"
            )
            if config.indicators.mining is not None and config.mining_layers:
                return {}, note
            raise SourceError(note)
    band_of = lc.band_per_year.band if lc.band_per_year else None
    return local.raster_bands(path, years=config.years, band_of=band_of,
                              hint="check landcover.path and years in the landscape config"), None


def _check_overlap(boundary: shapely.Geometry, boundary_crs: CRS, boundary_path: Path, band: local.RasterBand) -> None:
    in_source = _to_crs(boundary, boundary_crs, band.crs)
    left, top = band.transform @ (0, 0)
    right, bottom = band.transform @ (band.shape[1], band.shape[0])
    footprint = shapely.box(min(left, right), min(top, bottom), max(left, right), max(top, bottom))
    if not in_source.intersects(footprint):
        raise SourceError(
            f"{boundary_path}: the boundary does not overlap the land cover {band.path} "
            f"(boundary bounds {tuple(round(v) for v in in_source.bounds)} vs raster bounds "
            f"{tuple(round(v) for v in footprint.bounds)} in {band.crs.to_string()}); check both files' CRS"
        )
    outside = 1 - in_source.intersection(footprint).area / in_source.area
    if outside > 1e-3:
        warnings.warn(f"{outside:.1%} of the boundary lies beyond {band.path}; that area is reported as unmapped_ha",
                      stacklevel=2)


def scan_codes(prep: Prepared, *, window_px: int = 2048) -> None:
    """Check every code inside the boundary of each source band against the legend (window by window)."""
    for year, band in prep.bands.items():
        boundary = _to_crs(prep.boundary_lonlat, CRS.from_epsg(4326), band.crs)
        full = Window(0, 0, band.shape[1], band.shape[0])
        raw = from_bounds(*boundary.bounds, transform=band.transform)
        col0, row0 = math.floor(raw.col_off), math.floor(raw.row_off)
        window = Window(col0, row0, math.ceil(raw.col_off + raw.width) - col0,
                        math.ceil(raw.row_off + raw.height) - row0).intersection(full)
        size = int(np.iinfo(np.dtype(band.dtype)).max) + 1
        histogram = np.zeros(size, dtype=np.int64)
        for r in range(int(window.row_off), int(window.row_off + window.height), window_px):
            for c in range(int(window.col_off), int(window.col_off + window.width), window_px):
                w = Window(c, r, min(window_px, window.col_off + window.width - c), min(window_px, window.row_off + window.height - r))
                data = local.read_window(band.path, [band.band], w)[0]
                inside = geometry_mask([boundary], out_shape=data.shape, transform=window_transform(w, band.transform),
                                       invert=True)
                histogram += np.bincount(data[inside].ravel(), minlength=size)
        extra = (int(band.nodata),) if band.nodata is not None else ()
        prep.legend.check_codes(histogram, source=f"{band.path} (band {band.band}, year {year})",
                                outside_code=-1, extra_nodata=extra)


def area_check(prep: Prepared, inside_px: int) -> dict:
    """Boundary area on the grid vs its geodesic area (pyproj.Geod, WGS84); raises when beyond tolerance."""
    geodesic_m2, perimeter_m = Geod(ellps="WGS84").geometry_area_perimeter(prep.boundary_lonlat)
    geodesic_ha = abs(geodesic_m2) / 10_000
    grid_ha = inside_px * prep.grid.pixel_area_ha
    tolerance_ha = AREA_TOLERANCE_EDGE_FRACTION * perimeter_m * prep.grid.resolution_m / 10_000
    check = {
        "boundary_geodesic_ha": geodesic_ha, "boundary_perimeter_m": perimeter_m, "grid_inside_ha": grid_ha,
        "grid_inside_px": int(inside_px), "difference_ha": grid_ha - geodesic_ha,
        "difference_pct": 100 * (grid_ha - geodesic_ha) / geodesic_ha, "tolerance_ha": tolerance_ha,
        "passed": abs(grid_ha - geodesic_ha) <= tolerance_ha,
    }
    if not check["passed"]:
        raise AreaCheckError(
            f"area inside the boundary on the grid is {grid_ha:,.1f} ha but the boundary's geodesic area is "
            f"{geodesic_ha:,.1f} ha (difference {grid_ha - geodesic_ha:+,.1f} ha, tolerance {tolerance_ha:,.1f} ha); "
            "check the grid CRS and resolution in the landscape config"
        )
    return check


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
                      face_ids={z.name: z.face_ids(grid) for z in prep.zones}, vectors=prep.vectors)
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
                             outside_code, not_computed)
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
              resampling: dict[int, str], outside_code: int | None, not_computed: list[dict]) -> dict:
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
        "outputs": [{"file": name, **outputs.file_record(path)} for name, path in outputs_],
        "packages": outputs.package_versions(),
        "zones": {z.name: {"zones": len(z.zone_names), "faces": z.n_faces - 1} for z in prep.zones if z.name != LANDSCAPE},
        "python": sys.version.split()[0],
    }


def validate(config_path: Path) -> Prepared:
    """Every check that needs no indicator computation (see `python -m pipeline validate --help`)."""
    prep = prepare(config_path)
    config = prep.config
    if config.rivers is not None:
        local.read_vector(_resolve(prep.root, config.rivers.path), layer=config.rivers.layer, what="rivers")
    for i, layer in enumerate(config.mining_layers):
        frame = local.read_vector(_resolve(prep.root, layer.path), layer=layer.layer, what=f"mining_layers[{i}]")
        if layer.year_field not in frame.columns:
            raise SourceError(f"{layer.path}: mining_layers[{i}].year_field {layer.year_field!r} is not a field of the layer")
    scan_codes(prep)
    return prep
