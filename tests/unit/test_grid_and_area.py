"""Grid choice and true areas (DESIGN.md §2): equal-area pixels, geodesic references, refused geographic grids."""

import math
import warnings

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine
from pyproj import CRS, Geod, Proj

from pipeline.align import boundary_mask
from pipeline.errors import GridError
from pipeline.grid import LandscapeGrid, build_grid, laea_crs

WGS84 = CRS.from_epsg(4326)
ONE_DEGREE_CELL_M2 = 12_308_778_361  # 1° x 1° at the equator, pyproj Geod(ellps="WGS84")


def _grid(boundary, crs, *, setting="auto", res=500.0, src_crs=WGS84, src_transform=None):
    return build_grid(boundary, crs, crs_setting=setting, resolution_m=res, chunk_px=256, source_crs=src_crs,
                      source_transform=src_transform or Affine(0.01, 0, 0, 0, -0.01, 1), source_shape=(2000, 2000))


def test_geodesic_reference_value():
    area, perimeter = Geod(ellps="WGS84").geometry_area_perimeter(shapely.box(0, 0, 1, 1))
    assert abs(area) == pytest.approx(ONE_DEGREE_CELL_M2, abs=1)


def test_one_degree_cell_on_auto_grid_matches_geodesic_area():
    cell = shapely.box(0, 0, 1, 1)
    grid = _grid(cell, WGS84)
    assert grid.areal_scale == 1.0 and "Lambert Azimuthal Equal Area" in grid.crs.to_wkt().replace("_", " ")
    projected = gpd.GeoSeries([cell], crs=WGS84).to_crs(grid.crs).iloc[0]
    inside = boundary_mask(projected, grid.transform, grid.shape)
    area_m2 = inside.sum() * grid.pixel_area_ha * 10_000
    perimeter = Geod(ellps="WGS84").geometry_area_perimeter(cell)[1]
    assert abs(area_m2 - ONE_DEGREE_CELL_M2) < 0.5 * perimeter * grid.resolution_m  # edge-pixel tolerance
    assert abs(area_m2 / ONE_DEGREE_CELL_M2 - 1) < 1e-3


def test_auto_grid_is_aligned_and_covers_the_boundary():
    boundary = shapely.box(-51.8, 2.1, -51.4, 2.5)
    grid = _grid(boundary, WGS84, res=30)
    assert grid.transform.a == 30 and grid.transform.e == -30
    assert grid.transform.c % 30 == 0 and grid.transform.f % 30 == 0
    projected = gpd.GeoSeries([boundary], crs=WGS84).to_crs(grid.crs).iloc[0]
    assert shapely.box(*grid.bounds).contains(projected)
    assert grid.pixel_area_ha == pytest.approx(0.09)


def test_laea_centre_is_rounded_for_stable_reruns():
    assert laea_crs(-51.6312, 2.3187) == laea_crs(-51.6349, 2.3151)


def test_native_utm_grid_corrects_areas_by_areal_scale():
    """UTM is conformal, not equal-area: the nominal 900 m² pixel is divided by the areal scale factor."""
    utm = CRS.from_epsg(31976)
    boundary = shapely.box(420_000, 240_000, 440_000, 270_000)
    with pytest.warns(UserWarning, match="not equal-area"):
        grid = _grid(boundary, utm, setting="native", src_crs=utm,
                     src_transform=Affine(30, 0, 400_000, 0, -30, 280_000), res=None)
    lon, lat = -51.63, 2.32
    expected_scale = Proj(utm).get_factors(lon, lat).areal_scale
    assert grid.areal_scale == pytest.approx(expected_scale, rel=2e-4)
    assert grid.pixel_area_ha == pytest.approx(0.09 / grid.areal_scale)
    assert grid.shape == (1001, 668)  # rows 333..1334, cols 666..1334 of the source: whole pixels covering the box


@pytest.mark.parametrize("setting", ["EPSG:4326", "native"])
def test_geographic_grids_are_refused(setting):
    with pytest.raises(GridError, match="geographic"):
        _grid(shapely.box(0, 0, 1, 1), WGS84, setting=setting)


def test_geographic_grid_object_is_refused():
    with pytest.raises(GridError, match="pixel counts are not areas"):
        LandscapeGrid(WGS84, Affine(0.001, 0, 0, 0, -0.001, 0), (10, 10), 16)


def test_equal_area_crs_gives_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grid = _grid(shapely.box(-52, 2, -51, 3), WGS84, setting="ESRI:102033")  # South America Albers
    assert grid.areal_scale == 1.0


def test_lourenco_boundary_geodesic_area_by_hand():
    """The Lourenço boundary is a 256-gon of radius 20 km drawn in UTM 22N (PROVENANCE 2.4).

    Its planar area is n/2 · r² · sin(2π/n); the true area is that divided by UTM's areal scale factor
    there (pyproj get_factors). pyproj.Geod on the same polygon must agree.
    """
    boundary = gpd.read_file("data/raw/lourenco/lourenco_boundary.gpkg")
    planar = 256 / 2 * 20_000**2 * math.sin(2 * math.pi / 256)
    assert boundary.geometry.area.iloc[0] == pytest.approx(planar, rel=1e-5)
    scale = Proj(CRS.from_epsg(31976)).get_factors(-51.630871, 2.318514).areal_scale
    geodesic = abs(Geod(ellps="WGS84").geometry_area_perimeter(boundary.to_crs(4326).geometry.iloc[0])[0])
    assert geodesic == pytest.approx(planar / scale, rel=1e-4)
    assert geodesic / 10_000 == pytest.approx(125_736, abs=1)


def test_chunks_cover_the_grid_exactly():
    grid = LandscapeGrid(CRS.from_epsg(6933), Affine(30, 0, 0, 0, -30, 0), (1000, 701), 256)
    assert grid.chunks == ((256, 256, 256, 232), (256, 256, 189))
    tiles = list(grid.tiles())
    assert sum(t.height * t.width for t in tiles) == 1000 * 701
    assert np.all([grid.tile_transform(t.row_off, t.col_off).c == t.col_off * 30 for t in tiles])


@pytest.mark.parametrize("chunk_px", [1, 3, 7, 64])
def test_tile_pieces_rasterise_like_the_whole_polygons(chunk_px):
    """Rasterising each chunk's pieces (LandscapeGrid.tile_pieces) gives the pixels of rasterising the whole
    polygons: a river-like band with a hole, boxes sharing edges with chunk lines, a polygon outside the grid."""
    from rasterio.features import rasterize

    grid = LandscapeGrid(CRS.from_epsg(6933), Affine(30, 0, 1000, 0, -30, 5000), (20, 23), chunk_px)
    band = shapely.LineString([(1000, 4700), (1400, 4300), (1700, 4500)]).buffer(70, quad_segs=16)
    band = shapely.difference(band, shapely.box(1320, 4330, 1390, 4420))
    edge_box = shapely.box(1000 + 30 * 3, 5000 - 30 * 9, 1000 + 30 * 7, 5000 - 30 * 3)  # on pixel (and chunk) lines
    polygons = [band, edge_box, shapely.box(9000, 9000, 9100, 9100)]
    whole = rasterize([(g, i + 1) for i, g in enumerate(polygons)], out_shape=grid.shape, transform=grid.transform)
    pieced = np.zeros(grid.shape, whole.dtype)
    for tile, pieces in grid.tile_pieces(polygons):
        assert all(shapely.get_type_id(g) in (3, 6) for _, g in pieces)  # never a line a rasteriser would burn
        if pieces:
            pieced[tile.row_off:tile.row_off + tile.height, tile.col_off:tile.col_off + tile.width] = rasterize(
                [(g, i + 1) for i, g in pieces], out_shape=(tile.height, tile.width),
                transform=grid.tile_transform(tile.row_off, tile.col_off))
    np.testing.assert_array_equal(pieced, whole)
    assert (whole == 1).sum() > 20 and (whole == 2).sum() == 24


@pytest.mark.parametrize("chunk_px", [1, 3, 7, 64])
def test_covers_tile_only_when_rasterising_burns_every_pixel(chunk_px):
    """covers_tile stands in for rasterising a polygon that burns a whole chunk: whenever it says so, rasterize
    (pixel-centre rule) burns every pixel of the chunk; a centre on the polygon's edge is never assumed burnt."""
    from rasterio.features import rasterize

    grid = LandscapeGrid(CRS.from_epsg(6933), Affine(30, 0, 1000, 0, -30, 5000), (20, 23), chunk_px)
    disc = shapely.Point(1300, 4700).buffer(260, quad_segs=32)
    on_centres = shapely.box(1000 + 15, 5000 - 30 * 20, 1000 + 30 * 23, 5000)  # left edge through pixel centres
    covered = 0
    for geom in (disc, on_centres, shapely.box(1000, 4400, 1690, 5000)):
        for tile in grid.tiles():
            burnt = rasterize([(geom, 1)], out_shape=(tile.height, tile.width),
                              transform=grid.tile_transform(tile.row_off, tile.col_off))
            if grid.covers_tile(geom, tile):
                covered += 1
                assert burnt.all()
            if geom is on_centres and tile.col_off == 0:
                assert not grid.covers_tile(geom, tile)
    assert covered > 0
    assert grid.covers_tile(grid.tile_box(next(iter(grid.tiles()))), next(iter(grid.tiles())))
