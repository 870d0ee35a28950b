"""trends.csv logic (pipeline/trends.py) on small hand-made tidy tables: polarity, the stable band, flows as
rates per year, derived rows skipped, and a declared polarity for every metric the indicators write."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import trends
from pipeline.indicators.base import tidy
from pipeline.trends import HIGHER, LOWER, NONE, SKIP, StableBand, polarity, run_table, trend_table

GOLDEN = Path("tests/golden/mini")
NO_BAND = StableBand(relative_tolerance_pct=0.0, mapping_unit_ha=0.0)


def table(*rows: dict, indicator: str = "conversion") -> pd.DataFrame:
    """A tidy table of ``rows``; zone_layer/zone/ecosystem default to the whole landscape, all natural."""
    base = {"zone_layer": "landscape", "zone": "L", "ecosystem": "all_natural", "unit": "ha"}
    return tidy([base | r for r in rows], landscape="L", indicator=indicator)


def state(metric: str, values: dict[int, float], **kw) -> list[dict]:
    """One row per year of a state metric: state("natural_extent_ha", {2000: 10, 2010: 12})."""
    return [{"metric": metric, "year": y, "value": v, **kw} for y, v in values.items()]


def years_rows(tab: pd.DataFrame, years: list[int], band: StableBand = NO_BAND) -> pd.DataFrame:
    """trend_table between consecutive years only."""
    periods = list(zip(years, years[1:], strict=False))
    return trend_table(tab, years=years, periods=periods, band=band)


def one(trend: pd.DataFrame, metric: str, **kw) -> pd.Series:
    rows = trend[trend["metric"] == metric]
    for key, value in kw.items():
        rows = rows[rows[key] == value]
    assert len(rows) == 1, rows
    return rows.iloc[0]


# ------------------------------------------------------------------------------------------------ polarity
@pytest.mark.parametrize(("metric", "expected"), [
    ("natural_extent_ha", HIGHER), ("converted_ha", LOWER), ("converted_since_cutoff_pct", LOWER),
    ("eca_pct_300m", HIGHER), ("equivalent_connected_area_ha_3000m", HIGHER), ("patch_count", LOWER),
    ("edge_density_m_per_ha", LOWER), ("degraded_ha_edge", LOWER), ("improved_ha_condition", HIGHER),
    ("mining_ha", LOWER), ("new_mining_ha", LOWER), ("mining_category_IV_ha", LOWER), ("mining_category_II_ha", NONE),
    ("mining_with_mining_rights_ha", NONE), ("landscape_area_ha", NONE), ("transition_ha", NONE),
    ("core_area_ha_change", SKIP), ("core_area_ha_change_pct", SKIP), ("net_change_ha", HIGHER),
])
def test_polarity_declared_once_first_match_wins(metric, expected):
    assert polarity(metric) == expected


def test_unknown_metric_has_no_polarity():
    with pytest.raises(KeyError, match=r"'forest_happiness_index'.*POLARITY"):
        polarity("forest_happiness_index")


def test_every_golden_metric_has_a_polarity():
    """Guards new metrics: an indicator that writes a metric nobody declared breaks trends.csv (KeyError)."""
    paths = sorted(GOLDEN.glob("*.csv"))
    assert len(paths) == 4
    tables = [pd.read_csv(p, encoding="utf-8-sig") for p in paths]
    metrics = sorted(set().union(*(set(t["metric"]) for t in tables)))
    assert {polarity(m) for m in metrics} <= {HIGHER, LOWER, NONE, SKIP}
    # and the whole golden run goes through trend_table with only known directions
    run = pd.concat(tables, ignore_index=True)
    trend = trend_table(run, years=[1985, 2000, 2022], periods=[(1985, 2000), (2000, 2022), (1985, 2022)],
                        band=StableBand(0.5, 0.5))
    assert set(trend["direction"]) <= {"better", "worse", "stable", "changed", ""}
    assert not trend["metric"].str.endswith(("_change", "_change_pct")).any()
    assert {"years", "periods"} == set(trend["comparison"])


# ------------------------------------------------------------------------------------------- directions
def test_higher_is_better_metric_up_is_better_down_is_worse():
    trend = years_rows(table(*state("natural_extent_ha", {2000: 1000, 2010: 1100, 2020: 880})), [2000, 2010, 2020])
    up = one(trend, "natural_extent_ha", **{"from": "2000"})
    assert (up["to"], up["comparison"], up["polarity"]) == ("2010", "years", HIGHER)
    assert (up["value_from"], up["value_to"], up["change"]) == (1000, 1100, 100)
    assert up["change_pct"] == pytest.approx(10.0)
    assert up["annual_change"] == pytest.approx(10.0)  # 100 ha over 10 years
    assert up["direction"] == "better"
    down = one(trend, "natural_extent_ha", **{"from": "2010"})
    assert down["change"] == pytest.approx(-220) and down["change_pct"] == pytest.approx(-20.0)
    assert down["direction"] == "worse"


def test_lower_is_better_metric():
    rows = state("mining_ha", {2000: 10, 2010: 25, 2020: 5})
    trend = years_rows(table(*rows, indicator="mining"), [2000, 2010, 2020])
    assert one(trend, "mining_ha", **{"from": "2000"})["direction"] == "worse"
    assert one(trend, "mining_ha", **{"from": "2010"})["direction"] == "better"
    assert set(trend["polarity"]) == {LOWER}


def test_zones_and_ecosystems_are_compared_apart():
    rows = [*state("natural_extent_ha", {2000: 100, 2010: 90}, zone="north"),
            *state("natural_extent_ha", {2000: 100, 2010: 120}, zone="south"),
            *state("natural_extent_ha", {2000: 50, 2010: 50}, zone="south", ecosystem="forest")]
    trend = years_rows(table(*rows), [2000, 2010])
    assert len(trend) == 3
    assert one(trend, "natural_extent_ha", zone="north")["direction"] == "worse"
    south = trend[(trend["zone"] == "south")].set_index("ecosystem")["direction"].to_dict()
    assert south == {"all_natural": "better", "forest": "stable"}


def test_metric_without_polarity_is_changed():
    rows = [*state("landscape_area_ha", {2000: 1000, 2010: 1100}), *state("transition_ha", {2000: 5, 2010: 1})]
    trend = years_rows(table(*rows), [2000, 2010])
    assert set(trend["polarity"]) == {NONE}
    assert set(trend["direction"]) == {"changed"}  # up and down alike


def test_change_pct_empty_when_the_earlier_value_is_zero(tmp_path):
    trend = years_rows(table(*state("mining_ha", {2000: 0, 2010: 5}), indicator="mining"), [2000, 2010])
    row = one(trend, "mining_ha")
    assert row["change"] == 5 and np.isnan(row["change_pct"])
    assert row["direction"] == "worse"
    trend.to_csv(tmp_path / "t.csv", index=False)  # written as an empty cell, not inf or 0
    assert pd.read_csv(tmp_path / "t.csv")["change_pct"].isna().all()


# ------------------------------------------------------------------------------------------- stable band
@pytest.mark.parametrize(("later", "direction"), [(1009.0, "stable"), (991.0, "stable"), (1011.0, "better"),
                                                  (989.0, "worse")])
def test_change_inside_the_relative_tolerance_is_stable(later, direction):
    trend = years_rows(table(*state("natural_extent_ha", {2000: 1000, 2010: later})), [2000, 2010],
                       band=StableBand(relative_tolerance_pct=1.0))
    row = one(trend, "natural_extent_ha")
    assert row["stable_band"] == pytest.approx(10.0)  # 1 % of the earlier 1000 ha
    assert row["direction"] == direction


@pytest.mark.parametrize(("later", "direction"), [(100.4, "stable"), (99.6, "stable"), (100.6, "worse"),
                                                  (99.4, "better")])
def test_ha_change_below_the_mapping_unit_is_stable(later, direction):
    trend = years_rows(table(*state("mining_ha", {2000: 100.0, 2010: later}), indicator="mining"), [2000, 2010],
                       band=StableBand(relative_tolerance_pct=0.0, mapping_unit_ha=0.5))
    row = one(trend, "mining_ha")
    assert row["stable_band"] == 0.5
    assert row["direction"] == direction


def test_mapping_unit_applies_to_areas_only():
    """0.5 ha is no yardstick for a percentage: eca_pct +0.3 points is a change."""
    rows = [*state("eca_pct_300m", {2000: 50.0, 2010: 50.3}, unit="%"),
            *state("natural_extent_ha", {2000: 50.0, 2010: 50.3})]
    trend = years_rows(table(*rows, indicator="connectivity"), [2000, 2010],
                       band=StableBand(relative_tolerance_pct=0.0, mapping_unit_ha=0.5))
    assert one(trend, "eca_pct_300m")[["stable_band", "direction"]].tolist() == [0.0, "better"]
    assert one(trend, "natural_extent_ha")[["stable_band", "direction"]].tolist() == [0.5, "stable"]


def test_the_widest_of_tolerance_and_mapping_unit_wins():
    rows = [*state("mining_ha", {2000: 10.0, 2010: 10.4}), *state("natural_extent_ha", {2000: 1000.0, 2010: 1008.0})]
    trend = years_rows(table(*rows), [2000, 2010], band=StableBand(relative_tolerance_pct=1.0, mapping_unit_ha=0.5))
    assert one(trend, "mining_ha")["stable_band"] == pytest.approx(0.5)  # 1 % of 10 ha = 0.1 < 0.5
    assert one(trend, "natural_extent_ha")["stable_band"] == pytest.approx(10.0)  # 1 % of 1000 ha > 0.5
    assert set(trend["direction"]) == {"stable"}


def test_sensitivity_spread_widens_the_band():
    """+20 ha on 1000 ha is 'better' at a 1 % tolerance, but inside the 40 ha range the parameter reruns gave."""
    rows = state("natural_extent_ha", {2000: 1000.0, 2010: 1020.0})
    plain = years_rows(table(*rows), [2000, 2010], band=StableBand(relative_tolerance_pct=1.0))
    assert one(plain, "natural_extent_ha")["direction"] == "better"

    with_range = table(*rows, *state("mining_ha", {2000: 10.0, 2010: 20.0}))
    with_range["value_lo"] = [990.0, 1015.0, np.nan, np.nan]  # mining_ha: no rerun moved it (no range)
    with_range["value_hi"] = [1030.0, 1025.0, np.nan, np.nan]
    trend = years_rows(with_range, [2000, 2010], band=StableBand(relative_tolerance_pct=1.0))
    row = one(trend, "natural_extent_ha")
    assert row["stable_band"] == pytest.approx(40.0)  # max(10 ha tolerance, 40 ha spread of 2000, 10 ha of 2010)
    assert row["direction"] == "stable"
    mining = one(trend, "mining_ha")
    assert mining["stable_band"] == pytest.approx(0.1) and mining["direction"] == "worse"


# ------------------------------------------------------------------------------------------------ flows
def test_flows_are_compared_as_rates_per_year():
    """converted_ha 150 ha over 1985-2000 (15 yr) = 10 ha/yr vs 50 ha over 2000-2010 (10 yr) = 5 ha/yr."""
    rows = [{"metric": "converted_ha", "year_from": 1985, "year_to": 2000, "value": 150.0},
            {"metric": "converted_ha", "year_from": 2000, "year_to": 2010, "value": 50.0},
            {"metric": "converted_ha", "year_from": 1985, "year_to": 2010, "value": 200.0},  # baseline -> last
            {"metric": "annual_rate_pct", "unit": "%/yr", "year_from": 1985, "year_to": 2000, "value": -0.7},
            {"metric": "annual_rate_pct", "unit": "%/yr", "year_from": 2000, "year_to": 2010, "value": 0.5}]
    trend = trend_table(table(*rows), years=[1985, 2000, 2010], periods=[(1985, 2000), (2000, 2010), (1985, 2010)],
                        band=StableBand(relative_tolerance_pct=1.0, mapping_unit_ha=0.5))
    assert set(trend["comparison"]) == {"periods"}
    conv = one(trend, "converted_ha")  # the overlapping 1985-2010 period is not compared with anything
    assert (conv["from"], conv["to"], conv["unit"]) == ("1985-2000", "2000-2010", "ha/yr")
    assert conv["value_from"] == pytest.approx(10.0) and conv["value_to"] == pytest.approx(5.0)
    assert conv["change"] == pytest.approx(-5.0) and conv["change_pct"] == pytest.approx(-50.0)
    assert conv["direction"] == "better"  # converting less per year
    rate = one(trend, "annual_rate_pct")  # already a rate: not divided again
    assert rate["unit"] == "%/yr" and rate["change"] == pytest.approx(1.2) and rate["direction"] == "better"


def test_derived_change_rows_are_skipped():
    rows = [*state("patch_count", {2000: 10, 2010: 12}, unit="count"),
            {"metric": "patch_count_change", "unit": "count", "year_from": 2000, "year_to": 2010, "value": 2},
            {"metric": "patch_count_change_pct", "unit": "%", "year_from": 2000, "year_to": 2010, "value": 20},
            {"metric": "patch_count_change", "unit": "count", "year_from": 2010, "year_to": 2020, "value": 5}]
    trend = years_rows(table(*rows, indicator="connectivity"), [2000, 2010, 2020])
    assert trend["metric"].tolist() == ["patch_count"]
    assert one(trend, "patch_count")["direction"] == "worse"  # more, smaller patches


# ------------------------------------------------------------------------------------------------- runs
def test_run_table_matches_rows_of_two_runs():
    a = table(*state("natural_extent_ha", {2000: 1000.0, 2010: 900.0}),
              {"metric": "converted_ha", "year_from": 2000, "year_to": 2010, "value": 100.0})
    b = table(*state("natural_extent_ha", {2000: 1000.0, 2010: 950.0}),
              {"metric": "converted_ha", "year_from": 2000, "year_to": 2010, "value": 100.0},
              *state("natural_extent_ha", {2010: 5.0}, zone="new zone"))
    runs = run_table(a, b, band=StableBand(relative_tolerance_pct=1.0))
    assert set(runs["comparison"]) == {"runs"}
    same = one(runs, "natural_extent_ha", zone="L", **{"from": "A 2000"})
    assert (same["to"], same["change"], same["direction"]) == ("B 2000", 0.0, "stable")
    moved = one(runs, "natural_extent_ha", zone="L", **{"from": "A 2010"})
    assert (moved["change"], moved["direction"]) == (50.0, "better")
    flow = one(runs, "converted_ha")  # runs compare the value itself, not a rate
    assert (flow["from"], flow["value_from"], flow["annual_change"]) == ("A 2000-2010", 100.0, pytest.approx(np.nan,
                                                                                                               nan_ok=True))
    only_b = one(runs, "natural_extent_ha", zone="new zone")
    assert np.isnan(only_b["value_from"]) and only_b["value_to"] == 5.0 and only_b["direction"] == ""


def test_trend_columns_are_the_declared_ones():
    trend = years_rows(table(*state("natural_extent_ha", {2000: 1.0, 2010: 2.0})), [2000, 2010])
    assert tuple(trend.columns) == trends.TREND_COLUMNS
    assert pd.isna(trend.loc[0, "class_from"])  # empty key cells stay empty (not the '<empty>' placeholder)
