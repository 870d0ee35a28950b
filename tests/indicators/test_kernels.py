"""The compiled kernels (pipeline/kernels.py) against the scipy functions they replace, on random arrays."""

import numpy as np
import pytest
import shapely
from scipy import ndimage

from pipeline import blocks, kernels
from pipeline.zones import ZoneLayer

RNG = np.random.default_rng(20261125)
SHAPES = [(1, 1), (1, 17), (17, 1), (2, 2), (9, 31), (40, 40), (64, 23)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("neighbourhood", [4, 8])
def test_label_equals_scipy(shape, neighbourhood):
    """Same labels (numbered by first pixel in row-major order), counts and first pixels as scipy."""
    structure = ndimage.generate_binary_structure(2, 1 if neighbourhood == 4 else 2)
    for density in (0.1, 0.45, 0.6, 0.9):
        mask = RNG.random(shape) < density
        want, n_want = ndimage.label(mask, structure)
        got, n, count = kernels.label(mask, neighbourhood)
        assert n == n_want
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(count[1:], np.bincount(want.ravel(), minlength=n + 1)[1:])
        ids, first = np.unique(want.ravel(), return_index=True)
        n_runs, count_runs, first_runs, runs = kernels.component_runs(mask, neighbourhood)
        assert n_runs == n
        np.testing.assert_array_equal(count_runs, count)
        np.testing.assert_array_equal(first_runs, first[ids > 0])
        np.testing.assert_array_equal(kernels.runs_image(shape, runs), want)
        for line, want_line in zip(kernels.run_edges(shape, runs), (want[0], want[-1], want[:, 0], want[:, -1]), strict=True):
            np.testing.assert_array_equal(line, want_line)


@pytest.mark.parametrize("n_values", [2, 5])
def test_run_histogram_equals_numpy(n_values):
    """Pixels of each value per label, and with ``bits`` per set bit, against numpy on the label image."""
    for density in (0.2, 0.7):
        mask = RNG.random((40, 53)) < density
        n, _, _, runs = kernels.component_runs(mask, 8)
        lab = kernels.runs_image(mask.shape, runs)
        values = RNG.integers(0, n_values, mask.shape).astype(np.uint8)
        want = np.zeros((n + 1, n_values), np.int64)
        np.add.at(want, (lab[mask], values[mask]), 1)
        np.testing.assert_array_equal(kernels.run_histogram(runs, values, n, n_values), want)
        bits = np.zeros((n + 1, 3), np.int64)
        for b in range(3):
            np.add.at(bits[:, b], lab[mask], (values[mask] >> b) & 1)
        np.testing.assert_array_equal(kernels.run_histogram(runs, values, n, 3, bits=True), bits)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("neighbourhood", [4, 8])
def test_label_codes_equal_scipy_per_code(shape, neighbourhood):
    """One labelling of every code: code c's components are scipy's labels of (code == c), in the same order
    (the combined numbering is by first pixel over all codes), with their pixel counts."""
    structure = ndimage.generate_binary_structure(2, 1 if neighbourhood == 4 else 2)
    for density in (0.3, 1.0):
        code = np.where(RNG.random(shape) < density, RNG.integers(1, 4, shape), 0).astype(np.uint8)
        code[: shape[0] // 2] = np.sort(code[: shape[0] // 2], axis=1)  # long runs as well as single pixels
        got, n, count = kernels.label_codes(code, neighbourhood)
        total = 0
        for c in (1, 2, 3):
            want, n_want = ndimage.label(code == c, structure)
            total += n_want
            ours = got[code == c]
            order = np.unique(ours, return_index=True)[1]  # our labels of code c, by first pixel
            renumber = np.zeros(n + 1, np.int64)
            renumber[np.unique(ours)[np.argsort(order)]] = np.arange(1, n_want + 1)
            np.testing.assert_array_equal(renumber[got] * (code == c), want)
        assert n == total and count.sum() == (code > 0).sum()
        np.testing.assert_array_equal(count[1:], np.bincount(got.ravel(), minlength=n + 1)[1:])
        assert (got[code == 0] == 0).all()


def test_label_checkerboard_and_spiral():
    """Worst cases for the provisional-label table (checkerboard) and for merging (a spiral)."""
    board = (np.add.outer(np.arange(33), np.arange(35)) % 2).astype(bool)
    for neighbourhood, expected in ((4, board.sum()), (8, 1)):
        assert kernels.label(board, neighbourhood)[1] == expected
    spiral = np.zeros((21, 21), bool)
    top, left, bottom, right = 0, 0, 20, 20
    while top <= bottom and left <= right:
        spiral[top, left:right + 1] = spiral[top:bottom + 1, right] = True
        spiral[bottom, left:right + 1] = True
        spiral[top + 2:bottom + 1, left] = True
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
    want, n = ndimage.label(spiral)
    got, n_got, _ = kernels.label(spiral, 4)
    assert n_got == n
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n_values", [2, 3])
def test_run_histogram_rejects_values_on_patch_pixels_only(n_values):
    n, _, _, runs = kernels.component_runs(np.array([[1, 0], [0, 1]], bool), 4)
    hist = kernels.run_histogram(runs, np.array([[1, 99], [-5, 0]]), n, n_values)
    np.testing.assert_array_equal(hist[:, :2], [[0, 0], [0, 1], [1, 0]])
    for wrong in (7, -1):
        with pytest.raises(ValueError, match=rf"\[0, {n_values}\).*{wrong}"):
            kernels.run_histogram(runs, np.array([[1, 0], [0, wrong]]), n, n_values)


@pytest.mark.parametrize("bound_m, resolution_m", [(0, 10), (30, 30), (45, 10), (100, 30), (100, 10), (250, 30)])
def test_within_equals_euclidean_distance_transform(bound_m, resolution_m):
    for shape in SHAPES:
        for density in (0.0, 0.01, 0.2):
            source = RNG.random(shape) < density
            want = (ndimage.distance_transform_edt(~source, sampling=resolution_m) <= bound_m + 1e-9
                    if source.any() else np.zeros(shape, bool))
            got = kernels.within(source, kernels.euclidean_reach(bound_m, resolution_m))
            np.testing.assert_array_equal(got, want)


def test_within_large_bound_equals_euclidean_distance_transform():
    """A 1,000 m bound at 10 m (radius 100 px), against scipy, including near the array border: dense sources
    are answered from cells (all within for sure, or the sweeps on windows around the unsure cells), sparse
    ones from the sweeps over the whole array; every path is taken."""
    reach = kernels.euclidean_reach(1000, 10)
    rng = np.random.default_rng(7)  # its own generator: which path is taken must not hang on earlier tests
    paths = set()
    for shape in ((310, 260), (520, 470)):
        for density in (0.0, 0.00002, 0.0003, 0.003, 0.05):
            coarse = rng.random((shape[0] // 10 + 1, shape[1] // 10 + 1)) < density * 60  # clustered sources too
            for source in (rng.random(shape) < density, np.kron(coarse, np.ones((10, 10), bool))[:shape[0], :shape[1]]):
                want = (ndimage.distance_transform_edt(~source, sampling=10) <= 1000 + 1e-9 if source.any()
                        else np.zeros(shape, bool))
                np.testing.assert_array_equal(kernels.within(source, reach), want)
                by_cells = kernels._within_by_cells(source, reach)
                paths.add("sweeps" if by_cells is None else "cells" if by_cells.all() else "windows")
    assert paths == {"sweeps", "cells", "windows"}


@pytest.mark.parametrize("bound_px", [3, 16, 40])
def test_within_on_the_box_of_few_sources_equals_the_distance_transform(bound_px):
    """Sources in a corner, an edge, the middle, or none: the passes on the box around them grown by the radius
    give what the whole array does."""
    reach = kernels.euclidean_reach(bound_px * 10, 10)
    for cells in ([(0, 0)], [(119, 5)], [(60, 70), (64, 90)], [(5, 139), (110, 3)], []):
        source = np.zeros((120, 140), bool)
        for r, c in cells:
            source[r, c] = True
        want = (ndimage.distance_transform_edt(~source) <= bound_px + 1e-9 if source.any()
                else np.zeros(source.shape, bool))
        np.testing.assert_array_equal(kernels.within(source, reach), want)


@pytest.mark.parametrize("depth", [0, 1, 3, 10])
def test_within_equals_taxicab_distance_transform(depth):
    for shape in SHAPES:
        source = RNG.random(shape) < 0.05
        if not source.any():
            continue
        want = ndimage.distance_transform_cdt(~source, metric="taxicab") <= depth
        np.testing.assert_array_equal(kernels.within(source, np.arange(depth, -1, -1)), want)


def zones_touched(geom: shapely.Geometry, layer: ZoneLayer) -> str:
    """By hand, one geometry at a time: the zones it meets whose intersection with it has area, largest first
    (a stable sort keeps zone order on ties), joined by '; '."""
    overlap = [(shapely.area(shapely.intersection(geom, z)), name)
               for name, z in zip(layer.zone_names, layer.zone_geometries, strict=True) if shapely.intersects(geom, z)]
    return "; ".join(name for area, name in sorted(overlap, key=lambda t: -t[0]) if area > 0)


def test_zones_touched_many_equals_zones_touched(monkeypatch):
    """Overlapping zones, a geometry across two zones, one inside one zone, one outside all."""
    zones = (shapely.box(0, 0, 10, 10), shapely.box(5, 0, 20, 10), shapely.box(30, 30, 40, 40))
    layer = ZoneLayer("z", ("a", "b", "c"), zones, zones, np.zeros((4, 3), bool))
    geoms = [shapely.box(1, 1, 2, 2), shapely.box(4, 1, 12, 2), shapely.box(6, 1, 7, 2), shapely.box(50, 50, 51, 51),
             shapely.box(29, 29, 31, 31), shapely.box(9, 1, 19, 2)]
    assert blocks.zones_touched_many(geoms, layer) == [zones_touched(g, layer) for g in geoms]
    assert blocks.zones_touched_many([], layer) == []
    monkeypatch.setattr(blocks, "ZONES_BATCH", 4)  # batches in parallel tasks keep the order
    assert blocks.zones_touched_many(geoms, layer) == [zones_touched(g, layer) for g in geoms]


def test_zones_touched_many_on_irregular_zones_and_pixel_patches():
    """Zones split by a wavy line, one with a hole, and an island zone in that hole; patches of pixel squares
    everywhere: inside, across borders, in the hole, touching borders from outside, with boxes that cross a
    border when the patch does not (L shapes around a corner)."""
    x = np.linspace(0, 100, 60)
    wave = np.c_[x, 50 + 8 * np.sin(x / 7)]
    west = shapely.Polygon(np.r_[[[0, 0]], wave, [[100, 0]]])
    east = shapely.Polygon(np.r_[[[0, 100]], wave, [[100, 100]]], holes=[[(20, 70), (40, 70), (40, 90), (20, 90)]])
    island = shapely.box(25, 75, 35, 85)
    zones = (west, east, island)
    layer = ZoneLayer("z", ("west", "east", "island"), zones, zones, np.zeros((4, 3), bool))
    rng = np.random.default_rng(11)
    geoms = []
    for _ in range(400):
        i, j = rng.integers(-5, 105, size=2)
        pixels = [shapely.box(i + di, j + dj, i + di + 1, j + dj + 1) for di, dj in rng.integers(0, 6, size=(rng.integers(1, 8), 2))]
        geoms.append(shapely.union_all(pixels))
    geoms += [shapely.box(40, 70, 41, 71), shapely.box(35, 80, 36, 81), shapely.Polygon([(0, 0), (5, 0), (5, 1), (1, 1), (1, 5), (0, 5)]),
              shapely.box(101, 10, 102, 11), shapely.box(27, 77, 29, 79), shapely.LineString([(10, 10), (11, 10)]),
              shapely.Polygon()]  # no area: no zone
    want = [zones_touched(g, layer) for g in geoms]
    assert blocks.zones_touched_many(geoms, layer) == want
    assert {"west", "east", "island", "", "west; east", "east; west"} <= set(want)


def test_patches_of_inside_pixels_are_all_in_the_landscape():
    """zones_touched_many(patches=True) names every patch of pixels inside the boundary (pixel-centre rule,
    rasterio's) with the landscape, as the overlap by hand does: a wavy boundary with a sliver, pixel centres on
    and next to its edges."""
    from affine import Affine
    from rasterio.features import rasterize

    from pipeline.zones import landscape_layer

    x = np.linspace(0, 60, 90)
    boundary = shapely.Polygon(np.r_[[[0, 0]], np.c_[x, 30 + 9 * np.sin(x / 4)], [[60, 0]]]).union(
        shapely.Polygon([(20, 0), (20.5, -10), (21, 0)]))  # a sliver narrower than a pixel
    boundary = shapely.union_all([boundary, shapely.box(40, 10, 44.5, 12.5)])  # edges through pixel centres
    layer = landscape_layer("Site", boundary)
    inside = rasterize([(boundary, 1)], out_shape=(60, 70), transform=Affine(1, 0, -5, 0, -1, 45)).astype(bool)
    labels, n = ndimage.label(inside & (RNG.random(inside.shape) < 0.3), np.ones((3, 3), bool))
    geoms = []
    for k in range(1, n + 1):
        rows, cols = np.nonzero(labels == k)
        geoms.append(shapely.union_all([shapely.box(c - 5, 45 - r - 1, c - 4, 45 - r) for r, c in zip(rows, cols, strict=True)]))
    assert len(geoms) > 100
    assert blocks.zones_touched_many(geoms, layer, patches=True) == [zones_touched(g, layer) for g in geoms] == ["Site"] * n


def test_counting_kernels_equal_numpy():
    """transition_counts, label_face_counts and lookup against numpy's bincount and fancy indexing."""
    rng = np.random.default_rng(5)
    a, b = (rng.integers(0, 9, (37, 41)).astype(np.uint8) for _ in range(2))
    face = rng.integers(0, 4, (37, 41)).astype(np.int32)
    expected = np.bincount(((face.astype(np.int64) * 9 + a) * 9 + b).ravel(), minlength=4 * 81).reshape(4, 9, 9)
    np.testing.assert_array_equal(kernels.transition_counts(a, b, face, n_classes=9, n_faces=4), expected)
    by_label = kernels.label_face_counts(a, face, n_labels=8, n_faces=4)  # label 0 = background, not counted
    np.testing.assert_array_equal(by_label[1:], expected.sum(axis=2).T[1:])
    assert by_label[0].sum() == 0
    table = rng.integers(0, 100, 256).astype(np.int16)
    np.testing.assert_array_equal(kernels.lookup(table, a), table[a])
    np.testing.assert_array_equal(kernels.lookup(table, a.T), table[a.T])  # not contiguous: numpy's path
    with pytest.raises(ValueError, match=r"face id values must lie in \[0, 3\)"):  # unchecked writes are refused
        kernels.transition_counts(a, b, face, n_classes=9, n_faces=3)
    with pytest.raises(ValueError, match="label values"):
        kernels.label_face_counts(a, face, n_labels=5, n_faces=4)


def _outline_polygons(mask: np.ndarray) -> list[shapely.Polygon]:
    """kernels.outlines of the 4-connected regions of ``mask``, as polygons in (column, row) corner coordinates."""
    regions, n, _ = kernels.label(mask, 4)
    corners, ring_offsets, polygon_offsets = kernels.outlines(regions, n)
    return list(shapely.from_ragged_array(shapely.GeometryType.POLYGON, corners.astype(float),
                                          (ring_offsets, polygon_offsets)))


def _same(got: shapely.Geometry, want: shapely.Geometry) -> bool:
    return shapely.equals_exact(shapely.normalize(got), shapely.normalize(want), tolerance=0)


def test_outlines_by_hand():
    """Rings of pixel corners, a vertex only at turns; holes, and pinches where a region touches itself."""
    square = shapely.Polygon([(0, 0), (1, 0), (1, 1), (0, 1)])
    assert _same(*_outline_polygons(np.ones((1, 1), bool)), square)
    ell = np.array([[1, 0, 0],
                    [1, 0, 0],
                    [1, 1, 1]], bool)
    assert _same(*_outline_polygons(ell), shapely.Polygon([(0, 0), (1, 0), (1, 2), (3, 2), (3, 3), (0, 3)]))
    ring = np.ones((3, 3), bool)
    ring[1, 1] = False
    (donut,) = _outline_polygons(ring)
    assert _same(donut, shapely.Polygon([(0, 0), (3, 0), (3, 3), (0, 3)], [[(1, 1), (2, 1), (2, 2), (1, 2)]]))
    # the hole (1, 1) touches the outside at corner (1, 1): shell and hole are separate rings meeting there
    pinch = np.array([[0, 1, 1],
                      [1, 0, 1],
                      [1, 1, 1]], bool)
    (got,) = _outline_polygons(pinch)
    assert shapely.is_valid(got) and got.area == 7 and len(got.interiors) == 1
    assert _same(got, shapely.Polygon([(1, 0), (3, 0), (3, 3), (0, 3), (0, 1), (1, 1)],
                                      [[(1, 1), (2, 1), (2, 2), (1, 2)]]))
    # two holes meeting at a corner: two hole rings
    holes = np.ones((4, 4), bool)
    holes[1, 1] = holes[2, 2] = False
    (got,) = _outline_polygons(holes)
    assert shapely.is_valid(got) and len(got.interiors) == 2 and got.area == 14
    # diagonal pixels are separate 4-connected regions: two squares
    diagonal = np.eye(2, dtype=bool)
    got = _outline_polygons(diagonal)
    assert [g.area for g in got] == [1, 1] and _same(got[1], shapely.box(1, 1, 2, 2))


@pytest.mark.parametrize("density", [0.2, 0.5, 0.8])
def test_outlines_equal_gdal_polygonize(density):
    """The same polygons as GDAL's polygonize (rasterio.features.shapes, 4-connected) on random masks."""
    import rasterio.features

    for _ in range(150):
        mask = RNG.random(tuple(RNG.integers(1, 16, 2))) < density
        regions, n, _ = kernels.label(mask, 4)
        gdal = {int(v): shapely.geometry.shape(g) for g, v in rasterio.features.shapes(regions, mask=mask, connectivity=4)}
        ours = _outline_polygons(mask)
        assert len(ours) == n == len(gdal)
        for g, polygon in enumerate(ours, start=1):
            assert shapely.is_valid(polygon) and polygon.area == (regions == g).sum()
            assert _same(polygon, gdal[g])


def test_outlines_refuse_labels_beyond_count():
    with pytest.raises(ValueError, match="region values"):
        kernels.outlines(np.array([[0, 3]], np.int32), 2)


def test_bit_counts_by_hand():
    """Pixels per label with each bit of their value set: label 1 has values 0b011, 0b001; label 2 has 0b100."""
    n, _, _, runs = kernels.component_runs(np.array([[1, 1, 0, 1]], bool), 8)
    values = np.array([[3, 1, 7, 4]], np.uint8)  # the background value 7 counts nowhere
    np.testing.assert_array_equal(kernels.run_histogram(runs, values, n, 3, bits=True), [[0, 0, 0], [2, 1, 0], [0, 0, 1]])


@pytest.mark.parametrize("depth", [0, 1, 2, 3, 4, 5, 10, 13])
def test_ecosystem_edges_equal_scipy_per_group(depth):
    """Core flags and edge sides of every ecosystem type and of all natural land, against one scipy taxicab
    distance transform per group (the per-group computation they replace). Classes: 0 unmapped, 1, 2 non-natural,
    3, 4 forest (ecosystem 0), 5 savanna (1), 6 wetland (2); unmapped pixels are neither group nor edge."""
    eco_of_class = np.array([-1, -1, -1, 0, 0, 1, 2], np.int8)
    first_class, halo = 1, max(depth, 1)
    for k in range(30):
        shape = tuple(RNG.integers(2 * halo + 1, 2 * halo + 40, 2))
        block = (1, 3, 9)[k % 3]  # white noise, then clustered classes (blocks of 3 and 9 px) that leave core
        small = RNG.choice(7, size=(shape[0] // block + 1, shape[1] // block + 1), p=[.05, .1, .1, .3, .15, .2, .1])
        lc = np.kron(small, np.ones((block, block), int))[:shape[0], :shape[1]].astype(np.uint8)
        code, core, sides = kernels.ecosystem_edges(lc, eco_of_class, first_class=first_class, depth=depth, halo=halo)
        interior = (slice(halo, lc.shape[0] - halo), slice(halo, lc.shape[1] - halo))
        mapped = lc >= first_class
        eco = eco_of_class[lc]
        for group, member, core_bit, shift in [(e, eco == e, 1, 0) for e in range(3)] + [("natural", eco >= 0, 2, 4)]:
            other = mapped & ~member if group != "natural" else mapped & (eco < 0)
            far = ndimage.distance_transform_cdt(~other, metric="taxicab") > depth if other.any() else np.ones(lc.shape, bool)
            padded = np.pad(other, 1)
            n_sides = sum(np.roll(padded, s, axis=a)[1:-1, 1:-1].astype(int) for s in (1, -1) for a in (0, 1))
            inner = member[interior]
            if group != "natural":
                np.testing.assert_array_equal(code == group + 1, inner)
            np.testing.assert_array_equal((core & core_bit > 0)[inner], far[interior][inner])
            np.testing.assert_array_equal(((sides >> shift) & 15)[inner], n_sides[interior][inner])


def test_pair_lookup_by_hand():
    table = np.array([[0, 1], [2, 3]], np.int32)
    a, b = np.array([[0, 1, 1]], np.uint8), np.array([[1, 0, 1]], np.uint8)
    np.testing.assert_array_equal(kernels.pair_lookup(table, a, b), [[1, 2, 3]])
    with pytest.raises(ValueError, match="class index"):
        kernels.pair_lookup(table, a, np.array([[2, 0, 0]], np.uint8))


def test_nonzero_bounds_equal_numpy():
    """The box of nonzero pixels: by hand, then against numpy's any() on random masks of every density."""
    mask = np.zeros((5, 7), bool)
    assert kernels.nonzero_bounds(mask) == (0, 0, 0, 0)
    mask[1, 5] = mask[3, 2] = True
    assert kernels.nonzero_bounds(mask) == (1, 4, 2, 6)
    rng = np.random.default_rng(3)
    for _ in range(500):
        shape = tuple(rng.integers(1, 12, 2))
        mask = rng.random(shape) < rng.choice([0.0, 0.01, 0.1, 0.5, 1.0])
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        expected = (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) if mask.any() else (0, 0, 0, 0)
        assert kernels.nonzero_bounds(mask) == expected


@pytest.mark.parametrize("n_faces", [1, 400])  # 400 faces: three passes of at most 170 faces each
def test_flag_counts_equal_numpy(n_faces):
    """Counts of natural-both, any-degraded, per-rule degraded and improved pixels per (face, ecosystem) from the
    (face, ecosystem, bits) key histogram, against numpy sums over the pixels."""
    n_rules, n_eco, shape = 5, 6, (60, 70)
    eco_of_class = np.array([-1, -1, 0, 1, 2, 3, 4, 5], np.int8)
    lc_a = RNG.integers(0, eco_of_class.size, shape).astype(np.uint8)
    flags = (RNG.integers(0, 1 << n_rules, shape) | (RNG.integers(0, 1 << n_rules, shape) << 8)).astype(np.uint16)
    flags |= np.where(RNG.random(shape) < 0.7, kernels.NATURAL_BOTH, 0).astype(np.uint16)
    face = RNG.integers(0, n_faces, shape).astype(np.int32)
    got = kernels.flag_counts(flags, lc_a, face, eco_of_class=eco_of_class, n_faces=n_faces, n_eco=n_eco, n_rules=n_rules)
    want = np.zeros_like(got)
    both = (flags & kernels.NATURAL_BOTH) > 0
    for f, e, fl in zip(face[both], np.maximum(eco_of_class, 0)[lc_a][both], flags[both], strict=True):
        want[f, e, 0] += 1
        want[f, e, 1] += (fl & 0xFF) > 0
        want[f, e, 2:2 + n_rules] += (fl >> np.arange(n_rules)) & 1
        want[f, e, 2 + n_rules:] += (fl >> (8 + np.arange(n_rules))) & 1
    np.testing.assert_array_equal(got, want)
    whole = kernels.flag_counts(flags, lc_a, None, eco_of_class=eco_of_class, n_faces=1, n_eco=n_eco, n_rules=n_rules)
    np.testing.assert_array_equal(whole[0], want.sum(axis=0))


@pytest.mark.parametrize("neighbourhood", [4, 8])
def test_run_regions_equal_label_of_kept_image(neighbourhood):
    """The 4-connected regions of the kept labels, joined run to run, are scipy's 4-connected labels of the
    kept pixels (same numbering), each region's first run starting at its first pixel."""
    for density in (0.3, 0.6):
        mask = RNG.random((45, 61)) < density
        n, count, _, runs = kernels.component_runs(mask, neighbourhood)
        keep = count >= 3
        keep[0] = False
        image = kernels.runs_image(mask.shape, runs)
        want, n_want = ndimage.label(keep[image])
        got_n, region, first_run = kernels.run_regions(runs, keep)
        assert got_n == n_want
        row_first, start, end, run_label = runs
        got = np.zeros(mask.shape, np.int32)
        kernels.paint_runs(got, (0, 0), (row_first, start, end, np.arange(start.size)), region)
        np.testing.assert_array_equal(got, want)
        rows = np.searchsorted(row_first, first_run, side="right") - 1
        ids, first = np.unique(want.ravel(), return_index=True)
        np.testing.assert_array_equal(rows * mask.shape[1] + start[first_run], first[ids > 0])


def test_value_counts_equal_bincount():
    for dtype, size in ((np.uint8, 256), (np.uint16, 300), (np.int32, 7)):
        values = RNG.integers(0, min(size, np.iinfo(dtype).max + 1), (37, 41)).astype(dtype)
        np.testing.assert_array_equal(kernels.value_counts(values, size), np.bincount(values.ravel(), minlength=size))
    with pytest.raises(ValueError, match="value values must lie in"):
        kernels.value_counts(np.array([[3, 7]], np.int32), 7)


def _mode_2x2_by_hand(codes: np.ndarray, nodata: int | None) -> np.ndarray:
    """The most frequent code of each 2x2 block, smallest on ties, nodata left out: np.unique block by block."""
    rows, cols = codes.shape
    out = np.empty(((rows + 1) // 2, (cols + 1) // 2), codes.dtype)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            block = codes[2 * i:2 * i + 2, 2 * j:2 * j + 2].ravel()
            block = block[block != nodata] if nodata is not None else block
            if not block.size:
                out[i, j] = nodata
                continue
            values, counts = np.unique(block, return_counts=True)  # sorted: argmax takes the smallest of ties
            out[i, j] = values[np.argmax(counts)]
    return out


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", SHAPES)
def test_mode_2x2_equals_a_count_by_hand(dtype, shape):
    top = int(np.iinfo(dtype).max)
    for nodata in (0, top, None):
        for n_codes in (2, 4, 40):
            codes = RNG.choice(np.unique(np.r_[0, 1, top, np.arange(2, n_codes)]).astype(dtype), size=shape)
            np.testing.assert_array_equal(kernels.mode_2x2(codes, nodata), _mode_2x2_by_hand(codes, nodata))
    # ties go to the smallest code, whatever the order; a block of nodata stays nodata
    block = np.array([[9, 3], [3, 9]], dtype)
    assert kernels.mode_2x2(block, 0)[0, 0] == 3
    assert kernels.mode_2x2(np.array([[0, 0], [0, 5]], dtype), 0)[0, 0] == 5
    assert kernels.mode_2x2(np.zeros((2, 3), dtype), 0).tolist() == [[0, 0]]
    with pytest.raises(ValueError, match="uint8 or uint16"):
        kernels.mode_2x2(np.zeros((2, 2), np.int32), 0)
