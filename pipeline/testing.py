"""Small helpers to run kernels and indicators on hand-made arrays (tests, notebooks, docs).

Nothing here reads files; the arrays you pass are the whole landscape.
"""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import geopandas as gpd
import numpy as np
import shapely
import xarray as xr
from affine import Affine
from pyproj import CRS

from pipeline.config import LandscapeConfig, LegendConfig
from pipeline.grid import LandscapeGrid
from pipeline.indicators.base import Context
from pipeline.legend import Legend
from pipeline.zones import ZoneLayer, build_zone_layer, landscape_layer

EQUAL_AREA_CRS = CRS.from_epsg(6933)  # WGS 84 / NSIDC EASE-Grid 2.0 Global: cylindrical equal-area

SMALL_LEGEND = {
    "product": "hand-made test legend",
    "nodata": [27],
    "classes": {
        3: {"name": "Forest", "natural": True, "ecosystem": "forest", "group": "tree_covered", "condition": 2},
        4: {"name": "Open forest", "natural": True, "ecosystem": "forest", "group": "tree_covered", "condition": 1},
        12: {"name": "Grassland", "natural": True, "ecosystem": "savanna_grassland", "group": "grassland", "condition": 1},
        15: {"name": "Pasture", "natural": False, "group": "grassland"},
        30: {"name": "Mining", "natural": False, "mining": True, "group": "artificial"},
        33: {"name": "River", "natural": True, "ecosystem": "water", "water": True, "group": "water_body", "condition": 1},
    },
}


LAEA_AT_ORIGIN = CRS.from_proj4("+proj=laea +lat_0=0 +lon_0=0 +datum=WGS84 +units=m +no_defs")


def make_grid(shape: tuple[int, int], *, res_m: float = 30.0, chunk_px: int = 2048, crs: CRS = EQUAL_AREA_CRS) -> LandscapeGrid:
    """A north-up equal-area grid of ``shape`` pixels of ``res_m`` metres, origin at (0, 0) top-left.

    Use ``crs=LAEA_AT_ORIGIN`` where distances must be true too (near the origin LAEA's scale is 1)."""
    return LandscapeGrid(crs, Affine(res_m, 0, 0, 0, -res_m, 0), shape, chunk_px)


def make_legend(classes: dict | None = None) -> Legend:
    config = LegendConfig.model_validate(SMALL_LEGEND if classes is None else {**SMALL_LEGEND, "classes": classes})
    return Legend.from_config("test", Path("test.yaml"), config)


def make_config(years: list[int], **overrides) -> LandscapeConfig:
    data = {
        "name": "test", "boundary": "boundary.gpkg", "years": years,
        "landcover": {"legend": "test", "path": "lc_{year}.tif"},
        "indicators": {"conversion": {"min_mapping_unit_ha": 0}},
    } | overrides
    return LandscapeConfig.model_validate(data)


def pixel_box(grid: LandscapeGrid, rows: slice, cols: slice) -> shapely.Polygon:
    """The polygon covering pixel rows/cols (half-open slices) of the grid."""
    t = grid.transform
    return shapely.box(t.c + cols.start * t.a, t.f + rows.stop * t.e, t.c + cols.stop * t.a, t.f + rows.start * t.e)


def make_context(
    grid: LandscapeGrid,
    legend: Legend,
    config: LandscapeConfig,
    *,
    zones: dict[str, list[tuple[str, shapely.Geometry]]] | None = None,
    vectors: dict[str, gpd.GeoDataFrame] | None = None,
) -> Context:
    """A Context whose boundary is the whole grid; ``zones`` maps layer name -> [(zone id, polygon)]."""
    left, bottom, right, top = grid.bounds
    boundary = shapely.box(left, bottom, right, top)
    layers: list[ZoneLayer] = [landscape_layer(config.name, boundary)]
    for name, items in (zones or {}).items():
        frame = gpd.GeoDataFrame({"id": [i for i, _ in items]}, geometry=[g for _, g in items], crs=grid.crs)
        layers.append(build_zone_layer(name, frame, "id", boundary, grid.crs))
    return Context(grid=grid, legend=legend, config=config, zones=tuple(layers),
                   face_ids={z.name: z.face_ids(grid) for z in layers}, vectors=vectors or {})


def make_stack(codes_by_year: dict[int, np.ndarray], legend: Legend, grid: LandscapeGrid,
               *, outside_code: int = 0) -> xr.DataArray:
    """Product codes per year -> the class-index stack indicators take, chunked like the grid."""
    years = sorted(codes_by_year)
    codes = np.stack([np.asarray(codes_by_year[y]) for y in years])
    lut = legend.lookup_table(codes.dtype, outside_code=outside_code)
    data = da.from_array(lut[codes], chunks=(len(years), *grid.chunks))
    return xr.DataArray(data, dims=("year", "y", "x"), coords={"year": years})
