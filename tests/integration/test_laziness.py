"""Memory discipline (DESIGN.md §6, §9): building a run's graph computes nothing, every mask and zone raster
keeps the grid's chunks (never one whole-array chunk), and chunks outside the boundary read and rasterise
nothing.

The indicators compute inside their own ``compute`` functions, so the graph checked here is everything the
runner builds before them: prepare, the aligned land cover of every year, the code histogram, the zone face
ids, the yearly mask rasters and the Context handed to the indicators.
"""

import shutil
from pathlib import Path

import dask
import numpy as np
import pytest
import shapely
import yaml

from pipeline import align, outputs, runner, zones
from pipeline.indicators.base import Context
from pipeline.prepare import prepare

MINI = Path("tests/data/mini")


def _raise_if_computes(dsk, keys, **kwargs):
    """A dask scheduler that fails: any compute (explicit, or hidden in len(), bool(), np.asarray) raises."""
    raise RuntimeError("a dask graph was computed while the run's graph was being built")


def _mini(tmp_path: Path, change) -> Path:
    """A copy of the mini landscape with ``change(config)`` applied to its config."""
    folder = tmp_path / "mini"
    shutil.copytree(MINI, folder)
    config = yaml.safe_load((folder / "mini.yaml").read_text())
    change(config)
    (folder / "mini.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder / "mini.yaml"


@pytest.fixture
def mini_with_mask_raster(tmp_path) -> Path:
    """The mini landscape plus a yearly mining mask raster (its land-cover bands, code 30 = mining)."""
    return _mini(tmp_path, lambda c: c.update(mining_rasters=[{
        "name": "mask", "path": "landcover_1985_2000_2022.tif", "band_per_year": {"years": c["years"]},
        "mining_values": [30]}]))


def test_run_graph_is_built_without_computing_and_stays_chunked(mini_with_mask_raster, tmp_path):
    with dask.config.set(scheduler=_raise_if_computes), outputs.Staging(tmp_path / "out") as staging:
        prep = prepare(mini_with_mask_raster, chunk_px=37)  # 147 x 148 px: 4 x 4 chunks, uneven at the edge
        graph = runner.align_graph(prep, staging)
        masks = runner._aligned_masks(prep)
        ctx = Context(grid=prep.grid, legend=prep.legend, config=prep.config, zones=prep.zones,
                      face_ids=graph.faces, vectors=prep.vectors, rasters=masks)
    grid = prep.grid
    assert grid.chunks == ((37, 37, 37, 36), (37, 37, 37, 37))
    years = len(prep.config.years)
    assert graph.codes.chunks == ((years,), *grid.chunks)
    assert graph.histogram.shape == (years, 256)
    assert set(graph.faces) == {"landscape", "municipalities", "mining_titles"}
    for name, faces in ctx.face_ids.items():
        assert faces.chunks == grid.chunks, name
    observed, mask = ctx.rasters["mining:mask"]
    assert observed.all() and mask.dtype == bool and mask.chunks == ((years,), *grid.chunks)
    # and the arrays hold what they should once computed
    codes = graph.codes.compute(scheduler="synchronous")
    landscape = graph.faces["landscape"].compute(scheduler="synchronous")
    assert np.array_equal(landscape == 1, codes[0] != graph.outside_code)
    assert np.array_equal(mask.compute(scheduler="synchronous"), codes == 30)


def test_chunks_outside_the_boundary_read_and_rasterise_nothing(tmp_path, monkeypatch):
    """With a 20 px grid chunk, the corner chunks of the mini grid miss its round boundary: no source read and
    no zone rasterisation there. (Degradation is left out: its 34 px halo needs larger chunks.)"""
    reads, rasterised = [], []
    read, rasterize = align.read_window, zones._rasterize_faces
    monkeypatch.setattr(align, "read_window", lambda *a, **k: reads.append(a) or read(*a, **k))
    monkeypatch.setattr(zones, "_rasterize_faces",
                        lambda shapes, grid, tile, dtype: (rasterised.append(tile) if shapes else None) or rasterize(shapes, grid, tile, dtype))
    with outputs.Staging(tmp_path / "out") as staging:
        prep = prepare(_mini(tmp_path, lambda c: c["indicators"].pop("degradation")), chunk_px=20)
        graph = runner.align_graph(prep, staging)
        dask.compute(graph.codes, graph.faces["landscape"], scheduler="synchronous")
    grid = prep.grid
    tiles = list(grid.tiles())
    touching = [t for t in tiles if shapely.intersects(prep.boundary, grid.tile_box(t))]
    assert len(touching) < len(tiles)
    assert len(reads) == len(touching)  # one window read per chunk in the boundary, all years at once
    assert len(rasterised) == len(touching)
