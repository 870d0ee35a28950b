"""Every year of land cover onto the landscape grid, clipped to the boundary, chunk by chunk (DESIGN.md §2).

Per grid chunk (one dask task): skip it when it misses the boundary; rasterise the boundary for that chunk
only (pixel-centre rule); map the chunk's pixel centres exactly into each source raster (pyproj, no
approximate transformer, so the result does not depend on chunk edges); read only the source window
needed; resample categorically:

- nearest: each grid pixel takes the source pixel under its centre;
- mode: each grid pixel takes the most frequent code among the source pixels whose centres fall in it
  (ties go to the smallest code; pixels equal to the file's nodata value do not vote).

Output codes: legend codes as in the source; pixels outside the boundary get ``outside_code``; pixels
inside the boundary that the source does not observe (file nodata value, beyond the raster) get the
legend's first nodata code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import dask
import dask.array as da
import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.features import geometry_mask
from rasterio.windows import Window

from pipeline import kernels
from pipeline.errors import LegendError
from pipeline.grid import LandscapeGrid, Tile
from pipeline.sources.local import RasterBand, read_window

MODE_RATIO = 1.5  # auto resampling uses mode when the grid pixel is this many times the source pixel
ROW_STRIP = 256  # rows transformed at once, to bound the coordinate arrays' memory


def choose_resampling(setting: str, grid: LandscapeGrid, band: RasterBand) -> str:
    """'nearest' or 'mode' for one source (see GridConfig.resampling)."""
    if setting != "auto":
        return setting
    source_px = abs(band.transform.a)
    if band.crs.is_geographic:
        source_px *= 111_320 * math.cos(math.radians(_grid_centre_lat(grid)))
    return "mode" if grid.resolution_m > MODE_RATIO * source_px else "nearest"


def _grid_centre_lat(grid: LandscapeGrid) -> float:
    left, bottom, right, top = grid.bounds
    return Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform((left + right) / 2, (bottom + top) / 2)[1]


def boundary_mask(boundary: shapely.Geometry, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """True where the pixel centre is inside the boundary (rasterised for this window only)."""
    return geometry_mask([boundary], out_shape=shape, transform=transform, invert=True)


def source_indices(
    grid_crs: CRS, tile_transform: Affine, shape: tuple[int, int], band: RasterBand
) -> tuple[np.ndarray, np.ndarray]:
    """Source (row, col) under each grid pixel centre of a tile, as int64 arrays of ``shape``."""
    height, width = shape
    src_crs = band.crs
    same_crs = src_crs == grid_crs
    transformer = None if same_crs else Transformer.from_crs(grid_crs, src_crs, always_xy=True)
    inverse = ~band.transform
    rows = np.empty(shape, dtype=np.int64)
    cols = np.empty(shape, dtype=np.int64)
    cc = np.arange(width) + 0.5
    for start in range(0, height, ROW_STRIP):
        stop = min(height, start + ROW_STRIP)
        rr, cx = np.meshgrid(np.arange(start, stop) + 0.5, cc, indexing="ij")
        x, y = tile_transform @ (cx, rr)
        if transformer is not None:
            x, y = transformer.transform(x, y)
        col_f, row_f = inverse @ (x, y)
        rows[start:stop] = np.floor(row_f)
        cols[start:stop] = np.floor(col_f)
    return rows, cols


def pixel_offset(grid_crs: CRS, tile_transform: Affine, band: RasterBand) -> tuple[int, int] | None:
    """(row, col) of the tile's first pixel in the source when the tile is the source grid shifted by whole
    pixels (same CRS, same pixel size, aligned origin: ``grid.crs: native``, or a grid that happens to match),
    else None. Then every grid pixel centre falls exactly on one source pixel centre, so nearest resampling is a
    plain window read: the same codes as mapping each centre (``source_indices``), without the index arrays."""
    m = ~band.transform @ tile_transform
    col, row = round(m.c), round(m.f)
    exact = (abs(m.a - 1) < 1e-9 and abs(m.e - 1) < 1e-9 and abs(m.b) < 1e-12 and abs(m.d) < 1e-12
             and abs(m.c - col) < 1e-6 and abs(m.f - row) < 1e-6)
    if not exact or not (band.crs_wkt == grid_crs.to_wkt() or band.crs == grid_crs):
        return None
    return int(row), int(col)


def _window_block(offset: tuple[int, int], inside: np.ndarray, band_list: Sequence[RasterBand], *,
                  unmapped_code: int) -> np.ndarray:
    """``nearest_block`` for a tile that is a whole-pixel shift of the source grid (``pixel_offset``)."""
    first = band_list[0]
    (row, col), (height, width) = offset, inside.shape
    out = np.full((len(band_list), height, width), unmapped_code, dtype=first.dtype)
    r0, r1 = max(0, row), min(first.shape[0], row + height)
    c0, c1 = max(0, col), min(first.shape[1], col + width)
    if r1 <= r0 or c1 <= c0:
        return out
    rows, cols = slice(r0 - row, r1 - row), slice(c0 - col, c1 - col)
    if not inside[rows, cols].any():
        return out
    data = read_window(first.path, [b.band for b in band_list], Window(c0, r0, c1 - c0, r1 - r0))
    for i, band in enumerate(band_list):
        values = data[i]
        if band.nodata is not None:
            values = np.where(values == band.nodata, unmapped_code, values)
        out[i, rows, cols] = values
    return out


def nearest_block(
    grid_crs: CRS, tile_transform: Affine, inside: np.ndarray, band_list: Sequence[RasterBand], *, unmapped_code: int
) -> np.ndarray:
    """Nearest-neighbour codes for bands that share one source grid -> (len(band_list), h, w).

    Pixels outside ``inside`` may hold anything (callers keep only the pixels inside)."""
    first = band_list[0]
    offset = pixel_offset(grid_crs, tile_transform, first)
    if offset is not None:
        return _window_block(offset, inside, band_list, unmapped_code=unmapped_code)
    rows, cols = source_indices(grid_crs, tile_transform, inside.shape, first)
    on_source = inside & (rows >= 0) & (cols >= 0) & (rows < first.shape[0]) & (cols < first.shape[1])
    out = np.full((len(band_list), *inside.shape), unmapped_code, dtype=first.dtype)
    if not on_source.any():
        return out
    r0, r1 = rows[on_source].min(), rows[on_source].max() + 1
    c0, c1 = cols[on_source].min(), cols[on_source].max() + 1
    data = read_window(first.path, [b.band for b in band_list], Window(c0, r0, c1 - c0, r1 - r0))
    picked = data[:, rows[on_source] - r0, cols[on_source] - c0]
    for i, band in enumerate(band_list):
        values = picked[i]
        if band.nodata is not None:
            values = np.where(values == band.nodata, unmapped_code, values)
        out[i][on_source] = values
    return out


def mode_block(
    grid_crs: CRS, tile_transform: Affine, inside: np.ndarray, band_list: Sequence[RasterBand], *, unmapped_code: int
) -> np.ndarray:
    """Mode of the source pixels whose centres fall in each grid pixel -> (len(band_list), h, w)."""
    first = band_list[0]
    height, width = inside.shape
    out = np.full((len(band_list), height, width), unmapped_code, dtype=first.dtype)
    # Source window covering the tile: map the tile's outline (densified) into the source.
    outline = shapely.segmentize(shapely.box(0, 0, width, height), 8.0)
    px = np.asarray(outline.exterior.coords)
    x, y = tile_transform @ (px[:, 0], px[:, 1])
    if first.crs != grid_crs:
        x, y = Transformer.from_crs(grid_crs, first.crs, always_xy=True).transform(x, y)
    col_f, row_f = ~first.transform @ (np.asarray(x), np.asarray(y))
    r0, c0 = max(0, math.floor(row_f.min()) - 1), max(0, math.floor(col_f.min()) - 1)
    r1, c1 = min(first.shape[0], math.ceil(row_f.max()) + 1), min(first.shape[1], math.ceil(col_f.max()) + 1)
    if r1 <= r0 or c1 <= c0:
        return out
    data = read_window(first.path, [b.band for b in band_list], Window(c0, r0, c1 - c0, r1 - r0))
    sr, sc = np.meshgrid(np.arange(r0, r1) + 0.5, np.arange(c0, c1) + 0.5, indexing="ij")
    sx, sy = first.transform @ (sc, sr)
    if first.crs != grid_crs:
        sx, sy = Transformer.from_crs(first.crs, grid_crs, always_xy=True).transform(sx, sy)
    tc, tr = ~tile_transform @ (sx, sy)
    tr, tc = np.floor(tr).astype(np.int64), np.floor(tc).astype(np.int64)
    hit = (tr >= 0) & (tc >= 0) & (tr < height) & (tc < width)
    target = (tr * width + tc)[hit]
    for i, band in enumerate(band_list):
        codes = data[i][hit].astype(np.int64)
        keep = codes != band.nodata if band.nodata is not None else np.ones(codes.shape, bool)
        modes = _mode_per_target(target[keep], codes[keep], height * width, unmapped_code)
        out[i] = modes.reshape(height, width).astype(out.dtype)
        out[i][~inside] = unmapped_code
    return out


def _mode_per_target(target: np.ndarray, codes: np.ndarray, n_targets: int, empty: int) -> np.ndarray:
    """Most frequent code per target index (ties -> smallest code); ``empty`` where no code falls."""
    result = np.full(n_targets, empty, dtype=np.int64)
    if target.size == 0:
        return result
    key = target * 65536 + codes
    uniq, counts = np.unique(key, return_counts=True)
    tgt, code = uniq // 65536, uniq % 65536
    order = np.lexsort((code, -counts, tgt))
    first = np.ones(order.size, dtype=bool)
    first[1:] = tgt[order][1:] != tgt[order][:-1]
    chosen = order[first]
    result[tgt[chosen]] = code[chosen]
    return result


def align_tile(
    tile: Tile,
    grid: LandscapeGrid,
    boundary: shapely.Geometry,
    bands: Sequence[RasterBand],
    methods: Sequence[str],
    *,
    outside_code: int,
    unmapped_code: int,
    dtype: str,
    legend_path: str | None = "the legend",
) -> np.ndarray:
    """Aligned codes for one tile and every year -> (n_years, h, w)."""
    shape = (tile.height, tile.width)
    out = np.full((len(bands), *shape), outside_code, dtype=dtype)
    box = grid.tile_box(tile)
    if not shapely.intersects(boundary, box):
        return out
    transform = grid.tile_transform(tile.row_off, tile.col_off)
    whole = shapely.contains(boundary, box)  # every pixel of the tile is inside: no mask needed
    inside = np.ones(shape, bool) if whole else boundary_mask(boundary, transform, shape)
    groups: dict[tuple[str, str, Affine, str], list[int]] = {}
    for i, (band, method) in enumerate(zip(bands, methods, strict=True)):
        groups.setdefault((band.path, band.crs_wkt, band.transform, method), []).append(i)
    for (_, _, _, method), indices in groups.items():
        kernel = mode_block if method == "mode" else nearest_block
        values = kernel(grid.crs, transform, inside, [bands[i] for i in indices], unmapped_code=unmapped_code)
        for j, i in enumerate(indices):
            inside_values = values[j] if whole else values[j][inside]
            if legend_path is not None and (inside_values == outside_code).any():
                # outside_code is never a legend code, so a source pixel inside the boundary holding it is an
                # undocumented code that would otherwise vanish as 'outside'
                raise LegendError(
                    f"code {outside_code} occurs in {bands[i].path} (band {bands[i].band}) inside the boundary "
                    f"but not in {legend_path}; add it to classes or to nodata in the legend"
                )
            if whole:
                out[i] = inside_values
            else:
                out[i][inside] = inside_values
    return out


def aligned_stack(
    grid: LandscapeGrid,
    boundary: shapely.Geometry,
    bands: Sequence[RasterBand],
    *,
    resampling: str,
    outside_code: int,
    unmapped_code: int,
    legend_path: str | None = "the legend",
) -> da.Array:
    """Lazy (year, y, x) codes on the grid; one task per chunk, chunks outside the boundary read nothing.

    ``legend_path=None`` turns off the check that no source pixel inside the boundary holds ``outside_code``
    (for masks, where every value but the mining ones means "no").

    Notes
    -----
    Memory per task: the chunk for every year plus the source window and int64 index arrays of one chunk.
    """
    dtype = np.result_type(*[np.dtype(b.dtype) for b in bands]).name
    methods = [choose_resampling(resampling, grid, b) for b in bands]
    n_years = len(bands)
    rows = []
    for tile in grid.tiles():
        if tile.ix == 0:
            rows.append([])
        task = dask.delayed(align_tile, pure=False)(  # no hashing of the boundary for every chunk
            tile, grid, boundary, tuple(bands), tuple(methods), outside_code=outside_code,
            unmapped_code=unmapped_code, dtype=dtype, legend_path=legend_path,
        )
        rows[-1].append(da.from_delayed(task, shape=(n_years, tile.height, tile.width), dtype=dtype))
    return da.block(rows)


def code_histogram(stack: da.Array, *, size: int) -> da.Array:
    """Pixel count per code and year -> (n_years, size) int64, summed chunk by chunk."""

    def _counts(block: np.ndarray) -> np.ndarray:
        counts = np.stack([kernels.value_counts(layer, size) for layer in block])
        return counts[:, np.newaxis, np.newaxis, :]

    per_block = stack.map_blocks(
        _counts, new_axis=3, chunks=(stack.chunks[0], (1,) * stack.numblocks[1], (1,) * stack.numblocks[2], (size,)),
        dtype=np.int64,
    )
    return per_block.sum(axis=(1, 2))
