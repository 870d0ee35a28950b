"""Raster files: the land-cover COGs' own mode overviews (outputs.to_cog) and the open datasets each reading
thread keeps (sources.local.read_window)."""

import threading

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from pipeline import kernels, outputs
from pipeline.sources import local

RNG = np.random.default_rng(20261126)
CRS = "EPSG:6933"


def _write(path, data, nodata=0, colormap=None):
    profile = {**outputs.TIFF_PROFILE, "dtype": data.dtype.name, "width": data.shape[1], "height": data.shape[0],
               "crs": CRS, "transform": Affine(10, 0, 1000, 0, -10, 5000), "nodata": nodata}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        if colormap:
            dst.write_colormap(1, colormap)
    return path


def _clustered(shape, dtype=np.uint8):
    """Blocks of 1-9 classes with speckle and an outside (0) corner: ties and nodata in every overview level."""
    coarse = RNG.integers(1, 10, size=(shape[0] // 7 + 1, shape[1] // 7 + 1))
    codes = np.kron(coarse, np.ones((7, 7), int))[: shape[0], : shape[1]]
    speckle = RNG.random(shape) < 0.2
    codes[speckle] = RNG.integers(1, 10, size=int(speckle.sum()))
    codes[: shape[0] // 3, : shape[1] // 4] = 0
    return codes.astype(dtype)


def test_overview_shapes_halve_until_one_block():
    assert outputs.overview_shapes(24000, 24000) == [(12000, 12000), (6000, 6000), (3000, 3000), (1500, 1500),
                                                     (750, 750), (375, 375)]
    assert outputs.overview_shapes(1201, 700) == [(601, 350), (301, 175)]
    assert outputs.overview_shapes(512, 300) == []


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_cog_overviews_are_modes_of_the_level_below(tmp_path, dtype, monkeypatch):
    """Each overview level of the COG is kernels.mode_2x2 of the level below (nodata left out), whatever the
    window the overviews are made in; full resolution, nodata, colours and the COG layout are kept."""
    monkeypatch.setattr(outputs, "OVERVIEW_WINDOW_PX", 302)  # 16 windows of 300 px (2 levels: a multiple of 4)
    codes = _clustered((1201, 1103), dtype)
    colours = {1: (10, 120, 30, 255), 2: (200, 200, 0, 255)}
    source = _write(tmp_path / "tiled.tif", codes, colormap=colours)
    target = tmp_path / "landcover.tif"
    outputs.to_cog(source, target)
    with rasterio.open(target) as cog:
        assert cog.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert cog.overviews(1) == [2, 4] and cog.nodata == 0
        assert cog.colormap(1)[1] == colours[1]
        np.testing.assert_array_equal(cog.read(1), codes)
    level = codes
    for k in range(2):
        level = kernels.mode_2x2(level, 0)
        with rasterio.open(target, overview_level=k) as overview:
            np.testing.assert_array_equal(overview.read(1), level)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["landcover.tif", "tiled.tif"]  # no overview files left


def test_codes_wider_than_uint16_keep_gdal_mode_overviews(tmp_path):
    codes = _clustered((700, 600)).astype(np.uint32) * 70000
    outputs.to_cog(_write(tmp_path / "tiled.tif", codes), tmp_path / "landcover.tif")
    with rasterio.open(tmp_path / "landcover.tif") as cog:
        assert cog.overviews(1) == [2]
        np.testing.assert_array_equal(cog.read(1), codes)
        assert set(np.unique(cog.read(1, out_shape=(350, 300)))) <= set(np.unique(codes))


def test_reading_threads_keep_files_open_until_closed_and_see_rewrites(tmp_path):
    path = str(_write(tmp_path / "a.tif", np.full((64, 64), 3, np.uint8)))
    window = Window(0, 0, 8, 8)
    with local.closing_open_rasters():
        assert local.read_window(path, [1], window)[0, 0, 0] == 3
        first, _ = local._open_for_reading(path)
        assert local._open_for_reading(path)[0] is first  # kept open
        _write(tmp_path / "a.tif", np.full((64, 64), 5, np.uint8))  # the same path rewritten: reopened
        assert local.read_window(path, [1], window)[0, 0, 0] == 5
        other = []
        worker = threading.Thread(target=lambda: other.append(local._open_for_reading(path)[0]))
        worker.start()
        worker.join()
        assert other[0] is not first and not other[0].closed  # one dataset per thread
    assert other[0].closed  # every thread's datasets closed when the run ends


def test_a_missing_raster_still_names_the_file(tmp_path):
    with pytest.raises(local.SourceError, match="gone.tif"):
        local.read_window(str(tmp_path / "gone.tif"), [1], Window(0, 0, 4, 4))
