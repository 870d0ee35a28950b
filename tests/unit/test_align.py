"""Alignment onto the grid: exact nearest, mode for coarser grids, per-chunk boundary, skipped chunks."""

from pathlib import Path

import dask
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from pyproj import CRS
from rasterio.warp import Resampling, reproject

from pipeline import align
from pipeline.grid import LandscapeGrid
from pipeline.sources import local

EA = CRS.from_epsg(6933)


def _write(path: Path, data: np.ndarray, transform: Affine, crs=EA, nodata=None) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[-1], height=data.shape[-2], count=data.shape[0],
                       dtype=data.dtype, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(data)
    return path


def _bands(path: Path, years=(2000,)):
    return list(local.raster_bands(path, years=list(years), band_of=lambda y: years.index(y) + 1, hint="").values())


def _no_compute(dsk, keys, **kwargs):
    raise AssertionError("the graph was computed while it was being built")


def test_same_grid_is_an_exact_copy(tmp_path):
    data = np.arange(1, 7 * 9 + 1, dtype=np.uint8).reshape(1, 7, 9)
    transform = Affine(30, 0, 300, 0, -30, 900)
    bands = _bands(_write(tmp_path / "a.tif", data, transform))
    grid = LandscapeGrid(EA, transform, (7, 9), 4)
    boundary = shapely.box(300, 900 - 7 * 30, 300 + 9 * 30, 900)
    stack = align.aligned_stack(grid, boundary, bands, resampling="nearest", outside_code=0, unmapped_code=27)
    assert stack.numblocks == (1, 2, 3)
    assert np.array_equal(stack.compute(), data)


def test_mode_resampling_with_ties_to_smallest_code(tmp_path):
    data = np.array([[[3, 3, 15, 30],
                      [3, 15, 30, 15],
                      [12, 12, 33, 33],
                      [15, 15, 12, 12]]], np.uint8)  # 2x2 blocks: 3 wins; 15 wins (15,30,30,15 tie -> 15); 12 vs 15 tie -> 12; 33 vs 12 tie -> 12
    bands = _bands(_write(tmp_path / "a.tif", data, Affine(10, 0, 0, 0, -10, 40)))
    grid = LandscapeGrid(EA, Affine(20, 0, 0, 0, -20, 40), (2, 2), 16)
    assert align.choose_resampling("auto", grid, bands[0]) == "mode"
    stack = align.aligned_stack(grid, shapely.box(0, 0, 40, 40), bands, resampling="auto", outside_code=0, unmapped_code=27)
    assert stack.compute()[0].tolist() == [[3, 15], [12, 12]]


def test_file_nodata_and_beyond_raster_become_unmapped_inside_and_outside_code_outside(tmp_path):
    data = np.array([[[3, 255], [3, 3]]], np.uint8)
    bands = _bands(_write(tmp_path / "a.tif", data, Affine(30, 0, 0, 0, -30, 60), nodata=255))
    grid = LandscapeGrid(EA, Affine(30, 0, 0, 0, -30, 60), (2, 3), 16)  # one column beyond the raster
    boundary = shapely.box(0, 0, 90, 60).difference(shapely.box(0, 0, 30, 30))  # bottom-left pixel outside
    out = align.aligned_stack(grid, boundary, bands, resampling="nearest", outside_code=0, unmapped_code=27).compute()
    assert out[0].tolist() == [[3, 27, 27], [0, 3, 27]]


def test_reprojection_matches_gdal_nearest_and_is_chunk_invariant(tmp_path):
    """Real land cover (Vila Nova, UTM 22N) onto an equal-area grid: exact pyproj mapping per pixel agrees
    with GDAL's nearest warp except where GDAL's approximate transformer picks a neighbour."""
    src_path = Path("tests/data/vilanova/mapbiomas_c8_vilanova_1985_2022.tif")
    bands = _bands(src_path)
    with rasterio.open(src_path) as src:
        src_crs, src_transform, source = src.crs, src.transform, src.read(1, window=((400, 700), (400, 700)))
        src_transform = src_transform @ Affine.translation(400, 400)
    grid_crs = CRS.from_proj4("+proj=laea +lat_0=0.4 +lon_0=-51.74 +datum=WGS84 +units=m")
    left, top = -4_000, 6_000
    grid = LandscapeGrid(grid_crs, Affine(30, 0, left, 0, -30, top), (200, 230), 64)
    boundary = shapely.box(*grid.bounds)
    a = align.aligned_stack(grid, boundary, bands, resampling="nearest", outside_code=0, unmapped_code=27).compute()
    b = align.aligned_stack(grid.with_chunks(37), boundary, bands, resampling="nearest", outside_code=0,
                            unmapped_code=27).compute()
    assert np.array_equal(a, b)
    gdal = np.zeros(grid.shape, np.uint8)
    reproject(source, gdal, src_transform=src_transform, src_crs=src_crs, dst_transform=grid.transform,
              dst_crs=grid_crs.to_wkt(), resampling=Resampling.nearest)
    covered = gdal != 0  # GDAL saw only the 300 x 300 px window; the pipeline reads the whole file
    assert covered.mean() > 0.5
    assert (a[0][covered] == gdal[covered]).mean() > 0.995


def test_chunks_outside_the_boundary_read_nothing(tmp_path, monkeypatch):
    data = np.full((1, 64, 64), 3, np.uint8)
    bands = _bands(_write(tmp_path / "a.tif", data, Affine(30, 0, 0, 0, -30, 64 * 30)))
    grid = LandscapeGrid(EA, Affine(30, 0, 0, 0, -30, 64 * 30), (64, 64), 16)
    boundary = shapely.box(0, 64 * 30 - 16 * 30, 16 * 30, 64 * 30)  # exactly the top-left chunk
    calls = []
    original = align.read_window
    monkeypatch.setattr(align, "read_window", lambda *a, **k: calls.append(a) or original(*a, **k))
    with dask.config.set(scheduler=_no_compute):
        stack = align.aligned_stack(grid, boundary, bands, resampling="nearest", outside_code=0, unmapped_code=27)
    out = stack.compute(scheduler="synchronous")
    assert len(calls) == 1
    assert (out[0, :16, :16] == 3).all() and (out[0, 16:, :] == 0).all() and (out[0, :, 16:] == 0).all()


def test_code_histogram_counts_per_year():
    import dask.array as da
    stack = da.from_array(np.array([[[0, 3], [3, 27]], [[30, 30], [3, 0]]], np.uint8), chunks=(2, 1, 1))
    counts = align.code_histogram(stack, size=256).compute()
    assert counts.shape == (2, 256)
    assert counts[0, [0, 3, 27]].tolist() == [1, 2, 1] and counts[1, [0, 3, 30]].tolist() == [1, 1, 2]


def test_mode_per_target_kernel():
    target = np.array([0, 0, 0, 1, 1, 2])
    codes = np.array([5, 7, 7, 9, 4, 2])
    assert align._mode_per_target(target, codes, 4, 27).tolist() == [7, 4, 2, 27]


@pytest.mark.parametrize("setting,expected", [("nearest", "nearest"), ("mode", "mode")])
def test_explicit_resampling_setting_is_kept(tmp_path, setting, expected):
    bands = _bands(_write(tmp_path / "a.tif", np.ones((1, 2, 2), np.uint8), Affine(30, 0, 0, 0, -30, 60)))
    grid = LandscapeGrid(EA, Affine(30, 0, 0, 0, -30, 60), (2, 2), 16)
    assert align.choose_resampling(setting, grid, bands[0]) == expected


@pytest.mark.parametrize("shift", [(0, 0), (-3, 5), (4, -2)])
def test_whole_pixel_shift_is_a_window_read_equal_to_mapping_every_centre(tmp_path, monkeypatch, shift):
    """The window-read fast path (same CRS and pixel size, origin on a source pixel corner) gives exactly the
    codes of the general path, with the grid partly beyond the raster, file nodata and a partial boundary."""
    rng = np.random.default_rng(3)
    data = rng.integers(1, 6, (2, 23, 29), dtype=np.uint8)
    data[0, 4, 4] = 9  # the file's nodata value
    transform = Affine(30, 0, 300, 0, -30, 900)
    bands = _bands(_write(tmp_path / "a.tif", data, transform, nodata=9), years=(2000, 2010))
    grid = LandscapeGrid(EA, transform @ Affine.translation(shift[1], shift[0]), (25, 27), 8)
    assert align.pixel_offset(EA, grid.tile_transform(8, 16), bands[0]) == (8 + shift[0], 16 + shift[1])
    left, bottom, right, top = grid.bounds
    boundary = shapely.Point((left + right) / 2, (bottom + top) / 2).buffer((right - left) * 0.45)
    kw = {"resampling": "nearest", "outside_code": 0, "unmapped_code": 27}
    fast = align.aligned_stack(grid, boundary, bands, **kw).compute(scheduler="synchronous")
    monkeypatch.setattr(align, "pixel_offset", lambda *a: None)
    general = align.aligned_stack(grid, boundary, bands, **kw).compute(scheduler="synchronous")
    assert np.array_equal(fast, general)
    assert {0, 27} <= set(np.unique(fast)) and (fast == 9).sum() == 0
