"""Degradation rules on arrays a person can check by hand (DESIGN.md §4)."""

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import ndimage

from pipeline.config import load_legend
from pipeline.errors import ConfigError
from pipeline.indicators import degradation
from pipeline.testing import LAEA_AT_ORIGIN, make_config, make_context, make_grid, make_legend, make_stack

PX = 0.09
F, OF, G, P, W = 3, 4, 12, 15, 33  # forest (condition 2), open forest (1), grassland, pasture, river
ALL_RULES = ["transition", "condition", "edge", "small_patch", "isolation"]


def _run(a, b, *, chunks=(2048, 2048), rasters=None, **deg):
    grid = make_grid(a.shape, chunk_px=chunks[0], crs=LAEA_AT_ORIGIN)
    legend = make_legend()
    cfg = {"rules": ALL_RULES, "edge_depth_m": 30, "small_patch_ha": 0.01, "large_patch_ha": 0.01,
           "isolation_m": 30} | deg
    config = make_config([2000, 2010], indicators={"degradation": cfg})
    ctx = make_context(grid, legend, config)
    if rasters:
        ctx = type(ctx)(**{**ctx.__dict__, "rasters": rasters(grid)})
    stack = make_stack({2000: a, 2010: b}, legend, grid).chunk({"y": chunks[0], "x": chunks[1]})
    return degradation.compute(stack, ctx)


def _v(table, metric, ecosystem="all_natural", zone_layer="landscape"):
    rows = table[(table.metric == metric) & (table.ecosystem == ecosystem) & (table.zone_layer == zone_layer)]
    assert len(rows) == 1, (metric, ecosystem, len(rows))
    return float(rows["value"].iloc[0])


def _small_case():
    a = np.full((5, 8), F, np.uint8)
    b = a.copy()
    b[0, 0] = OF  # condition 2 -> 1 within forest: the condition rule only
    b[4, 7] = P  # new pasture: its 4-neighbours (3,7) and (4,6) are newly within 30 m of non-natural land
    b[4, 6] = G  # forest -> grassland: transition (tree-covered -> grassland = -1) and edge: two rules, one pixel
    return a, b


def test_each_rule_and_their_union():
    t = _run(*_small_case(), rules=["transition", "condition", "edge"]).table
    assert _v(t, "natural_both_ha") == pytest.approx(39 * PX)
    assert _v(t, "degraded_ha_transition") == pytest.approx(1 * PX)
    assert _v(t, "degraded_ha_condition") == pytest.approx(1 * PX)
    assert _v(t, "degraded_ha_edge") == pytest.approx(2 * PX)
    assert _v(t, "degraded_ha_any") == pytest.approx(3 * PX)  # (4,6) is flagged twice, counted once
    assert _v(t, "stable_ha_edge") == pytest.approx(37 * PX)
    assert _v(t, "degraded_pct_any") == pytest.approx(100 * 3 / 39)
    assert _v(t, "degraded_ha_condition", ecosystem="forest") == pytest.approx(PX)


def test_improvement_is_the_reverse():
    a, b = _small_case()
    t = _run(b, a, rules=["transition", "condition", "edge"]).table
    assert _v(t, "improved_ha_transition") == pytest.approx(PX)  # grassland -> forest = +1
    assert _v(t, "improved_ha_condition") == pytest.approx(PX)
    assert _v(t, "improved_ha_edge") == pytest.approx(2 * PX)
    assert _v(t, "degraded_ha_any") == 0


def test_small_patch_rule():
    a = np.full((1, 10), F, np.uint8)
    b = a.copy()
    b[0, 4] = P  # 10 px (0.9 ha) splits into 4 px and 5 px, both below 0.5 ha
    t = _run(a, b, rules=["small_patch"], small_patch_ha=0.5).table
    assert _v(t, "degraded_ha_small_patch") == pytest.approx(9 * PX)
    t = _run(a, b, rules=["small_patch"], small_patch_ha=0.42).table  # 4 px = 0.36 ha < 0.42 <= 5 px = 0.45 ha
    assert _v(t, "degraded_ha_small_patch") == pytest.approx(4 * PX)


@pytest.mark.parametrize("chunks", [(2048, 2048), (9, 9), (16, 16), (3, 3)])
def test_isolation_rule(chunks):
    """A 20 px forest (1.8 ha, large at 1 ha) shrinks to 10 px (0.9 ha): no large patch is left, so its pixels
    are newly farther than 240 m from any large patch; the island at column 30 (330 m away) was isolated already."""
    a = np.full((1, 40), P, np.uint8)
    a[0, :20] = F
    a[0, 30] = F
    b = a.copy()
    b[0, 10:20] = P
    t = _run(a, b, chunks=chunks, rules=["isolation"], large_patch_ha=1, isolation_m=240).table
    assert _v(t, "degraded_ha_isolation") == pytest.approx(10 * PX)
    assert _v(t, "stable_ha_isolation") == pytest.approx(1 * PX)


@pytest.mark.parametrize("chunks", [(8, 8), (13, 7), (2048, 2048)])
def test_edge_rule_equals_scipy_distance_transform(chunks):
    """Edge degradation at 100 m against scipy's Euclidean distance transform on the whole array: exact at any
    chunking, including non-natural land just outside a chunk's halo-free interior."""
    rng = np.random.default_rng(7)
    a = np.where(rng.random((37, 41)) < 0.06, P, F).astype(np.uint8)
    b = np.where(rng.random((37, 41)) < 0.04, P, a).astype(np.uint8)
    t = _run(a, b, chunks=chunks, rules=["edge"], edge_depth_m=100).table
    near_a = ndimage.distance_transform_edt(a != P, sampling=30) <= 100
    near_b = ndimage.distance_transform_edt(b != P, sampling=30) <= 100
    expected = ((a == F) & (b == F) & near_b & ~near_a).sum()
    assert _v(t, "degraded_ha_edge") == pytest.approx(expected * PX)
    assert expected > 20


def test_external_rule():
    a, b = np.full((2, 3), F, np.uint8), np.full((2, 3), F, np.uint8)

    def rasters(grid):
        import dask.array as da

        masks = np.zeros((2, 2, 3), bool)
        masks[0, 0, 0] = True  # degraded in 2000 already
        masks[1, 0, :2] = True  # 2010: (0,0) still, (0,1) new
        return {"degradation:tmf": (np.array([True, True]), da.from_array(masks, chunks=(2, 2, 3)))}

    t = _run(a, b, rasters=rasters, rules=["external"], external={"path": "tmf_{year}.tif", "degraded_values": [2],
                                                                  "name": "tmf"}).table
    assert _v(t, "degraded_ha_external") == pytest.approx(PX)


def test_chunk_invariance_every_rule():
    rng = np.random.default_rng(3)
    a = ndimage.median_filter(rng.choice(np.array([F, F, F, OF, G, P, W], np.uint8), size=(40, 45)), size=3)
    b = np.where(rng.random(a.shape) < 0.08, P, a).astype(np.uint8)
    b = np.where((b == F) & (rng.random(a.shape) < 0.05), OF, b).astype(np.uint8)
    kw = {"edge_depth_m": 60, "isolation_m": 90, "small_patch_ha": 0.5, "large_patch_ha": 2}
    base = _run(a, b, **kw)
    for chunks in [(8, 8), (13, 17), (40, 9)]:
        other = _run(a, b, chunks=chunks, **kw)
        pd.testing.assert_frame_equal(other.table, base.table)
        pa, pb = base.features[degradation.PATCH_LAYER], other.features[degradation.PATCH_LAYER]
        assert pa.geometry.normalize().geom_equals_exact(pb.geometry.normalize(), 1e-9).all()
    for rule in ALL_RULES:
        assert _v(base.table, f"degraded_ha_{rule}") >= 0


def test_degraded_patches_name_their_rules():
    result = _run(*_small_case(), rules=["transition", "condition", "edge"])
    patches = result.features[degradation.PATCH_LAYER]
    assert patches.empty  # no degraded patch reaches 0.5 ha
    a = np.full((6, 8), F, np.uint8)
    b = a.copy()
    b[2:4, 2:5] = G  # 6 px forest -> grassland (transition)
    b[2, 5] = P  # new pasture next to it: (2,4), (1,5), (3,5), (2,6) are new edge
    patches = _run(a, b, rules=["transition", "condition", "edge"]).features[degradation.PATCH_LAYER]
    assert len(patches) == 1
    assert patches.iloc[0]["rules"] == "transition, edge"
    assert patches.iloc[0]["area_ha"] == pytest.approx(9 * PX)


def test_missing_transition_pair_is_a_config_error(tmp_path):
    transitions = {a: {b: 0 for b in ("tree_covered", "grassland", "cropland", "wetland", "artificial",
                                      "other_land", "water_body")} for a in ("tree_covered", "grassland", "cropland",
                                                                              "wetland", "artificial", "other_land",
                                                                              "water_body")}
    del transitions["wetland"]["cropland"]
    path = tmp_path / "l.yaml"
    path.write_text(yaml.safe_dump({"product": "p", "nodata": [27], "transitions": transitions,
                                    "classes": {3: {"name": "F", "natural": True, "ecosystem": "forest"}}}))
    with pytest.raises(ConfigError, match=r"transitions has no meaning for \(wetland, cropland\)"):
        load_legend(path)


@pytest.mark.parametrize("neighbourhood", [4, 8])
def test_patch_sizes_from_connectivitys_labelling(monkeypatch, neighbourhood):
    """Connectivity labels all natural land with its runs kept, and degradation takes that labelling for its
    patch sizes (no labelling of its own) with the same results, across chunks with and without kept runs."""
    from pipeline import blocks
    from pipeline.indicators import connectivity

    rng = np.random.default_rng(5)
    a = ndimage.median_filter(rng.choice(np.array([F, F, F, F, F, F, OF, G, P, W], np.uint8), size=(61, 70)), size=5)
    a[:20, :20] = rng.choice(np.array([F, P], np.uint8), size=(20, 20))  # a chunk of many short runs: relabelled
    a[30:55, 35:62] = F
    a[48:, :24] = P  # a chunk without natural land (its runs: none)
    b = np.where(rng.random(a.shape) < 0.08, P, a).astype(np.uint8)
    cut = b[31:54, 36:61]  # forest cut into 2x2 islands by pasture lines: small and isolated in 2010 only
    cut[::3, :], cut[:, ::3] = P, P
    grid = make_grid(a.shape, chunk_px=24, crs=LAEA_AT_ORIGIN)
    legend = make_legend()
    deg = {"rules": ALL_RULES, "edge_depth_m": 60, "isolation_m": 90, "small_patch_ha": 0.5, "large_patch_ha": 2,
           "neighbourhood": neighbourhood}
    conn = {"neighbourhood": neighbourhood, "edge_depth_m": 30, "min_patch_ha": 0, "dispersal_m": [1000]}
    config = make_config([2000, 2010], indicators={"degradation": deg, "connectivity": conn})
    stack = make_stack({2000: a, 2010: b}, legend, grid).chunk({"y": 24, "x": 24})
    alone = degradation.compute(stack, make_context(grid, legend, config))

    ctx = make_context(grid, legend, config)
    connectivity.compute(stack, ctx)
    name = stack.data.name
    assert sorted(ctx.natural_patches) == [(name, 2000, neighbourhood), (name, 2010, neighbourhood)]
    assert any(r is None for r in ctx.natural_patches[(name, 2000, neighbourhood)]._runs)  # the relabelled chunk
    assert any(r is not None for r in ctx.natural_patches[(name, 2000, neighbourhood)]._runs)
    swapped = make_stack({2000: b, 2010: a}, legend, grid).chunk({"y": 24, "x": 24})
    degradation.compute(swapped, ctx)  # another stack: labels its own natural land, leaves this one's
    assert len(ctx.natural_patches) == 2

    def no_labelling(*args, **kwargs):
        raise AssertionError("degradation labelled natural land again")

    monkeypatch.setattr(blocks, "label_patches", no_labelling)
    shared = degradation.compute(stack, ctx)
    assert ctx.natural_patches == {}  # taken: used once
    pd.testing.assert_frame_equal(shared.table, alone.table)
    pa, pb = alone.features[degradation.PATCH_LAYER], shared.features[degradation.PATCH_LAYER]
    assert len(pa) and pa.geometry.geom_equals_exact(pb.geometry, 0).all()
    assert _v(alone.table, "degraded_ha_small_patch") > 0 and _v(alone.table, "degraded_ha_isolation") > 0
