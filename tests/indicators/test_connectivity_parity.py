"""Connectivity metrics against pylandstats, across chunkings and per zone (DESIGN.md §4).

Oracle: pylandstats 3.1 ``Landscape(arr, res=(30, 30), nodata=0, neighborhood_rule="8" or "4")``, class level.
pylandstats has a single nodata value, so its arrays code both "outside the boundary" (0) and "unmapped"
(legend nodata 27) as 0; then its ``landscape_area`` is our A (mapped pixels). Every natural legend class is
given its own ecosystem type, so an ecosystem row is one pylandstats class (``class_val`` = product code);
``all_natural`` is compared with pylandstats on a binary array (natural 1, non-natural 2, nodata 0).

Definitions as read in pylandstats/landscape.py (3.1.0); a = patch area, n = patches, A = landscape area:

- patch_count = ``number_of_patches``: ``ndimage.label`` with the 8- or 4-neighbour kernel. Same.
- patch_density = ``patch_density()`` = n · 100 · 10⁴ / A[m²], i.e. per 100 ha (its defaults
  percent=True, hectares=True). Same.
- largest_patch_index = ``largest_patch_index()`` = 100 · max a / A (%). Same.
- mean_patch_area_ha = ``area_mn()`` = mean of a (ha). Same.
- area_weighted_mean_patch_ha = ``area_am()`` = ``np.average(a, weights=a)`` = Σa² / Σa. Same.
- effective_mesh_size_ha = ``effective_mesh_size()`` = Σa² / A / 10⁴ (ha). Same.
- edge_density_m_per_ha = ``edge_density(count_boundary=False)``: sides of class pixels facing a pixel of
  another class (sides facing nodata or the array border are dropped from its adjacency table) · cell width
  · 10⁴ / A. Same.
- core_area_ha vs ``total_core_area(edge_depth=k)``: DIFFERS (ours >= pylandstats). Both keep the class
  pixels that survive k iterations of 4-neighbour (cross) erosion (``compute_core_label_arr``; FRAGSTATS
  does the same), k = round(edge_depth_m / 30). pylandstats erodes from everything that is not the class:
  the array border (scipy's ``binary_erosion`` treats outside as background, border_value=0) and nodata
  pixels. ``count_boundary`` does not change that: True (its default for total_core_area) pads nothing, False
  pads with 0, and both erode from the border. Ours erodes only from other *mapped* classes, because the
  study-area edge and unobserved pixels are not habitat edges. So:
  (1) on arrays whose outer ring is pasture and that hold no nodata, no class pixel is within k px of the
  border or nodata, and ours == ``total_core_area`` (asserted);
  (2) on every array, ours == pylandstats's own erosion (``compute_core_label_arr``) run on the array with
  nodata pixels turned into the class and a k-pixel margin of the class around it (asserted);
  (3) ours >= ``total_core_area`` everywhere (asserted). Examples: 7 x 7 forest with one unmapped pixel in
  the middle, k = 1: ours 48 px = 4.32 ha, pylandstats 20 px = 1.80 ha. Lourenço 2022 (band 38), k = 2:
  forest ours 157,451.40 ha vs pylandstats 156,489.84 ha (+961.56 ha = 10,684 px, the 2-px strip along
  the 1,341 x 1,341 border and around the 2,891 unmapped pixels); all natural 157,525.92 vs 156,563.46 ha.

Per zone (our definition, no pylandstats counterpart): a zone's patch parts are the pixels of each
whole-landscape patch inside the zone, so a patch that leaves a zone and comes back counts once with its
parts summed; pylandstats on the clipped zone counts the pieces as separate patches (asserted on a U-shaped
patch: ours MESH = 36/9 px, pylandstats on the clip 18/9 px). Edge sides and core pixels are counted in
the zone where the pixel lies, with neighbours looked up across the zone boundary.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pylandstats
import pytest
import rasterio
from pylandstats.landscape import compute_core_label_arr
from rasterio.windows import Window
from scipy import ndimage

from pipeline.indicators import connectivity
from pipeline.testing import make_config, make_context, make_grid, make_legend, make_stack, pixel_box

RES = 30.0
PX_HA = 0.09  # one 30 m pixel
OUTSIDE, UNMAPPED = 0, 27  # product codes: outside the boundary; the legend's nodata
F, G, P, M, W = 3, 12, 15, 30, 33  # Forest, Grassland, Pasture, Mining, River in pipeline.testing.SMALL_LEGEND
ALL = "all_natural"
RTOL = 1e-9
METRICS = ("patch_count", "patch_density", "largest_patch_index", "mean_patch_area_ha",
           "area_weighted_mean_patch_ha", "effective_mesh_size_ha", "edge_density_m_per_ha", "core_area_ha")
STRUCTURE = {4: ndimage.generate_binary_structure(2, 1), 8: ndimage.generate_binary_structure(2, 2)}

LOURENCO = Path("data/raw/lourenco/mapbiomas_c8_lourenco_1985_2022.tif")  # 1341 x 1341, band b = 1984 + b
ARAGUARI = Path("tests/data/araguari/mapbiomas_c6_araguari_2020.tif")  # uint16, nodata 65535, some 0s
# 800 x 800 px with neither 0 nor 65535 and ten classes (3 4 9 11 12 15 30 33 39 41), found by a scan of the
# file in 100 px steps; _araguari_window() asserts it is still clean.
ARAGUARI_WINDOW = Window(col_off=4800, row_off=2400, width=800, height=800)

# Natural class -> its own ecosystem type (so an ecosystem is one product code); the rest are non-natural.
# The type names are labels for these tests only (floodable forest is not mangrove).
LOURENCO_NATURAL = {3: "forest", 6: "mangrove", 11: "wetland", 12: "savanna_grassland", 33: "water"}
LOURENCO_OTHER = (15, 24, 30, 41)  # pasture, urban, mining, other temporary crops; 27 = nodata (legend)
ARAGUARI_NATURAL = {3: "forest", 4: "savanna_grassland", 11: "wetland", 12: "other_natural", 33: "water"}
ARAGUARI_OTHER = (9, 15, 24, 30, 39, 41)  # plantation, pasture, urban, mining, soy, other crops
SMALL_NATURAL = {F: "forest", G: "savanna_grassland", W: "water"}
SMALL_OTHER = (P, M)


# ------------------------------------------------------------------------------------------ helpers
def _classes(natural: dict[int, str], other: tuple[int, ...]) -> dict:
    """Legend classes for make_legend: each natural code its own ecosystem type."""
    classes = {c: {"name": f"{eco} ({c})", "natural": True, "ecosystem": eco} for c, eco in natural.items()}
    return classes | {c: {"name": f"non-natural ({c})", "natural": False} for c in other}


def _compute(years: dict[int, np.ndarray], natural: dict[int, str], other: tuple[int, ...], *, neighbourhood: int,
             depth_px: int, chunks: tuple[int, int] | None = None, zones=None, min_patch_ha: float = 0):
    """Our connectivity result for product-code arrays (one per year); chunks None = one chunk."""
    shape = next(iter(years.values())).shape
    cy, cx = shape if chunks is None else chunks
    grid = make_grid(shape, res_m=RES, chunk_px=max(cy, cx))
    legend = make_legend(_classes(natural, other))
    cfg = make_config(sorted(years), indicators={"connectivity": {
        "neighbourhood": neighbourhood, "edge_depth_m": RES * depth_px, "min_patch_ha": min_patch_ha,
        "dispersal_m": [1000]}})
    ctx = make_context(grid, legend, cfg, zones=zones(grid) if zones else None)
    stack = make_stack(years, legend, grid).chunk({"y": cy, "x": cx})
    return connectivity.compute(stack, ctx)


def _value(table: pd.DataFrame, metric: str, *, ecosystem: str = ALL, year: int = 2000,
           zone_layer: str = "landscape", zone: str | None = None) -> float:
    rows = table[(table.metric == metric) & (table.ecosystem == ecosystem) & (table.year == year)
                 & (table.zone_layer == zone_layer)]
    if zone is not None:
        rows = rows[rows.zone == zone]
    assert len(rows) == 1, (metric, ecosystem, year, zone_layer, zone, len(rows))
    return float(rows["value"].iloc[0])


def _ring(arr: np.ndarray, code: int = P) -> np.ndarray:
    """``arr`` with its outermost pixel line replaced by ``code`` (same shape)."""
    out = arr.copy()
    out[0, :] = out[-1, :] = out[:, 0] = out[:, -1] = code
    return out


def _pls_codes(arr: np.ndarray) -> np.ndarray:
    """Product codes for pylandstats: outside and unmapped -> 0 (its nodata)."""
    return np.where(arr == UNMAPPED, 0, arr).astype(arr.dtype)


def _pls_binary(arr: np.ndarray, natural: dict[int, str]) -> np.ndarray:
    """Natural 1, mapped non-natural 2, outside/unmapped 0."""
    nodata = (arr == OUTSIDE) | (arr == UNMAPPED)
    return np.where(nodata, 0, np.where(np.isin(arr, list(natural)), 1, 2)).astype(np.uint8)


def _pls_metrics(ls: pylandstats.Landscape, class_val: int, depth_px: int) -> dict[str, float]:
    """pylandstats's numbers for our metric names (core: see module docstring, compared separately)."""
    return {
        "patch_count": ls.number_of_patches(class_val=class_val),
        "patch_density": ls.patch_density(class_val=class_val),
        "largest_patch_index": ls.largest_patch_index(class_val=class_val),
        "mean_patch_area_ha": ls.area_mn(class_val=class_val),
        "area_weighted_mean_patch_ha": ls.area_am(class_val=class_val),
        "effective_mesh_size_ha": ls.effective_mesh_size(class_val=class_val),
        "edge_density_m_per_ha": ls.edge_density(class_val=class_val, count_boundary=False),
        "total_core_area": ls.total_core_area(class_val=class_val, edge_depth=depth_px, count_boundary=False),
    }


def _core_without_border_or_nodata_edges(pls_arr: np.ndarray, class_val: int, depth_px: int) -> float:
    """Core ha by pylandstats's erosion after nodata pixels become the class and a ``depth_px`` margin of the
    class surrounds the array: only other classes erode; counted on the original class pixels."""
    cls = pls_arr == class_val
    filled = np.pad(cls | (pls_arr == 0), depth_px, constant_values=True)
    core = compute_core_label_arr(filled.astype(np.int32), True, depth_px)[depth_px:-depth_px, depth_px:-depth_px]
    return int(((core > 0) & cls).sum()) * PX_HA


def _same(metric: str, got: float, want: float) -> bool:
    if metric == "patch_count":
        return got == want
    return math.isclose(got, want, rel_tol=RTOL, abs_tol=0.0)


def _clustered(shape: tuple[int, int], seed: int, *, nodata: bool) -> np.ndarray:
    """Smoothed Gaussian noise cut at quantiles into pasture 30 %, forest 25 %, grassland 20 %, river 15 %,
    mining 10 %; with ``nodata``, a smoothed blob of unmapped (27, about 4 %) and an outside corner (0)."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), 3)
    cuts = np.quantile(noise, [0.30, 0.55, 0.75, 0.90])
    arr = np.array([P, F, G, W, M], np.uint8)[np.searchsorted(cuts, noise)]
    if nodata:
        blob = ndimage.gaussian_filter(rng.standard_normal(shape), 4)
        arr[blob > np.quantile(blob, 0.96)] = UNMAPPED
        rows, cols = np.indices(shape)
        arr[rows + cols < 15] = OUTSIDE
    return arr


def _random(shape: tuple[int, int], seed: int, *, nodata: bool) -> np.ndarray:
    """Independent pixels: forest 55 %, grassland 10 %, pasture 20 %, river 5 %, mining 5 %, unmapped 5 %
    (pasture instead of unmapped without ``nodata``)."""
    codes = np.array([F, G, P, W, M, UNMAPPED if nodata else P], np.uint8)
    return np.random.default_rng(seed).choice(codes, size=shape, p=[0.55, 0.10, 0.20, 0.05, 0.05, 0.05])


def _band(band: int) -> np.ndarray:
    with rasterio.open(LOURENCO) as src:
        return src.read(band)


def _araguari_window() -> np.ndarray:
    with rasterio.open(ARAGUARI) as src:
        arr = src.read(1, window=ARAGUARI_WINDOW)
    assert arr.shape == (800, 800) and not np.isin(arr, [0, 65535]).any()
    return arr


# ------------------------------------------------------------------------------------------ parity cases
@dataclass(frozen=True)
class Case:
    """Arrays per year; ``ringed`` years have a pasture outer ring and no nodata (core equals pylandstats)."""

    years: dict[int, np.ndarray]
    natural: dict[int, str]
    other: tuple[int, ...]
    depth_px: int
    chunks: tuple[int, int] | None
    ringed: tuple[int, ...]


@functools.cache
def _case(name: str) -> Case:
    if name == "lourenco":  # 2022 (band 38; 27 = unmapped, also on the border) and 1985 (band 1)
        return Case({2000: _band(38), 2010: _band(1)}, LOURENCO_NATURAL, LOURENCO_OTHER, 2, (448, 640), ())
    if name == "araguari":  # the window with a pasture ring, and as read
        window = _araguari_window()
        return Case({2000: _ring(window), 2010: window}, ARAGUARI_NATURAL, ARAGUARI_OTHER, 3, (256, 300), (2000,))
    if name == "clustered":  # 157 x 203 at chunks 64: neither dimension a multiple
        return Case({2000: _clustered((157, 203), 0, nodata=True), 2010: _ring(_clustered((157, 203), 1, nodata=False))},
                    SMALL_NATURAL, SMALL_OTHER, 2, (64, 64), (2010,))
    if name == "random":  # 91 x 77 at chunks (40, 30)
        return Case({2000: _random((91, 77), 2, nodata=True), 2010: _ring(_random((91, 77), 3, nodata=False))},
                    SMALL_NATURAL, SMALL_OTHER, 1, (40, 30), (2010,))
    raise KeyError(name)


# No patch reaches this: ECA and patch polygons, which pylandstats cannot check and which take most of the time
# (about 47 s of 49 s on the Araguari window, 4-neighbour), are skipped; class metrics use every patch whatever
# min_patch_ha is (test_min_patch_area_leaves_class_metrics_alone).
NO_ECA_HA = 1e12
# The core-area differences quoted in the module docstring: (ours, pylandstats total_core_area) in ha.
DOCUMENTED_CORE = {("lourenco", 2000, "forest"): (157_451.40, 156_489.84), ("lourenco", 2000, ALL): (157_525.92, 156_563.46)}


@functools.cache
def _ours(name: str, neighbourhood: int) -> pd.DataFrame:
    c = _case(name)
    return _compute(c.years, c.natural, c.other, neighbourhood=neighbourhood, depth_px=c.depth_px,
                    chunks=c.chunks, min_patch_ha=NO_ECA_HA).table


@pytest.mark.parametrize("neighbourhood", [8, 4])
@pytest.mark.parametrize("name", ["lourenco", "araguari", "clustered", "random"])
def test_class_metrics_match_pylandstats(name, neighbourhood):
    """Every ecosystem type and all_natural, every year: the seven area/edge metrics equal pylandstats's;
    core area as stated in the module docstring (equal on ringed years, ours >= pylandstats elsewhere)."""
    c = _case(name)
    table = _ours(name, neighbourhood)
    failures, checked = [], 0
    for year, arr in c.years.items():
        targets = [(_pls_codes(arr), {eco: code for code, eco in c.natural.items()}),
                   (_pls_binary(arr, c.natural), {ALL: 1})]
        for pls_arr, class_of in targets:
            ls = pylandstats.Landscape(pls_arr, res=(RES, RES), nodata=0, neighborhood_rule=str(neighbourhood))
            for group, class_val in class_of.items():
                want = _pls_metrics(ls, class_val, c.depth_px)
                assert want["patch_count"] > 0, (name, year, group)
                want["core_area_ha"] = _core_without_border_or_nodata_edges(pls_arr, class_val, c.depth_px)
                pls_core = want.pop("total_core_area")
                got = {m: _value(table, m, ecosystem=group, year=year) for m in METRICS}
                for metric in METRICS:
                    checked += 1
                    if not _same(metric, got[metric], want[metric]):
                        failures.append(f"{year} {group} {metric}: ours {got[metric]!r} pylandstats {want[metric]!r}")
                if year in c.ringed and not _same("core_area_ha", got["core_area_ha"], pls_core):
                    failures.append(f"{year} {group} core_area_ha (ringed): ours {got['core_area_ha']!r} "
                                    f"pylandstats total_core_area {pls_core!r}")
                if (name, year, group) in DOCUMENTED_CORE:
                    assert (got["core_area_ha"], pls_core) == pytest.approx(DOCUMENTED_CORE[name, year, group], rel=RTOL)
                if got["core_area_ha"] < pls_core * (1 - RTOL):
                    failures.append(f"{year} {group} core_area_ha {got['core_area_ha']!r} < pylandstats {pls_core!r}")
    assert checked >= 2 * 4 * len(METRICS)
    assert not failures, "\n".join(failures)


def test_min_patch_area_leaves_class_metrics_alone():
    """min_patch_ha only selects ECA nodes and polygons: the class metric rows are identical with 0 and 10¹² ha."""
    c = _case("clustered")
    tables = [_compute(c.years, c.natural, c.other, neighbourhood=8, depth_px=2, chunks=c.chunks,
                       min_patch_ha=min_ha).table for min_ha in (0, NO_ECA_HA)]
    rows = [t[t.metric.isin(METRICS)].reset_index(drop=True) for t in tables]
    assert len(rows[0]) == 2 * 4 * len(METRICS)  # 2 years, 3 ecosystems + all_natural
    pd.testing.assert_frame_equal(*rows, check_exact=True)


def test_core_area_border_and_nodata_are_not_edges():
    """7 x 7 forest with one unmapped pixel in the middle, k = 1 px: no other class, so all 48 forest pixels
    are core for us; pylandstats erodes the 24 border pixels and the 4 neighbours of the unmapped one (20 px
    left), whatever count_boundary is. Every other metric agrees."""
    arr = np.full((7, 7), F, np.uint8)
    arr[3, 3] = UNMAPPED
    table = _compute({2000: arr, 2010: arr}, SMALL_NATURAL, SMALL_OTHER, neighbourhood=8, depth_px=1)
    ls = pylandstats.Landscape(_pls_codes(arr), res=(RES, RES), nodata=0)
    assert ls.total_core_area(class_val=F, edge_depth=1, count_boundary=False) == pytest.approx(20 * PX_HA, rel=RTOL)
    assert ls.total_core_area(class_val=F, edge_depth=1, count_boundary=True) == pytest.approx(20 * PX_HA, rel=RTOL)
    assert _value(table.table, "core_area_ha", ecosystem="forest") == pytest.approx(48 * PX_HA, rel=RTOL)
    assert _value(table.table, "core_area_ha") == pytest.approx(48 * PX_HA, rel=RTOL)
    assert _value(table.table, "effective_mesh_size_ha", ecosystem="forest") == pytest.approx(
        ls.effective_mesh_size(class_val=F), rel=RTOL)  # 48 px / 48 px of A: the whole mapped area
    assert _value(table.table, "edge_density_m_per_ha", ecosystem="forest") == 0 == ls.edge_density(class_val=F)
    # the same forest inside a pasture ring: one eroding source for both, equal cores (5x5 forest, k=1 -> 3x3)
    ringed = _ring(np.full((7, 7), F, np.uint8))
    table = _compute({2000: ringed, 2010: ringed}, SMALL_NATURAL, SMALL_OTHER, neighbourhood=8, depth_px=1)
    ls = pylandstats.Landscape(ringed, res=(RES, RES), nodata=0)
    assert _value(table.table, "core_area_ha", ecosystem="forest") == pytest.approx(9 * PX_HA, rel=RTOL)
    assert ls.total_core_area(class_val=F, edge_depth=1) == pytest.approx(9 * PX_HA, rel=RTOL)


# ------------------------------------------------------------------------------------------ chunk invariance
def _assert_same_result(result, expected, label: str) -> None:
    """Tables identical (exact); patch layers identical, geometries vertex for vertex (WKB)."""
    pd.testing.assert_frame_equal(result.table, expected.table, check_exact=True, obj=f"table at {label}")
    got, want = result.features["patches"], expected.features["patches"]
    pd.testing.assert_frame_equal(pd.DataFrame(got.drop(columns="geometry")),
                                  pd.DataFrame(want.drop(columns="geometry")), check_exact=True,
                                  obj=f"patches at {label}")
    assert got.crs == want.crs
    same = got.geometry.to_wkb().to_numpy() == want.geometry.to_wkb().to_numpy()
    assert same.all(), f"{label}: {(~same).sum()} of {len(same)} patch geometries differ"


def _lourenco_crops() -> dict[int, np.ndarray]:
    """160 x 200 px of 2022: rows 620-779, cols 620-819 (forest, floodable forest, wetland,
    grassland, pasture, urban, mining, river), and the top-left corner (forest, pasture, 160 unmapped)."""
    band = _band(38)
    return {2000: band[620:780, 620:820], 2010: band[:160, :200]}


# 160 x 200 px: (64, 64) 3 x 4 chunks; (37, 53) 5 x 4; (100, 7) 2 x 29, the last 4 px wide (halo 2 px)
@pytest.mark.parametrize("chunks", [(64, 64), (37, 53), (100, 7)], ids=str)
@pytest.mark.parametrize("neighbourhood", [8, 4])
def test_real_array_same_result_at_every_chunking(neighbourhood, chunks):
    years = _lourenco_crops()
    run = functools.partial(_compute, years, LOURENCO_NATURAL, LOURENCO_OTHER, neighbourhood=neighbourhood, depth_px=2)
    whole = run()
    assert _value(whole.table, "patch_count", ecosystem="forest") > 1
    _assert_same_result(run(chunks=chunks), whole, f"chunks {chunks}")


@pytest.mark.slow
@pytest.mark.parametrize("neighbourhood", [8, 4])
def test_whole_lourenco_same_result_at_small_chunks(neighbourhood):
    years = {2000: _band(38), 2010: _band(1)}
    run = functools.partial(_compute, years, LOURENCO_NATURAL, LOURENCO_OTHER, neighbourhood=neighbourhood, depth_px=2)
    whole = run()
    _assert_same_result(run(chunks=(64, 64)), whole, "chunks (64, 64)")  # 21 x 21 chunks, about 30 s


EYE_CHUNKINGS = [None, (5, 5), (3, 3), (4, 7)]


@pytest.mark.parametrize("flip", [False, True], ids=["diagonal", "anti-diagonal"])
def test_diagonal_crossing_a_chunk_corner(flip):
    """rasterio's 10 x 10 diagonal_image (forest on the diagonal, pasture elsewhere): 8-neighbour one patch of
    10 px, 4-neighbour ten patches of 1 px, at every chunking; at (5, 5) the diagonal crosses the chunk corner."""
    eye = np.where(np.eye(10, dtype=bool), F, P).astype(np.uint8)
    eye = np.fliplr(eye) if flip else eye
    years = {2000: eye, 2010: eye}
    for neighbourhood, n_patches in [(8, 1), (4, 10)]:
        whole = _compute(years, SMALL_NATURAL, SMALL_OTHER, neighbourhood=neighbourhood, depth_px=1)
        for chunks in EYE_CHUNKINGS:
            result = whole if chunks is None else _compute(years, SMALL_NATURAL, SMALL_OTHER,
                                                           neighbourhood=neighbourhood, depth_px=1, chunks=chunks)
            assert _value(result.table, "patch_count") == n_patches, (neighbourhood, chunks)
            assert _value(result.table, "largest_patch_index") == pytest.approx(100 * (10 // n_patches) / 100, rel=RTOL)
            assert len(result.features["patches"]) == 4 * n_patches  # forest and all_natural, two years
            _assert_same_result(result, whole, f"chunks {chunks}, {neighbourhood}-neighbour")


def _spiral(n: int) -> np.ndarray:
    """A 1-px wide square spiral path from the top-left corner inwards, its turns 1 px apart (n odd)."""
    arr = np.zeros((n, n), bool)
    r = c = 0
    arr[r, c] = True
    lengths = [n - 1, n - 1, n - 1] + [k for k in range(n - 3, 0, -2) for _ in range(2)]
    for i, length in enumerate(lengths):
        dr, dc = [(0, 1), (1, 0), (0, -1), (-1, 0)][i % 4]
        for _ in range(length):
            r, c = r + dr, c + dc
            arr[r, c] = True
    return arr


def test_spiral_is_one_patch_at_every_chunking():
    """A 41 x 41 forest spiral (881 px) crosses the seam between rows 19 and 20 19 times and the one between
    columns 19 and 20 21 times; chunked (20, 20) it falls into 45 chunk-local pieces, (7, 7) 125, (13, 29) 44.
    One patch at every chunking, 8- and 4-neighbour."""
    spiral = _spiral(41)
    assert ndimage.label(spiral, STRUCTURE[4])[1] == 1 and spiral.sum() == 881
    assert (spiral[19] & spiral[20]).sum() == 19 and (spiral[:, 19] & spiral[:, 20]).sum() == 21
    arr = np.where(spiral, F, P).astype(np.uint8)
    years = {2000: arr, 2010: arr}
    for neighbourhood in (8, 4):
        whole = _compute(years, SMALL_NATURAL, SMALL_OTHER, neighbourhood=neighbourhood, depth_px=1)
        for chunks in [(20, 20), (7, 7), (13, 29)]:
            result = _compute(years, SMALL_NATURAL, SMALL_OTHER, neighbourhood=neighbourhood, depth_px=1, chunks=chunks)
            assert _value(result.table, "patch_count") == 1, (neighbourhood, chunks)
            assert _value(result.table, "largest_patch_index") == pytest.approx(100 * spiral.sum() / spiral.size,
                                                                                rel=RTOL)
            _assert_same_result(result, whole, f"chunks {chunks}, {neighbourhood}-neighbour")
        patches = whole.features["patches"]
        assert len(patches) == 4  # forest and all_natural, two years
        assert patches.area_ha.to_numpy() == pytest.approx(np.full(4, spiral.sum() * PX_HA), rel=RTOL)
        assert patches.geometry.area.to_numpy() == pytest.approx(np.full(4, spiral.sum() * RES**2), rel=RTOL)


# ------------------------------------------------------------------------------------------ zones
def _halves(width: int):
    def zones(grid):
        rows = slice(0, grid.shape[0])
        return {"halves": [("west", pixel_box(grid, rows, slice(0, width))),
                           ("east", pixel_box(grid, rows, slice(width, grid.shape[1])))]}
    return zones


@pytest.mark.parametrize("neighbourhood", [8, 4])
def test_zone_values_are_cut_out_patch_parts(neighbourhood):
    """Two halves: per zone, a_i = pixels of whole-landscape patch i inside the zone and A_zone = mapped pixels
    of the zone: MESH = Σ a_i² / A_zone, LPI = 100 max a_i / A_zone, n = patches with a part, PD, AREA_MN and
    AREA_AM from the same parts; edge sides and
    core pixels are those of the zone's class pixels. Landscape rows are unchanged by adding the zone layer."""
    arr = _clustered((120, 150), 4, nodata=True)
    split = 70
    run = functools.partial(_compute, {2000: arr, 2010: arr}, SMALL_NATURAL, SMALL_OTHER,
                            neighbourhood=neighbourhood, depth_px=1, chunks=(50, 64))
    zoned, plain = run(zones=_halves(split)).table, run().table
    landscape = [t[t.zone_layer == "landscape"].reset_index(drop=True) for t in (zoned, plain)]
    pd.testing.assert_frame_equal(*landscape, check_exact=True)

    mapped = (arr != OUTSIDE) & (arr != UNMAPPED)
    groups = {eco: arr == code for code, eco in SMALL_NATURAL.items()} | {ALL: np.isin(arr, list(SMALL_NATURAL))}
    for group, mask in groups.items():
        labels, n = ndimage.label(mask, STRUCTURE[neighbourhood])
        other = np.pad(mapped & ~mask, 1)
        sides = sum(mask & np.roll(other, shift, axis)[1:-1, 1:-1] for shift in (1, -1) for axis in (0, 1))
        core = mask & ~ndimage.binary_dilation(other, STRUCTURE[4])[1:-1, 1:-1]
        cut = np.intersect1d(labels[:, :split], labels[:, split:])
        assert cut.size > 1, group  # at least one patch (besides background 0) is cut by the zone boundary
        for zone, cols in [("west", slice(0, split)), ("east", slice(split, None))]:
            parts = np.bincount(labels[:, cols].ravel(), minlength=n + 1)[1:].astype(np.float64)
            parts = parts[parts > 0]
            area_ha = mapped[:, cols].sum() * PX_HA
            want = {
                "patch_count": len(parts),
                "patch_density": 100 * len(parts) / area_ha,
                "mean_patch_area_ha": parts.sum() * PX_HA / len(parts),
                "area_weighted_mean_patch_ha": ((parts * PX_HA) ** 2).sum() / (parts.sum() * PX_HA),
                "largest_patch_index": 100 * parts.max() * PX_HA / area_ha,
                "effective_mesh_size_ha": ((parts * PX_HA) ** 2).sum() / area_ha,
                "edge_density_m_per_ha": sides[:, cols].sum() * RES / area_ha,
                "core_area_ha": core[:, cols].sum() * PX_HA,
            }
            for metric, value in want.items():
                got = _value(zoned, metric, ecosystem=group, zone_layer="halves", zone=zone)
                assert _same(metric, got, value), (group, zone, metric, got, value)


def test_zone_counts_a_patch_that_leaves_and_comes_back_once():
    """A U-shaped forest patch open to the west; the west zone (columns 0-2) holds its two arms, joined only in
    the east zone. Ours: 1 patch of 6 px in the west, MESH = 6² / 9 px; pylandstats on the clipped west
    (cutting the raster, not the patches) sees 2 patches, MESH = (3² + 3²) / 9 px."""
    arr = np.array([[F, F, F, F, F],
                    [P, P, P, P, F],
                    [F, F, F, F, F]], np.uint8)
    table = _compute({2000: arr, 2010: arr}, SMALL_NATURAL, SMALL_OTHER, neighbourhood=8, depth_px=1,
                     zones=_halves(3)).table
    west = dict(ecosystem="forest", zone_layer="halves", zone="west")
    assert _value(table, "patch_count", **west) == 1
    assert _value(table, "effective_mesh_size_ha", **west) == pytest.approx(36 / 9 * PX_HA, rel=RTOL)
    assert _value(table, "largest_patch_index", **west) == pytest.approx(100 * 6 / 9, rel=RTOL)
    clip = pylandstats.Landscape(arr[:, :3], res=(RES, RES), nodata=0)
    assert clip.number_of_patches(class_val=F) == 2
    assert clip.effective_mesh_size(class_val=F) == pytest.approx(18 / 9 * PX_HA, rel=RTOL)
