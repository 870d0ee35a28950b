"""Conversion metrics on arrays a person can check by hand (DESIGN.md §4)."""

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.indicators import conversion
from pipeline.testing import make_config, make_context, make_grid, make_legend, make_stack, pixel_box

PX_HA = 0.09  # one 30 m pixel

# Codes: 3 Forest, 12 Grassland (natural); 15 Pasture, 30 Mining (non-natural); 33 River (natural water);
# 27 not observed (nodata); 0 outside the boundary.
LC_1985 = np.array([[3, 3, 3, 12],
                    [3, 3, 15, 12],
                    [33, 27, 15, 0]], np.uint8)
LC_2000 = np.array([[3, 15, 3, 12],
                    [30, 3, 3, 15],
                    [33, 3, 15, 0]], np.uint8)
LC_2022 = np.array([[30, 15, 3, 12],
                    [30, 3, 3, 15],
                    [30, 3, 15, 0]], np.uint8)
# 1985 -> 2000, 11 pixels inside:
#   stable natural 5 px: (0,0) (0,2) (1,1) 3->3, (0,3) 12->12, (2,0) 33->33
#   converted 3 px: (0,1) Forest->Pasture, (1,0) Forest->Mining, (1,3) Grassland->Pasture
#   gain 1 px: (1,2) Pasture->Forest;  stable non-natural 1 px: (2,2);  unmapped 1 px: (2,1) 27->3
#   natural extent 1985 = 8 px (Forest 5, Grassland 2, River 1); 2000 = 7 px (Forest 5, Grassland 1, River 1)
# 2000 -> 2022: (0,0) Forest->Mining, (2,0) River->Mining: 2 px converted of 7 natural


def _value(table: pd.DataFrame, metric: str, **match) -> float:
    rows = table[table["metric"] == metric]
    for column in ("zone_layer", "ecosystem", "class_from", "class_to"):
        wanted = match.get(column, "landscape" if column == "zone_layer" else None)
        rows = rows[rows[column].isna()] if wanted is None else rows[rows[column] == wanted]
    for column in ("zone", "year", "year_from", "year_to"):
        if column in match:
            rows = rows[rows[column] == match[column]]
    assert len(rows) == 1, f"{metric} {match}: {len(rows)} rows"
    return float(rows["value"].iloc[0])


def _run(chunks=(2048, 2048), zones=None, years=(1985, 2000, 2022), **config):
    arrays = {1985: LC_1985, 2000: LC_2000, 2022: LC_2022}
    grid = make_grid(LC_1985.shape, chunk_px=chunks[0])
    legend = make_legend()
    cfg = make_config(list(years), **config)
    ctx = make_context(grid, legend, cfg, zones=zones(grid) if zones else None)
    stack = make_stack({y: arrays[y] for y in years}, legend, grid)
    stack = stack.chunk({"y": chunks[0], "x": chunks[1]})
    return conversion.compute(stack, ctx)


@pytest.fixture(scope="module")
def result():
    return _run(cutoff_year=2000)


def test_natural_extent_per_year_and_ecosystem(result):
    t = result.table
    assert _value(t, "natural_extent_ha", ecosystem="all_natural", year=1985) == pytest.approx(8 * PX_HA)
    assert _value(t, "natural_extent_ha", ecosystem="forest", year=1985) == pytest.approx(5 * PX_HA)
    assert _value(t, "natural_extent_ha", ecosystem="savanna_grassland", year=1985) == pytest.approx(2 * PX_HA)
    assert _value(t, "natural_extent_ha", ecosystem="water", year=1985) == pytest.approx(1 * PX_HA)
    assert _value(t, "natural_extent_ha", ecosystem="all_natural", year=2000) == pytest.approx(7 * PX_HA)
    assert _value(t, "natural_extent_ha", ecosystem="all_natural", year=2022) == pytest.approx(5 * PX_HA)
    assert _value(t, "landscape_area_ha") == pytest.approx(11 * PX_HA)


def test_converted_by_ecosystem_and_class_to(result):
    t, p = result.table, {"year_from": 1985, "year_to": 2000}
    assert _value(t, "converted_ha", ecosystem="all_natural", **p) == pytest.approx(3 * PX_HA)
    assert _value(t, "converted_ha", ecosystem="forest", **p) == pytest.approx(2 * PX_HA)
    assert _value(t, "converted_ha", ecosystem="forest", class_to="Pasture", **p) == pytest.approx(PX_HA)
    assert _value(t, "converted_ha", ecosystem="forest", class_to="Mining", **p) == pytest.approx(PX_HA)
    assert _value(t, "converted_ha", ecosystem="savanna_grassland", class_to="Pasture", **p) == pytest.approx(PX_HA)
    assert _value(t, "converted_ha", ecosystem="water", **p) == 0
    assert _value(t, "converted_pct", ecosystem="all_natural", **p) == pytest.approx(37.5)
    assert _value(t, "converted_pct", ecosystem="forest", **p) == pytest.approx(40.0)
    assert _value(t, "converted_pct", ecosystem="savanna_grassland", **p) == pytest.approx(50.0)


def test_gain_net_change_and_annual_rate(result):
    t, p = result.table, {"year_from": 1985, "year_to": 2000}
    assert _value(t, "gain_ha", ecosystem="all_natural", **p) == pytest.approx(PX_HA)
    assert _value(t, "gain_ha", ecosystem="forest", class_from="Pasture", **p) == pytest.approx(PX_HA)
    # net change includes the pixel that was unmapped in 1985 and forest in 2000: 7 - 8 px, not gain - converted
    assert _value(t, "net_change_ha", ecosystem="all_natural", **p) == pytest.approx(-1 * PX_HA)
    assert _value(t, "net_change_ha", ecosystem="forest", **p) == pytest.approx(0)
    assert _value(t, "annual_rate_pct", ecosystem="all_natural", **p) == pytest.approx(100 * math.log(7 / 8) / 15)
    assert _value(t, "annual_rate_pct", ecosystem="forest", **p) == pytest.approx(0)
    assert _value(t, "annual_rate_pct", ecosystem="savanna_grassland", **p) == pytest.approx(100 * math.log(1 / 2) / 15)


def test_period_identity_and_unmapped(result):
    t, p = result.table, {"year_from": 1985, "year_to": 2000}
    parts = {m: _value(t, m, **p) for m in ("stable_natural_ha", "stable_non_natural_ha", "unmapped_ha")}
    assert parts == pytest.approx({"stable_natural_ha": 5 * PX_HA, "stable_non_natural_ha": PX_HA, "unmapped_ha": PX_HA})
    total = sum(parts.values()) + _value(t, "converted_ha", ecosystem="all_natural", **p) + _value(
        t, "gain_ha", ecosystem="all_natural", **p)
    assert total == pytest.approx(_value(t, "landscape_area_ha"))
    assert _value(t, "unmapped_ha", year=1985) == pytest.approx(PX_HA)
    assert _value(t, "unmapped_ha", year=2000) == 0


def test_transition_matrix(result):
    t = result.table
    rows = t[(t["metric"] == "transition_ha") & (t["zone_layer"] == "landscape") & (t["year_from"] == 1985)
             & (t["year_to"] == 2000)]
    got = {(r.class_from, r.class_to): round(r.value / PX_HA) for r in rows.itertuples()}
    assert got == {("Forest", "Forest"): 3, ("Forest", "Pasture"): 1, ("Forest", "Mining"): 1,
                   ("Grassland", "Grassland"): 1, ("Grassland", "Pasture"): 1, ("Pasture", "Forest"): 1,
                   ("Pasture", "Pasture"): 1, ("River", "River"): 1}


def test_periods_and_since_cutoff(result):
    t = result.table
    periods = set(zip(t["year_from"].dropna(), t["year_to"].dropna(), strict=True))
    assert periods == {(1985, 2000), (2000, 2022), (1985, 2022)}
    assert _value(t, "converted_since_cutoff_ha", ecosystem="all_natural", year_from=2000, year_to=2022) == pytest.approx(2 * PX_HA)
    assert _value(t, "converted_since_cutoff_pct", ecosystem="all_natural", year_from=2000, year_to=2022) == pytest.approx(200 / 7)
    assert _value(t, "converted_since_cutoff_ha", ecosystem="water", year_from=2000, year_to=2022) == pytest.approx(PX_HA)
    # baseline -> last: (0,0) (0,1) (1,0) Forest, (1,3) Grassland, (2,0) River converted = 5 of 8
    assert _value(t, "converted_ha", ecosystem="all_natural", year_from=1985, year_to=2022) == pytest.approx(5 * PX_HA)


def _zones(grid):
    return {
        "halves": [("west", pixel_box(grid, slice(0, 3), slice(0, 2))), ("east", pixel_box(grid, slice(0, 3), slice(2, 4)))],
        # titles overlap on columns 1-2: a pixel there counts in both
        "titles": [("A", pixel_box(grid, slice(0, 3), slice(0, 3))), ("B", pixel_box(grid, slice(0, 3), slice(1, 4)))],
    }


@pytest.mark.parametrize("chunks", [(2048, 2048), (1, 1), (2, 3), (3, 1)])
def test_zones_and_overlaps_at_any_chunking(chunks):
    t = _run(chunks=chunks, zones=_zones).table
    p = {"year_from": 1985, "year_to": 2000, "ecosystem": "all_natural"}
    assert _value(t, "converted_ha", zone_layer="halves", zone="west", **p) == pytest.approx(2 * PX_HA)
    assert _value(t, "converted_ha", zone_layer="halves", zone="east", **p) == pytest.approx(PX_HA)
    assert _value(t, "converted_ha", zone_layer="titles", zone="A", **p) == pytest.approx(2 * PX_HA)
    assert _value(t, "converted_ha", zone_layer="titles", zone="B", **p) == pytest.approx(2 * PX_HA)
    assert _value(t, "landscape_area_ha", zone_layer="titles", zone="A") == pytest.approx(9 * PX_HA)
    assert _value(t, "landscape_area_ha", zone_layer="titles", zone="B") == pytest.approx(8 * PX_HA)  # (2,3) is outside
    for zone in ("west", "east"):  # period identity per zone
        z = {"zone_layer": "halves", "zone": zone, "year_from": 1985, "year_to": 2000}
        parts = sum(_value(t, m, **z) for m in ("stable_natural_ha", "stable_non_natural_ha", "unmapped_ha"))
        parts += sum(_value(t, m, ecosystem="all_natural", **z) for m in ("converted_ha", "gain_ha"))
        assert parts == pytest.approx(_value(t, "landscape_area_ha", zone_layer="halves", zone=zone))


def test_tables_identical_across_chunkings():
    base = _run(zones=_zones).table
    for chunks in [(1, 1), (2, 3), (3, 2)]:
        pd.testing.assert_frame_equal(_run(chunks=chunks, zones=_zones).table, base)


def test_conversion_patches_are_8_connected_with_dominant_transition(result):
    patches = result.features[conversion.PATCH_LAYER]
    p1 = patches[patches["period"] == "1985-2000"].sort_values("patch_id")
    # (0,1) and (1,0) touch diagonally -> one patch of 2 px; (1,3) alone
    assert sorted(p1["area_ha"].round(4)) == [pytest.approx(PX_HA), pytest.approx(2 * PX_HA)]
    single = p1[p1["area_ha"].round(4) == round(PX_HA, 4)].iloc[0]
    assert (single["class_from"], single["class_to"]) == ("Grassland", "Pasture")
    assert p1.geometry.area.sum() == pytest.approx(3 * 900)
    assert "Forest -> Mining: 0.09 ha" in p1[p1["area_ha"] > 0.1].iloc[0]["transitions"]


def test_min_mapping_unit_drops_small_patches():
    patches = _run(indicators={"conversion": {"min_mapping_unit_ha": 0.1}}).features[conversion.PATCH_LAYER]
    assert sorted(patches[patches["period"] == "1985-2000"]["area_ha"].round(4)) == [pytest.approx(2 * PX_HA)]


def test_annual_rate_formula():
    assert conversion.annual_rate_pct(100, 90, 10) == pytest.approx(100 * math.log(0.9) / 10)
    assert math.isnan(conversion.annual_rate_pct(0, 90, 10))
