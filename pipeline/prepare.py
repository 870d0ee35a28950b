"""Prepare a run: read the config, legend, boundary, zones and input metadata, build the grid, and check
everything that needs no indicator computation (DESIGN.md §1). ``validate`` is this stage alone.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
from pyproj import CRS, Geod, Transformer
from rasterio.features import geometry_mask
from rasterio.windows import Window, from_bounds
from rasterio.windows import transform as window_transform

from pipeline import legend as legend_mod
from pipeline.config import LandscapeConfig, legends_dir, load_landscape, project_root
from pipeline.errors import AreaCheckError, ConfigError, SourceError
from pipeline.grid import LandscapeGrid, build_grid
from pipeline.legend import Legend
from pipeline.sources import local
from pipeline.sources.layers import load_layers
from pipeline.zones import ZoneLayer, build_zone_layer, landscape_layer

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
    mask_rasters: dict = field(default_factory=dict)  # "mining:<name>" / "degradation:<name>" -> (config, {year: band})

    @property
    def out_dir(self) -> Path:
        return self.root / "data" / "processed" / self.config.name


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
    mask_rasters = _mask_raster_bands(config, root)
    inputs += [(f"{key}.{y}", Path(b.path)) for key, (_, bands_) in mask_rasters.items() for y, b in bands_.items()]
    return Prepared(config, config_path, root, legend, boundary_grid, _to_crs(boundary, boundary_crs, "EPSG:4326"),
                    notes, bands, grid, tuple(zones), inputs, vectors, missing_note, mask_rasters)


def _mask_raster_bands(config: LandscapeConfig, root: Path) -> dict[str, tuple]:
    """Yearly mask rasters (mining_rasters, degradation.external): the band of every configured year on disk
    (years without one are unobserved). Key "mining:<name>" or "degradation:<name>" -> (config, {year: band})."""
    sources = [(f"mining:{c.name}", f"mining_rasters {c.name!r}", c) for c in config.mining_rasters]
    external = config.indicators.degradation.external if config.indicators.degradation else None
    if external is not None:
        sources.append((f"degradation:{external.name}", "indicators.degradation.external", external))
    out = {}
    for key, what, cfg in sources:
        path = _resolve(root, cfg.path)
        band_of = cfg.band_per_year.band if cfg.band_per_year else None
        if band_of is None:
            years = [y for y in config.years if Path(str(path).replace("{year}", str(y))).exists()]
        else:
            if not path.exists():
                raise SourceError(f"{path}: {what} file not found")
            count = local.band_count(path)
            years = [y for y in config.years if (band_of(y) or 0) >= 1 and band_of(y) <= count]
        if not years:
            raise SourceError(f"{path}: {what} has no file or band for any of the years {config.years}")
        if key.startswith("degradation:") and "external" in config.indicators.degradation.rules:  # type: ignore[union-attr]
            needed = sorted({b for _, b in config.periods()} - set(years))
            if needed:
                raise SourceError(f"{path}: {what} has no file or band for {needed}, the end years of the periods; "
                                  "add them or remove 'external' from indicators.degradation.rules")
        out[key] = (cfg, local.raster_bands(path, years=years, band_of=band_of, hint=f"check {what}"))
    return out


def _check_halos(config: LandscapeConfig, grid: LandscapeGrid, config_path: Path) -> None:
    """Neighbourhood distances are computed per chunk with a halo: the halo must fit in a chunk."""
    deg = config.indicators.degradation
    if deg is not None:
        from pipeline.indicators.degradation import rule_halos

        halo = max(rule_halos(deg, grid.resolution_m))
        if halo > grid.chunk_px:
            raise ConfigError(
                f"{config_path}: indicators.degradation edge_depth_m/isolation_m need a halo of {halo} px, wider than "
                f"grid.chunk_px {grid.chunk_px}; raise grid.chunk_px or lower edge_depth_m / isolation_m"
            )
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
                "(needs an Earth Engine account, see the README), or put GeoTIFFs at those paths"
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
