"""The short summary a run prints: natural extent, conversion per period, mining footprint, and what the
inputs did not allow to compute."""

from __future__ import annotations

import pandas as pd
from rich.console import Console
from rich.table import Table

from pipeline.outputs import VALUE_DECIMALS


def _fmt(value, spec: str) -> str:
    return "" if value is None or pd.isna(value) else format(value, spec)


def _landscape(table: pd.DataFrame) -> pd.DataFrame:
    """Landscape rows, values rounded as in the CSV (so 1368.4499... prints as the CSV's 1368.45 does)."""
    rows = table[(table["zone_layer"] == "landscape") & table["class_to"].isna() & table["class_from"].isna()]
    return rows.assign(value=rows["value"].round(VALUE_DECIMALS))


def conversion_tables(table: pd.DataFrame, periods: list[tuple[int, int]]) -> list:
    land = _landscape(table)
    natural = land[land["ecosystem"] == "all_natural"]
    area = land[land["metric"] == "landscape_area_ha"]["value"].iloc[0]
    years = Table(title=f"Natural extent (landscape {area:,.1f} ha)", title_justify="left")
    for column in ("year", "natural ha", "% of landscape"):
        years.add_column(column, justify="right")
    for year, value in natural[natural["metric"] == "natural_extent_ha"].set_index("year")["value"].items():
        years.add_row(str(year), f"{value:,.1f}", f"{100 * value / area:.2f}")
    per = natural[natural["year_from"].notna()].pivot_table(index=["year_from", "year_to"], columns="metric",
                                                            values="value", aggfunc="first")
    rows = Table(title="Natural-ecosystem conversion per period", title_justify="left")
    for column in ("period", "converted ha", "converted %", "gain ha", "net change ha", "rate %/yr"):
        rows.add_column(column, justify="right")
    for ya, yb in [p for p in periods if p in per.index]:
        row = per.loc[(ya, yb)]
        rows.add_row(f"{ya}-{yb}", f"{row.get('converted_ha', 0):,.1f}", _fmt(row.get("converted_pct"), ".3f"),
                     f"{row.get('gain_ha', 0):,.1f}", f"{row.get('net_change_ha', 0):+,.1f}",
                     _fmt(row.get("annual_rate_pct"), "+.4f"))
    out = [years, rows]
    cutoff = natural[natural["metric"].isin(["converted_since_cutoff_ha", "converted_since_cutoff_pct"])]
    if not cutoff.empty:
        values = cutoff.set_index("metric")["value"]
        ya, yb = int(cutoff["year_from"].iloc[0]), int(cutoff["year_to"].iloc[0])
        out.append(f"Conversion since the {ya} cut-off (to {yb}): {values['converted_since_cutoff_ha']:,.1f} ha "
                   f"({_fmt(values.get('converted_since_cutoff_pct'), '.3f')} % of the {ya} natural extent)")
    return out


def _mining_label(metric: str) -> str:
    for prefix, label in (("mining_ha_source_", "{} px ha"), ("mined_area_ha_source_", "{} own ha")):
        if metric.startswith(prefix):
            return label.format(metric.removeprefix(prefix))
    return {"mining_ha": "mining ha", "riparian_mining_pct": "riparian %", "mining_sites": "sites",
            "river_km_affected": "river km", "mining_without_mining_rights_ha": "no rights ha"}[metric]


def mining_table(table: pd.DataFrame) -> Table:
    """Landscape mining per year: footprint, each source (px = rasterised; own = the source's own estimate)."""
    land = _landscape(table)
    land = land[land["ecosystem"].isna() & land["year"].notna()]
    wide = land.pivot_table(index="year", columns="metric", values="value", aggfunc="first")
    sources = sorted(c for c in wide.columns if c.startswith(("mining_ha_source_", "mined_area_ha_source_")))
    columns = [c for c in ("mining_ha", *sources, "mining_without_mining_rights_ha", "riparian_mining_pct",
                           "mining_sites", "river_km_affected") if c in wide.columns]
    out = Table(title="Mining footprint", title_justify="left")
    out.add_column("year", justify="right")
    for column in columns:
        out.add_column(_mining_label(column), justify="right")
    for year, row in wide.iterrows():
        out.add_row(str(year), *(_fmt(row.get(c), ",.0f" if "_ha" in c or c.endswith("sites") else ".1f") for c in columns))
    return out


def print_summary(result, console: Console) -> None:
    """Print what a run found and wrote (result: runner.RunResult)."""
    config = result.prepared.config
    console.print(f"\n[bold]{config.title or config.name}[/]  ->  {result.files[0].parent}", highlight=False)
    if "conversion" in result.results:
        for item in conversion_tables(result.results["conversion"].table, config.periods()):
            console.print(item, highlight=False)
    if "mining" in result.results:
        console.print(mining_table(result.results["mining"].table))
    for item in result.manifest.get("not_computed", []):
        console.print(f"not computed: {item['indicator']} ({item['metric']}): {item['reason']}", highlight=False,
                      markup=False)
    check = result.manifest["area_check"]
    console.print(f"Area check: grid {check['grid_inside_ha']:,.1f} ha vs geodesic {check['boundary_geodesic_ha']:,.1f} ha "
                  f"({check['difference_pct']:+.4f} %, tolerance {check['tolerance_ha']:,.1f} ha). "
                  f"Files: {', '.join(p.name for p in result.files)}", highlight=False)
    console.print(f"Maps, charts and the assessment report: make report landscape={config.name}", highlight=False)
