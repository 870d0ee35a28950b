"""Connectivity metrics on arrays a person can check by hand (DESIGN.md §4)."""

import math

import numpy as np
import pandas as pd
import pytest

from pipeline import graph
from pipeline.indicators import connectivity
from pipeline.testing import make_config, make_context, make_grid, make_legend, make_stack, pixel_box

PX = 0.09  # ha, one 30 m pixel
F, W, P = 3, 33, 15  # Forest, River (natural, ecosystem water), Pasture
LC = np.array([[F, F, P, P, W],
               [F, F, P, W, W],
               [P, P, P, P, P],
               [F, P, P, F, F]], np.uint8)
# all natural, 8-neighbour: patches of 4 px (forest block), 3 px (river), 1 px (3,0), 2 px (3,3)-(3,4); A = 20 px
# sides of natural pixels facing pasture: 14 -> 420 m; forest sides facing pasture or river: 9; river sides: 5
# core at depth 1 px (30 m): only (0,0) has no pasture neighbour (the array border is not an edge)


def _connectivity(**overrides):
    return {"neighbourhood": 8, "edge_depth_m": 30, "min_patch_ha": 0, "dispersal_m": [1000]} | overrides


def _run(arr, *, chunks=(2048, 2048), zones=None, config_zones=None, **conn):
    grid = make_grid(arr.shape, chunk_px=chunks[0])
    legend = make_legend()
    cfg = make_config([2000, 2010], indicators={"connectivity": _connectivity(**conn)}, zones=config_zones or {})
    ctx = make_context(grid, legend, cfg, zones=zones(grid) if zones else None)
    stack = make_stack({2000: arr, 2010: arr}, legend, grid).chunk({"y": chunks[0], "x": chunks[1]})
    return connectivity.compute(stack, ctx)


def _value(table, metric, *, ecosystem="all_natural", zone_layer="landscape", zone=None, year=2000):
    rows = table[(table.metric == metric) & (table.ecosystem == ecosystem) & (table.zone_layer == zone_layer)
                 & (table.year == year)]
    if zone is not None:
        rows = rows[rows.zone == zone]
    assert len(rows) == 1, (metric, ecosystem, zone_layer, zone, len(rows))
    return float(rows["value"].iloc[0])


@pytest.fixture(scope="module")
def table():
    return _run(LC).table


def test_patch_metrics_all_natural(table):
    v = lambda m: _value(table, m)  # noqa: E731
    assert v("patch_count") == 4
    assert v("patch_density") == pytest.approx(100 * 4 / (20 * PX))
    assert v("largest_patch_index") == pytest.approx(100 * 4 / 20)
    assert v("mean_patch_area_ha") == pytest.approx(10 / 4 * PX)
    assert v("area_weighted_mean_patch_ha") == pytest.approx((16 + 9 + 1 + 4) / 10 * PX)
    assert v("effective_mesh_size_ha") == pytest.approx((16 + 9 + 1 + 4) / 20 * PX)
    assert v("edge_density_m_per_ha") == pytest.approx(14 * 30 / (20 * PX))
    assert v("core_area_ha") == pytest.approx(1 * PX)


def test_patch_metrics_per_ecosystem(table):
    assert _value(table, "patch_count", ecosystem="forest") == 3
    assert _value(table, "edge_density_m_per_ha", ecosystem="forest") == pytest.approx(9 * 30 / (20 * PX))
    assert _value(table, "patch_count", ecosystem="water") == 1
    assert _value(table, "edge_density_m_per_ha", ecosystem="water") == pytest.approx(5 * 30 / (20 * PX))
    assert _value(table, "largest_patch_index", ecosystem="water") == pytest.approx(15.0)


def test_four_neighbour_rule_splits_diagonal_contacts():
    t = _run(LC, neighbourhood=4).table
    assert _value(t, "patch_count") == 4  # no diagonal-only contact in LC
    eye = np.where(np.eye(10, dtype=bool), F, P).astype(np.uint8)
    for chunks in [(2048, 2048), (5, 5), (3, 4)]:
        assert _value(_run(eye, chunks=chunks, neighbourhood=8).table, "patch_count") == 1
        assert _value(_run(eye, chunks=chunks, neighbourhood=4).table, "patch_count") == 10


def test_core_area_depth_and_border():
    block = np.full((9, 9), P, np.uint8)
    block[1:8, 1:8] = F  # 7 x 7 forest inside pasture
    for depth_m, core_side in [(30, 5), (60, 3), (100, 1), (120, 0)]:  # 100 m rounds to 3 px: 7 - 2*3 = 1
        t = _run(block, edge_depth_m=depth_m).table
        assert _value(t, "core_area_ha", ecosystem="forest") == pytest.approx(core_side**2 * PX), depth_m
    # forest touching the landscape border on the left: the border is not an edge
    block[:, 0] = F
    block[1:8, 1:8] = F
    t = _run(block[1:8, :], edge_depth_m=30).table  # 7 x 9: forest in columns 0-7, pasture in column 8
    assert _value(t, "core_area_ha", ecosystem="forest") == pytest.approx(7 * 7 * PX)  # only column 7 is edge


def test_zone_values_are_patches_cut_at_the_zone():
    def halves(grid):
        return {"halves": [("west", pixel_box(grid, slice(0, 4), slice(0, 2))),
                           ("east", pixel_box(grid, slice(0, 4), slice(2, 5)))]}

    t = _run(LC, zones=halves).table
    west = dict(zone_layer="halves", zone="west")
    east = dict(zone_layer="halves", zone="east")
    assert _value(t, "effective_mesh_size_ha", **west) == pytest.approx((16 + 1) / 8 * PX)
    assert _value(t, "effective_mesh_size_ha", **east) == pytest.approx((9 + 4) / 12 * PX)
    assert _value(t, "patch_count", **west) == 2 and _value(t, "patch_count", **east) == 2
    assert _value(t, "edge_density_m_per_ha", **west) == pytest.approx((1 + 1 + 2 + 2) * 30 / (8 * PX))
    base = _run(LC).table
    land = t[t.zone_layer == "landscape"].reset_index(drop=True)
    pd.testing.assert_frame_equal(land, base[base.zone_layer == "landscape"].reset_index(drop=True))


def _row_of_three():
    row = np.full((1, 41), P, np.uint8)
    row[0, [0, 10, 40]] = F
    return row


def test_eca_three_patches_by_hand():
    """Patches at columns 0, 10 and 40: edge-to-edge 270 m (1-2), 870 m (2-3), 1170 m (1-3). At D = 270 m,
    p12 = 0.5, p23 = 0.5^(870/270), and the best 1-3 path runs through patch 2: 0.5^(1140/270) > 0.5^(1170/270)."""
    t = _run(_row_of_three(), dispersal_m=[270]).table
    p12, p23, p13 = 0.5, 0.5 ** (870 / 270), 0.5 ** (1140 / 270)
    eca = PX * math.sqrt(3 + 2 * (p12 + p23 + p13))
    assert _value(t, "equivalent_connected_area_ha_270m") == pytest.approx(eca, rel=1e-9)
    assert _value(t, "eca_pct_270m") == pytest.approx(100 * eca / (3 * PX), rel=1e-9)


def test_eca_equals_natural_area_when_every_pair_is_certain():
    t = _run(_row_of_three(), dispersal_m=[1e12]).table
    assert _value(t, "equivalent_connected_area_ha_1e+12m") == pytest.approx(3 * PX, rel=1e-8)
    assert _value(t, "eca_pct_1e+12m") == pytest.approx(100, rel=1e-8)


def test_eca_min_patch_area_drops_small_patches_but_keeps_the_denominator():
    t = _run(LC, min_patch_ha=0.2, dispersal_m=[1e12]).table  # only the 4 px and 3 px patches are nodes
    assert _value(t, "equivalent_connected_area_ha_1e+12m") == pytest.approx(7 * PX, rel=1e-8)
    assert _value(t, "eca_pct_1e+12m") == pytest.approx(70, rel=1e-8)


def test_pc_numerators_against_the_formula():
    areas = np.array([1.0, 2.0, 3.0])
    i, j, d = np.array([0, 1, 0]), np.array([1, 2, 2]), np.array([1000.0, 1000.0, 3000.0])
    k = graph.decay_rate(1000, 0.5)
    # p*13 = max(0.125 direct, 0.25 via 2): 1 + 4 + 9 + 2 (2 * 0.5 + 6 * 0.5 + 3 * 0.25) = 23.5
    assert graph.pc_numerators(areas, i, j, d, rates=[k], limit_m=1e9)[0] == pytest.approx(23.5)
    # a limit shorter than 2000 m cuts the 1-3 path: 14 + 2 (1 + 3) = 22
    assert graph.pc_numerators(areas, i, j, d, rates=[k], limit_m=1500)[0] == pytest.approx(22)


def test_prune_distance():
    # p = 0.5 at 1 km -> p = 1e-4 at log2(1e4) km
    assert graph.distance_limit([1000], 0.5, 1e-4) == pytest.approx(1000 * math.log2(1e4))


def test_protconn_two_protected_areas_by_hand():
    """10 x 10 px landscape (9 ha); protected areas of 2 x 2 px (0.36 ha) 3 px apart (90 m): at D = 90 m,
    ProtConn = 100 · sqrt(a² + a² + 2 a² · 0.5) / 9 ha."""
    arr = np.full((10, 10), F, np.uint8)

    def pas(grid):
        return {"pa": [("A", pixel_box(grid, slice(0, 2), slice(0, 2))), ("B", pixel_box(grid, slice(0, 2), slice(5, 7)))]}

    t = _run(arr, zones=pas, config_zones={"pa": {"path": "pa.gpkg", "id_field": "id", "protected": True}},
             dispersal_m=[90]).table
    rows = t[t.metric == "protconn_pct_90m"]
    assert len(rows) == 1 and rows.iloc[0]["zone_layer"] == "pa"
    assert rows.iloc[0]["value"] == pytest.approx(100 * 0.36 * math.sqrt(3) / 9)


def test_change_rows(table):
    t = _run(LC).table
    rows = t[(t.metric == "patch_count_change") & (t.ecosystem == "all_natural") & (t.zone_layer == "landscape")]
    assert rows[["year_from", "year_to", "value"]].values.tolist() == [[2000, 2010, 0.0]]


def test_patches_layer(table):
    result = _run(LC, min_patch_ha=0.15)
    patches = result.features[connectivity.PATCH_LAYER]
    natural = patches[(patches.ecosystem == "all_natural") & (patches.year == 2000)]
    assert sorted(natural["area_ha"].round(6)) == [pytest.approx(2 * PX), pytest.approx(3 * PX), pytest.approx(4 * PX)]
    assert natural.geometry.area.sum() == pytest.approx(9 * 900)
    assert natural["core_ha"].sum() == pytest.approx(PX)
