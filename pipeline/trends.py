"""Reassessment trends (DESIGN.md §5): every metric across years, periods and runs, with its direction.

A trend row compares two values of one metric for one zone/ecosystem/class:
- ``years``: a state metric (natural_extent_ha, eca_pct, mining_ha, ...) between two assessment years;
  ``annual_change`` is the change per year.
- ``periods``: a flow metric (converted_ha, degraded_ha_*, new_mining_ha, ...) between two consecutive
  periods, each as a rate per year (so 15 and 10-year periods compare fairly).
- ``runs``: the same value in two runs (a baseline assessment and a reassessment; see compare.py).

The direction is ``better``/``worse`` by the metric's polarity, ``stable`` when |change| is inside the stable
band, and ``changed`` for context metrics without a polarity (landscape area, class transitions, ...).
The stable band is max(relative tolerance x |earlier value|, one minimum mapping unit for areas in ha (one a
year for rates), the sensitivity range (value_hi - value_lo) of either value when one was computed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.indicators.base import COLUMNS

HIGHER, LOWER, NONE = "higher_is_better", "lower_is_better", "none"
SKIP = "derived"  # differences the indicator already reports; the trend table recomputes them from the levels

# Polarity of every metric the indicators write, declared once: the first prefix that matches wins.
POLARITY: tuple[tuple[str, str], ...] = (
    # derived change rows (connectivity writes <metric>_change and _change_pct per period)
    ("*_change", SKIP), ("*_change_pct", SKIP),
    # conversion
    ("natural_extent_ha", HIGHER), ("converted", LOWER), ("gain_ha", HIGHER), ("net_change_ha", HIGHER),
    ("annual_rate_pct", HIGHER), ("stable_natural_ha", HIGHER), ("stable_non_natural_ha", NONE),
    ("transition_ha", NONE), ("unmapped_ha", NONE), ("landscape_area_ha", NONE),
    # connectivity: fewer, larger, less edgy and better connected natural patches are better
    ("patch_count", LOWER), ("patch_density", LOWER), ("largest_patch_index", HIGHER),
    ("mean_patch_area_ha", HIGHER), ("area_weighted_mean_patch_ha", HIGHER), ("effective_mesh_size_ha", HIGHER),
    ("edge_density_m_per_ha", LOWER), ("core_area_ha", HIGHER), ("equivalent_connected_area_ha", HIGHER),
    ("eca_pct", HIGHER), ("protconn_pct", HIGHER),
    # degradation
    ("degraded_", LOWER), ("improved_", HIGHER), ("stable_ha_", NONE), ("natural_both_ha", NONE),
    # mining: less footprint is better; formal/informal shares and source agreement are context
    ("mining_without_mining_rights_ha", LOWER), ("mining_category_IV_ha", LOWER), ("mining_category_", NONE),
    ("mining_with_mining_rights_ha", NONE), ("mining_in_all_sources_ha", NONE), ("mining_only_", NONE),
    ("median_distance_to_river_m", NONE), ("mining_", LOWER), ("new_mining_ha", LOWER),
    ("riparian_mining_", LOWER), ("river_km_affected", LOWER), ("mined_area_ha_source_", LOWER),
)
MISSING = "<empty>"  # stands for an empty key cell while pivoting (pandas drops NaN index labels)
KEY = [c for c in COLUMNS if c not in ("year", "year_from", "year_to", "value")]
TREND_COLUMNS = (*KEY, "comparison", "from", "to", "value_from", "value_to", "change", "change_pct",
                 "annual_change", "polarity", "stable_band", "direction")


def polarity(metric: str) -> str:
    """The declared polarity of a metric name; a metric without one is a programming error."""
    for pattern, value in POLARITY:
        if pattern.startswith("*") and metric.endswith(pattern[1:]):
            return value
        if not pattern.startswith("*") and metric.startswith(pattern):
            return value
    raise KeyError(f"metric {metric!r} has no polarity in pipeline.trends.POLARITY; declare it there")


@dataclass(frozen=True)
class StableBand:
    """What counts as no change: relative tolerance (% of the earlier value) and the minimum mapping unit (ha)."""

    relative_tolerance_pct: float = 1.0
    mapping_unit_ha: float = 0.0

    def width(self, value_from, unit: pd.Series, spread=0.0) -> np.ndarray:
        """Stable band per row; ``spread`` is the sensitivity range (value_hi - value_lo), 0 when unknown."""
        relative = self.relative_tolerance_pct / 100 * np.abs(np.asarray(value_from, float))
        area = np.where(unit.str.startswith("ha").to_numpy(bool), self.mapping_unit_ha, 0.0)
        return np.fmax(np.fmax(relative, area), np.nan_to_num(np.asarray(spread, float)))


def direction(change, band, polarities) -> np.ndarray:
    """better / worse / stable by polarity; ``changed`` for metrics without polarity; '' where unknown."""
    change, band, polarities = np.asarray(change, float), np.asarray(band, float), np.asarray(polarities)
    up = np.where(polarities == HIGHER, "better", np.where(polarities == LOWER, "worse", "changed"))
    down = np.where(polarities == HIGHER, "worse", np.where(polarities == LOWER, "better", "changed"))
    out = np.where(np.abs(change) <= band, "stable", np.where(change > 0, up, down))
    return np.where(np.isnan(change), "", out)


def _change_columns(frame: pd.DataFrame, band: StableBand, spread) -> pd.DataFrame:
    change = frame["value_to"] - frame["value_from"]
    frame["change"] = change
    frame["change_pct"] = np.where(frame["value_from"] != 0, 100 * change / frame["value_from"].abs(), np.nan)
    frame["polarity"] = frame["metric"].map(polarity)
    frame["stable_band"] = band.width(frame["value_from"], frame["unit"].astype("string").fillna(""), spread)
    frame["direction"] = direction(change, frame["stable_band"], frame["polarity"])
    return frame


def _spread(table: pd.DataFrame) -> pd.Series:
    if {"value_lo", "value_hi"} <= set(table.columns):
        return table["value_hi"] - table["value_lo"]
    return pd.Series(0.0, index=table.index)


def _wide(rows: pd.DataFrame, column: str) -> pd.DataFrame:
    """(KEY..., column) -> one row per KEY with the value and the sensitivity spread per ``column`` value."""
    keys = rows[KEY].astype("string").fillna(MISSING)
    frame = pd.concat([keys, rows[column].astype(str), rows["value"], _spread(rows).rename("spread")], axis=1)
    return frame.set_index([*KEY, column])[["value", "spread"]].unstack(column)


def _pairs_table(wide: pd.DataFrame, pairs: list[tuple[str, str, float]], comparison: str,
                 band: StableBand) -> pd.DataFrame:
    """Rows comparing column ``a`` with column ``b`` of ``wide`` for each (a, b, years apart)."""
    parts = []
    for a, b, years in pairs:
        if ("value", a) not in wide.columns or ("value", b) not in wide.columns:
            continue
        part = pd.DataFrame({"value_from": wide[("value", a)], "value_to": wide[("value", b)],
                             "spread": np.fmax(wide[("spread", a)], wide[("spread", b)])}, index=wide.index)
        part = part[part[["value_from", "value_to"]].notna().any(axis=1)].reset_index()
        for column in KEY:
            part[column] = part[column].replace(MISSING, pd.NA).astype("string")
        part["comparison"], part["from"], part["to"] = comparison, a, b
        part = _change_columns(part, band, part.pop("spread"))
        part["annual_change"] = part["change"] / years
        parts.append(part[list(TREND_COLUMNS)])
    if not parts:
        return pd.DataFrame(columns=list(TREND_COLUMNS))
    return pd.concat(parts, ignore_index=True)


def trend_table(table: pd.DataFrame, *, years: list[int], periods: list[tuple[int, int]],
                band: StableBand) -> pd.DataFrame:
    """trends.csv from the tidy tables of a run (concatenated): states between the years of each period
    (LandscapeConfig.periods(): consecutive years, then baseline and cut-off to the last year); flows between
    consecutive periods."""
    table = table[table["metric"].map(polarity) != SKIP]
    states = table[table["year"].notna()].copy()
    states["year"] = states["year"].astype(int)
    year_rows = _pairs_table(_wide(states, "year"), [(str(a), str(b), b - a) for a, b in periods],
                             "years", band)

    flows = table[table["year_from"].notna()].copy()
    length = (flows["year_to"] - flows["year_from"]).astype(float)
    per_year = ~flows["unit"].fillna("").str.endswith("/yr")  # rates such as annual_rate_pct stay as they are
    flows["value"] = np.where(per_year, flows["value"] / length, flows["value"])
    if {"value_lo", "value_hi"} <= set(flows.columns):
        flows["value_lo"] = np.where(per_year, flows["value_lo"] / length, flows["value_lo"])
        flows["value_hi"] = np.where(per_year, flows["value_hi"] / length, flows["value_hi"])
    flows["unit"] = flows["unit"].where(~per_year, flows["unit"] + "/yr")
    flows["period"] = flows["year_from"].astype(int).astype(str) + "-" + flows["year_to"].astype(int).astype(str)
    chain = [f"{a}-{b}" for a, b in zip(years, years[1:], strict=False)]
    period_rows = _pairs_table(_wide(flows, "period"), [(a, b, np.nan) for a, b in zip(chain, chain[1:], strict=False)],
                               "periods", band)  # rates in ha/yr: the band's mapping unit becomes one a year
    return pd.concat([year_rows, period_rows], ignore_index=True)


def run_table(table_a: pd.DataFrame, table_b: pd.DataFrame, *, band: StableBand, label_a: str = "A",
              label_b: str = "B") -> pd.DataFrame:
    """The same rows in two runs (baseline assessment A, reassessment B): change from A to B per metric row.

    Rows are matched on every key column and on year/period; rows in one run only have an empty side.
    """
    def keyed(table: pd.DataFrame, label: str) -> pd.DataFrame:
        table = table[table["metric"].map(polarity) != SKIP].copy()
        period = table["year_from"].astype("string") + "-" + table["year_to"].astype("string")
        when = table["year"].astype("string").fillna(period).fillna("")  # "" for rows without a year (areas)
        table["when"] = when
        table["run"] = label
        return table

    both = pd.concat([keyed(table_a, label_a), keyed(table_b, label_b)], ignore_index=True)
    wide = _wide(both.assign(run=both["run"] + "|" + both["when"]), "run")
    pairs = sorted({w for w in both["when"]})
    parts = []
    for when in pairs:
        part = _pairs_table(wide, [(f"{label_a}|{when}", f"{label_b}|{when}", np.nan)], "runs", band)
        part["from"], part["to"] = f"{label_a} {when}".strip(), f"{label_b} {when}".strip()
        parts.append(part)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(TREND_COLUMNS))
