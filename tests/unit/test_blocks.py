"""Tests for pipeline.blocks: whole-landscape patch labelling over dask chunks."""

from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import rasterio
import shapely
import shapely.affinity
from affine import Affine
from scipy import ndimage

from pipeline import blocks, kernels
from pipeline.blocks import label_patches

LANDCOVER = Path(__file__).parents[2] / "data/raw/lourenco/mapbiomas_c8_lourenco_1985_2022.tif"
STRUCTURE = {4: ndimage.generate_binary_structure(2, 1), 8: np.ones((3, 3), bool)}
WHOLE = (-1, -1)
ROWS = (1, -1)  # (1, n): one chunk per row


def patches_of(arr, chunks, **kw):
    return label_patches(da.from_array(arr, chunks=chunks), **kw)


def direct_counts(labels, values, n_values):
    """Reference pixel_count and value_counts from whole-array labels (background row zeroed)."""
    n = labels.max()
    pixels = np.bincount(labels.ravel(), minlength=n + 1)
    hist = np.zeros((n + 1, n_values), np.int64)
    np.add.at(hist, (labels.ravel(), values.ravel()), 1)
    pixels[0], hist[0] = 0, 0
    return pixels, hist


def assert_matches_scipy(mask, values, n_values, chunks, neighbourhood):
    ref, n = ndimage.label(mask, STRUCTURE[neighbourhood])
    p = label_patches(da.from_array(mask, chunks=chunks), neighbourhood=neighbourhood,
                      values=da.from_array(values, chunks=chunks), n_values=n_values)
    labels = p.labels()
    assert labels.chunks == da.from_array(mask, chunks=chunks).chunks and labels.dtype == np.int64
    pixels, hist = direct_counts(ref, values, n_values)
    assert p.n_patches == n
    np.testing.assert_array_equal(labels.compute(), ref)  # same numbering as scipy on the whole array
    np.testing.assert_array_equal(p.pixel_count, pixels)
    np.testing.assert_array_equal(p.value_counts, hist)


@pytest.mark.parametrize("flip", [False, True], ids=["diagonal", "anti-diagonal"])
def test_diagonal_image_crosses_chunk_corner(flip):
    """rasterio's 10x10 diagonal image at chunks (5, 5): the line passes through a chunk corner."""
    image = np.eye(10, dtype=bool)
    image = np.fliplr(image) if flip else image
    eight = patches_of(image, (5, 5), neighbourhood=8)
    assert eight.n_patches == 1
    np.testing.assert_array_equal(eight.pixel_count, [0, 10])
    np.testing.assert_array_equal(eight.labels().compute(), image.astype(int))
    four = patches_of(image, (5, 5), neighbourhood=4)
    assert four.n_patches == 10
    np.testing.assert_array_equal(four.pixel_count, [0] + [1] * 10)
    rows, cols = np.nonzero(image)
    np.testing.assert_array_equal(four.labels().compute()[rows, cols], np.arange(1, 11))  # raster order


def spiral(n):
    """Square spiral of 1-px path with 1-px gaps on an n x n grid (n odd), and its path length + 1."""
    out = np.zeros((n, n), bool)
    r = c = 0
    out[0, 0] = True
    steps = 0
    lengths = [n - 1, n - 1, n - 1] + [k for k in range(n - 3, 0, -2) for _ in (0, 1)]
    for length, (dr, dc) in zip(lengths, [(0, 1), (1, 0), (0, -1), (-1, 0)] * n, strict=False):
        for _ in range(length):
            r, c = r + dr, c + dc
            out[r, c] = True
            steps += 1
    return out, steps + 1


SPIRAL, SPIRAL_PX = spiral(25)


def test_spiral_fixture():
    """25x25 spiral: 3 x 24 + 2 x (22 + 20 + ... + 2) steps + 1 start pixel = 337 px."""
    assert SPIRAL_PX == 337 == SPIRAL.sum()
    assert np.count_nonzero(SPIRAL[:, 2] & SPIRAL[:, 3]) == 5  # crosses one (3, 3) chunk edge 5 times


@pytest.mark.parametrize("chunks", [(3, 3), (4, 7), ROWS, WHOLE])
@pytest.mark.parametrize("neighbourhood", [4, 8])
def test_spiral_is_one_patch(chunks, neighbourhood):
    p = patches_of(SPIRAL, chunks, neighbourhood=neighbourhood)
    assert p.n_patches == 1
    np.testing.assert_array_equal(p.pixel_count, [0, 337])
    np.testing.assert_array_equal(p.labels().compute(), SPIRAL.astype(int))


@pytest.mark.parametrize("shape", [(37, 53), (120, 97)])
@pytest.mark.parametrize("chunks", [WHOLE, (64, 64), (100, 37), ROWS, (-1, 1), (7, 5)])
@pytest.mark.parametrize("neighbourhood", [4, 8])
def test_random_masks_match_whole_array_scipy(shape, chunks, neighbourhood):
    rng = np.random.default_rng(sum(shape))
    mask = rng.random(shape) < 0.4
    values = rng.integers(0, 5, shape).astype(np.uint8)
    assert_matches_scipy(mask, values, 5, chunks, neighbourhood)


@pytest.fixture(scope="module")
def landcover():
    """MapBiomas c8 Lourenço, 1341 x 1341 px: band 38 (2022) and band 1 (1985)."""
    with rasterio.open(LANDCOVER) as src:
        return src.read(38), src.read(1)


@pytest.mark.parametrize("chunks", [WHOLE, (64, 64), (100, 37), ROWS])
@pytest.mark.parametrize("code", [3, 30], ids=["forest", "mining"])
def test_landcover_matches_whole_array_scipy(landcover, chunks, code):
    """Forest: 37 patches, one spanning every chunk. Mining: 79 small ones. Values: 1985 land cover.

    8-neighbour only (the pipeline default) to keep the file fast; 4 is covered by the random masks.
    """
    lc_2022, lc_1985 = landcover
    # 1341 one-row chunks are bound by the scheduler's per-task cost; the other tests run on threads
    with dask.config.set(scheduler="synchronous"):
        assert_matches_scipy(lc_2022 == code, lc_1985, 64, chunks, 8)


PIXEL = 30.0
TRANSFORM = Affine(PIXEL, 0, 500_000, 0, -PIXEL, 8_000_000)
HAND = np.array([
    [1, 0, 0, 0, 0, 1],
    [1, 0, 0, 0, 0, 0],
    [1, 1, 1, 0, 0, 0],
    [0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 1, 0],
    [0, 0, 0, 0, 0, 1],
], bool)
"""8-neighbour patches: 1 = L of 5 px, 2 = lone pixel (0, 5), 3 = two pixels touching at a corner."""


def world(cols_rows):
    return [TRANSFORM @ xy for xy in cols_rows]


@pytest.mark.parametrize("chunks", [WHOLE, (2, 2), (5, 5), ROWS, (1, 1)])
def test_polygons_exact_and_chunk_invariant(chunks):
    p = patches_of(HAND, chunks, neighbourhood=8)
    np.testing.assert_array_equal(p.pixel_count, [0, 5, 1, 2])
    by_ids = p.polygons(np.array([1, 3]), TRANSFORM)
    by_mask = p.polygons(np.array([False, True, False, True]), TRANSFORM)
    assert sorted(by_ids) == sorted(by_mask) == [1, 3]
    ell = shapely.Polygon(world([(0, 0), (1, 0), (1, 2), (3, 2), (3, 3), (0, 3)]))
    pair = shapely.MultiPolygon([shapely.Polygon(world([(4, 4), (5, 4), (5, 5), (4, 5)])),
                                 shapely.Polygon(world([(5, 5), (6, 5), (6, 6), (5, 6)]))])
    for pid, expected in [(1, ell), (3, pair)]:
        for got in (by_ids[pid], by_mask[pid]):
            assert got.geom_type == expected.geom_type
            assert got.area == p.pixel_count[pid] * PIXEL**2
            assert shapely.equals_exact(shapely.normalize(got), shapely.normalize(expected), tolerance=0)


@pytest.mark.parametrize("chunks", [(7, 9), (3, 4), (1, 50)])
@pytest.mark.parametrize("neighbourhood", [4, 8])
def test_polygons_across_seams_equal_the_union_of_their_pixels(chunks, neighbourhood):
    """Clustered patches with holes, pinches and corner contacts, cut by many seams: each polygon equals, to
    the last bit, GEOS's union of the patch's pixel squares in map coordinates with its straight-on vertices
    dropped (``simplify(0)``), normalised."""
    rng = np.random.default_rng(3)
    mask = ndimage.zoom(rng.random((10, 13)), 4, order=1) > 0.55
    mask ^= rng.random(mask.shape) < 0.04  # specks, pinholes and diagonal contacts
    p = patches_of(mask, chunks, neighbourhood=neighbourhood)
    labels, n = ndimage.label(mask, STRUCTURE[neighbourhood])
    got = p.polygons(np.arange(1, n + 1), TRANSFORM)
    kinds = set()
    for pid in range(1, n + 1):
        rows, cols = np.nonzero(labels == pid)
        squares = [shapely.box(*(TRANSFORM @ (c, r + 1)), *(TRANSFORM @ (c + 1, r))) for r, c in zip(rows, cols, strict=True)]
        expected = shapely.normalize(shapely.simplify(shapely.union_all(squares), 0))
        assert shapely.equals_exact(got[pid], expected, tolerance=0), pid
        kinds.add((got[pid].geom_type, bool(shapely.get_num_interior_rings(shapely.get_parts(got[pid])).sum())))
    assert ("Polygon", True) in kinds and ("Polygon", False) in kinds  # with and without holes
    assert neighbourhood == 4 or ("MultiPolygon", False) in kinds  # 8-neighbours: parts joined by a corner


@pytest.mark.parametrize("transform", [TRANSFORM, Affine.rotation(30) @ TRANSFORM, Affine.scale(-1, 1) @ TRANSFORM])
def test_normal_rings_equal_geos_normalize(transform):
    """Rings reordered in numpy (the outlines of one chunk's regions, any pixel-to-map transform, mirrored too)
    equal GEOS's normalize of the same polygons, coordinate for coordinate."""
    rng = np.random.default_rng(8)
    mask = ndimage.zoom(rng.random((8, 9)), 5, order=1) > 0.5
    regions, n = ndimage.label(mask, STRUCTURE[4])
    corners, ring_offsets, polygon_offsets = kernels.outlines(regions, n)
    matrix = (transform.a, -transform.b, transform.d, -transform.e, transform.c, transform.f)
    xy = blocks._affine(np.stack([corners[:, 0], -corners[:, 1]], axis=1).astype(np.float64), matrix=matrix)
    shells = polygon_offsets[:-1][np.diff(polygon_offsets) == 1]  # regions without holes
    assert 3 < shells.size < n
    got = shapely.from_ragged_array(shapely.GeometryType.POLYGON, blocks._normal_rings(xy, ring_offsets, shells),
                                    (ring_offsets, polygon_offsets))
    plain = shapely.from_ragged_array(shapely.GeometryType.POLYGON, xy, (ring_offsets, polygon_offsets))
    normal = np.diff(polygon_offsets) == 1
    assert shapely.equals_exact(got[normal], shapely.normalize(plain[normal]), tolerance=0).all()
    assert shapely.equals_exact(got[~normal], plain[~normal], tolerance=0).all()  # rings with holes left as they are


def test_seam_union_and_straight_vertices():
    """Pieces whose edges along the seams are cut at every pixel corner form a coverage: merged by the coverage
    union and, with their straight-on vertices dropped, equal to the overlay union and simplify(0)."""
    left, right = shapely.box(0, 0, 2, 1), shapely.box(2, -1, 3, 2)  # share x = 2 from y = 0 to 1
    ring = [shapely.box(0, 0, 3, 1), shapely.box(0, 1, 1, 3), shapely.box(2, 1, 3, 3), shapely.box(0, 3, 3, 4)]
    merged = blocks._seam_union([[left, right], ring], np.array([1.0, 2.0]), np.array([1.0, 3.0]))
    for got, pieces in zip(blocks.drop_straight_vertices(merged), ([left, right], ring), strict=True):
        want = shapely.simplify(shapely.union_all(pieces), 0)
        assert shapely.equals_exact(shapely.normalize(got), shapely.normalize(want), tolerance=0)
    cut = blocks._cut_seam_edges(np.array([left, right]), np.array([2.0]), np.array([]))
    assert shapely.get_num_coordinates(cut).tolist() == [5, 7]  # a vertex at each pixel corner along x = 2
    assert shapely.equals(shapely.coverage_union_all(cut), shapely.union_all([left, right]))
    assert shapely.get_num_geometries(shapely.coverage_union_all([left, right])) == 2  # uncut: left apart, silently
    pinched = shapely.MultiPolygon([shapely.Polygon([(0, 0), (1, 0), (2, 0), (2, 1), (0, 1)]), shapely.box(2, 1, 3, 2)])
    assert shapely.equals_exact(blocks.drop_straight_vertices(np.array([pinched]))[0],
                                shapely.simplify(pinched, 0), tolerance=0)


@pytest.mark.parametrize("chunks", [(2, 3), (3, 2)])
def test_polygons_of_a_rotated_grid_are_the_north_up_ones_moved(chunks):
    """A rotated pixel grid: patch pieces are joined in pixel coordinates, then moved; the result is the patch
    of a north-up grid put through the rotation (to the last bit where exact, else within 1e-9 m)."""
    p = patches_of(HAND, chunks, neighbourhood=8)
    rotated = Affine.translation(500_000, 8_000_000) @ Affine.rotation(30) @ Affine.scale(PIXEL, -PIXEL)
    pixel = Affine.identity()
    got, plain = p.polygons(np.array([1, 3]), rotated), p.polygons(np.array([1, 3]), pixel)
    for pid in (1, 3):
        moved = shapely.affinity.affine_transform(plain[pid], rotated.to_shapely())
        assert got[pid].geom_type == plain[pid].geom_type
        assert shapely.equals_exact(shapely.normalize(got[pid]), shapely.normalize(moved), tolerance=1e-9)
        assert abs(got[pid].area - p.pixel_count[pid] * PIXEL**2) < 1e-6


def test_values_and_empty_mask():
    p = patches_of(np.zeros((4, 6), bool), (2, 2), values=da.zeros((4, 6), dtype=int, chunks=3), n_values=3)
    assert p.n_patches == 0
    np.testing.assert_array_equal(p.pixel_count, [0])
    assert p.value_counts.shape == (1, 3) and p.polygons(np.array([], int), TRANSFORM) == {}
    np.testing.assert_array_equal(p.labels().compute(), np.zeros((4, 6)))


def test_values_outside_range_allowed_on_background():
    """A nodata value (255) off the mask is ignored; the two 4-neighbour patches get their own values."""
    mask = np.array([[1, 0, 0], [0, 1, 1]], bool)
    values = np.array([[2, 255, 255], [255, 0, 2]], np.uint8)
    p = patches_of(mask, (1, 2), neighbourhood=4, values=da.from_array(values, chunks=(1, 2)), n_values=3)
    np.testing.assert_array_equal(p.value_counts, [[0, 0, 0], [0, 0, 1], [1, 0, 1]])


def test_bad_input_raises():
    mask = da.ones((4, 4), dtype=bool, chunks=2)
    with pytest.raises(ValueError, match="neighbourhood"):
        label_patches(mask, neighbourhood=6)
    with pytest.raises(ValueError, match="2-D"):
        label_patches(da.ones((2, 4, 4), dtype=bool))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        label_patches(mask, values=da.full((4, 4), 3, dtype=int, chunks=2), n_values=3)
    with pytest.raises(ValueError, match="n_values"):
        label_patches(mask, values=da.ones((4, 4), dtype=float, chunks=2), n_values=3)


@pytest.mark.parametrize("chunks", [(7, 9), (32, 5), WHOLE])
@pytest.mark.parametrize("neighbourhood", [4, 8])
def test_mapped_and_face_parts_equal_the_global_labels(chunks, neighbourhood):
    """Patches.mapped (relabelled per chunk, no global label array) and Patches.face_parts (counted per chunk
    with the patch summaries) against the same numbers from scipy's whole-array labels: a per-patch table
    looked up per pixel, and pixels per (patch, face)."""
    rng = np.random.default_rng(11)
    mask = ndimage.gaussian_filter(rng.standard_normal((60, 70)), 1.5) > 0.2
    face = (np.arange(70)[None, :] // 25 + 3 * (np.arange(60)[:, None] // 40)).astype(np.int32)  # 6 faces
    ref, n = ndimage.label(mask, STRUCTURE[neighbourhood])
    faces = (da.from_array(face, chunks=(13, 13)),) * 2  # rechunked to the mask's chunks
    p = patches_of(mask, chunks, neighbourhood=neighbourhood, faces=faces, n_faces=(6, 5000))
    table = (np.arange(n + 1) * 7 % 5).astype(np.uint8)
    np.testing.assert_array_equal(p.mapped(table).compute(), table[ref])
    expected = np.zeros((n + 1, 6), np.int64)
    np.add.at(expected, (ref[ref > 0], face[ref > 0]), 1)
    few, many = p.face_parts  # 5000 faces: too many for a (label, face) table, counted with np.unique
    np.testing.assert_array_equal(few.toarray(), expected)
    assert many.shape == (n + 1, 5000) and many.toarray()[:, 6:].sum() == 0
    np.testing.assert_array_equal(many.toarray()[:, :6], expected)
    assert patches_of(mask, chunks, neighbourhood=neighbourhood).face_parts is None
    with pytest.raises(ValueError, match="table must have shape"):
        p.mapped(table[:-1])


@pytest.mark.parametrize("chunks", [(7, 9), (16, 16), (1, -1), WHOLE])
@pytest.mark.parametrize("min_px", [1, 6])
def test_pieces_traced_in_the_labelling_pass_equal_relabelled_polygons(chunks, min_px):
    """Outlines traced with the chunk summaries (pieces_min_px) give exactly the polygons of the pass that
    relabels the mask, for patches crossing chunk edges and corners; the summaries keep no outline of a patch
    below min_px that lies inside one chunk, so asking for one relabels the mask instead."""
    rng = np.random.default_rng(17)
    mask = ndimage.gaussian_filter(rng.standard_normal((48, 57)), 1.2) > 0.3  # sparse (16 %), 37 patches
    mask[20:23, :] = True  # one patch across every column of chunks
    mask = np.pad(mask, ((5, 0), (4, 0)))  # chunks whose patch pixels start away from their top-left corner
    plain = patches_of(mask, chunks, neighbourhood=8)
    traced = patches_of(mask, chunks, neighbourhood=8, pieces_min_px=min_px)
    assert traced.pieces_min_px == min_px and plain.pieces_min_px is None
    big = np.flatnonzero(plain.pixel_count >= min_px)
    assert big.size > 5 and (min_px == 1 or (plain.pixel_count[1:] < min_px).any())
    expected, got = plain.polygons(big, TRANSFORM), traced.polygons(big, TRANSFORM)
    assert sorted(got) == sorted(expected) == big.tolist()
    ref, _ = ndimage.label(mask, STRUCTURE[8])
    for pid in big:
        assert shapely.equals_exact(got[pid], expected[pid], tolerance=0)
        rows, cols = np.nonzero(ref == pid)  # the patch as the union of its pixel squares
        squares = shapely.box(*(TRANSFORM @ (cols, rows + 1)), *(TRANSFORM @ (cols + 1, rows)))
        assert shapely.equals(got[pid], shapely.union_all(squares))
    every = np.arange(1, plain.n_patches + 1)  # below min_px too: the fallback pass
    fallback = traced.polygons(every, TRANSFORM)
    assert all(shapely.equals_exact(fallback[pid], plain.polygons(every, TRANSFORM)[pid], tolerance=0) for pid in every)


def test_patches_without_their_mask():
    """Summaries merged without the lazy mask (as mining does): polygons from the traced pieces, and a clear
    error for what needs the mask."""
    from pipeline.blocks import block_stats, patches_from_stats

    chunks = ((3, 3), (3, 3))
    stats = np.empty((2, 2), object)
    for i, j in np.ndindex(2, 2):
        stats[i, j] = block_stats(HAND[3 * i:3 * i + 3, 3 * j:3 * j + 3], neighbourhood=8, pieces_min_px=1)
    p = patches_from_stats(stats, chunks, neighbourhood=8)
    np.testing.assert_array_equal(p.pixel_count, [0, 5, 1, 2])
    assert p.polygons(np.array([1]), TRANSFORM)[1].area == 5 * PIXEL**2
    with pytest.raises(ValueError, match="without their mask"):
        p.labels()
    with pytest.raises(ValueError, match="chunk summaries"):
        patches_from_stats(stats[:1], chunks, neighbourhood=8)


@pytest.mark.parametrize("neighbourhood", [4, 8])
def test_split_by_code_equals_one_summary_per_code(neighbourhood):
    """block_stats of every code at once, split per code, equals block_stats of each code's mask: labels,
    counts, first pixels, edge lines, value histograms and face parts."""
    from pipeline.blocks import block_stats, split_by_code

    rng = np.random.default_rng(23)
    code = (ndimage.gaussian_filter(rng.standard_normal((30, 41)), 2) * 20).astype(np.int64) % 4  # codes 0..3
    code[:3] = 0  # the box of patch pixels starts below the chunk's top row
    values = rng.integers(0, 2, code.shape)
    face = (np.arange(41)[None, :] // 15 + 3 * (np.arange(30)[:, None] // 20)).astype(np.int32)
    kw = dict(neighbourhood=neighbourhood, n_values=2, faces=(face,), n_faces=(6,))
    split = split_by_code(block_stats(code.astype(np.uint8), values, codes=True, **kw))
    assert sorted(split) == [1, 2, 3]
    for c, got in split.items():
        want = block_stats(code == c, values, **kw)
        assert got["n"] == want["n"] > 1
        for key in ("count", "first", "hist"):
            np.testing.assert_array_equal(got[key], want[key])
        for a, b in zip(got["edges"], want["edges"], strict=True):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(got["faces"][0], want["faces"][0], strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("chunks", [(13, 17), (32, 32), WHOLE])
@pytest.mark.parametrize("neighbourhood", [4, 8])
def test_mapped_from_kept_runs_equals_relabelling(chunks, neighbourhood):
    """Patches.mapped painted from the runs kept in the labelling pass equals the relabelling pass and scipy's
    labels, with chunks of too many runs (noise) labelled again and chunks without patch pixels."""
    rng = np.random.default_rng(29)
    mask = ndimage.gaussian_filter(rng.standard_normal((64, 70)), 2) > 0
    mask[:, 50:] = rng.random((64, 20)) < 0.5  # noise: one run every ~4 pixels, more than RUNS_PER_PX allows
    mask[40:, :30] = False
    ref, n = ndimage.label(mask, STRUCTURE[neighbourhood])
    kept = patches_of(mask, chunks, neighbourhood=neighbourhood, keep_runs=True)
    assert any(r is None for r in kept._runs)  # the noisy chunks are labelled again
    assert chunks == WHOLE or any(r is not None for r in kept._runs)  # the others are painted
    table = (np.arange(n + 1) * 5 % 7 + 1).astype(np.int16)
    table[0] = -3
    np.testing.assert_array_equal(kept.mapped(table).compute(), table[ref])
    np.testing.assert_array_equal(patches_of(mask, chunks, neighbourhood=neighbourhood).mapped(table).compute(),
                                  table[ref])
