"""The assessment report of a run: RUN/report/report.html and report.md, with PNG maps and charts beside them.

For each indicator: a map (landscape, zones, the feature layer, legend, scale bar, north arrow), a chart of
its headline metric over the years, a table of headline numbers, and a method-and-limitations paragraph an
analyst can paste into a LandScale assessment. The report opens with the headline numbers and their
direction (trends.csv), and ends with the data sources, licences and attribution.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio

from pipeline import outputs, plots
from pipeline.compare import read_run
from pipeline.config import LandscapeConfig, legends_dir, load_landscape, load_legend, project_root
from pipeline.errors import SourceError
from pipeline.sources.local import read_vector


@dataclass
class Section:
    """One indicator's part of the report."""

    key: str
    title: str
    images: list[tuple[str, str]] = field(default_factory=list)  # (file name, caption)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # (caption, table)
    method: list[str] = field(default_factory=list)  # paragraphs


@dataclass
class Run:
    """What the report reads from a run folder."""

    dir: Path
    config: LandscapeConfig
    manifest: dict
    table: pd.DataFrame
    trends: pd.DataFrame | None

    def value(self, metric: str, *, year=None, period=None, ecosystem=None, zone_layer="landscape",
              column="value") -> float | None:
        """A landscape-level number of the run (None when the run has no such row)."""
        t = self.table
        rows = t[(t["metric"] == metric) & (t["zone_layer"] == zone_layer) & t["class_from"].isna() & t["class_to"].isna()]
        rows = rows[rows["ecosystem"] == ecosystem] if ecosystem else rows[rows["ecosystem"].isna()]
        if year is not None:
            rows = rows[rows["year"] == year]
        if period is not None:
            rows = rows[(rows["year_from"] == period[0]) & (rows["year_to"] == period[1])]
        if rows.empty or column not in rows.columns:
            return None
        value = rows[column].iloc[0]
        return None if pd.isna(value) else float(value)

    def direction(self, metric: str, start: int, end: int, ecosystem=None) -> str:
        if self.trends is None:
            return ""
        t = self.trends
        rows = t[(t["metric"] == metric) & (t["zone_layer"] == "landscape") & (t["from"] == str(start))
                 & (t["to"] == str(end)) & t["class_from"].isna() & t["class_to"].isna()]
        rows = rows[rows["ecosystem"] == ecosystem] if ecosystem else rows[rows["ecosystem"].isna()]
        return "" if rows.empty else str(rows["direction"].iloc[0])


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def with_range(run: Run, metric: str, digits: int = 1, **where) -> str:
    """'value' or 'value (lo-hi)' when the run has a sensitivity range that differs from the value."""
    value = run.value(metric, **where)
    lo, hi = run.value(metric, column="value_lo", **where), run.value(metric, column="value_hi", **where)
    if value is None or lo is None or hi is None or abs(hi - lo) < 10 ** -digits:
        return fmt(value, digits)
    return f"{fmt(value, digits)} ({fmt(lo, digits)} to {fmt(hi, digits)})"


# ------------------------------------------------------------------------------------------------ sections
def _layer(run: Run, indicator: str, layer: str) -> gpd.GeoDataFrame | None:
    path = run.dir / f"{indicator}.gpkg"
    if not path.is_file() or layer not in {name for name, _ in pyogrio.list_layers(path)}:
        return None
    return gpd.read_file(path, layer=layer, engine="pyogrio")


def _source_text(run: Run) -> str:
    grid, legend, years = run.manifest["grid"], run.manifest["legend"], run.config.years
    if not (run.dir / f"landcover_{years[-1]}.tif").is_file():
        return (f"This run had no land cover ({legend['product']} not yet fetched): mining comes from the mining "
                f"layers alone, rasterised on a {grid['resolution_m']:g} m equal-area grid; land-cover metrics are "
                "listed as not computed in manifest.json.")
    return (f"Data: {legend['product']} ({legend.get('reference') or 'see the legend file'}), years "
            f"{', '.join(map(str, years))}, aligned to a {grid['resolution_m']:g} m equal-area grid "
            f"(pixel {grid['pixel_area_ha']:g} ha; categorical resampling nearest/mode only). Areas are pixel areas "
            f"on that grid, in hectares; the boundary's area on the grid differs from its geodesic area by "
            f"{run.manifest['area_check'].get('difference_pct', float('nan')):+.4f} %.")


def conversion_section(run: Run, out: Path, maps: dict) -> Section:
    c, years = run.config, run.config.years
    first, last = years[0], years[-1]
    s = Section("conversion", "Natural-ecosystem conversion")
    rows = [{"year": y, "natural extent (ha)": with_range(run, "natural_extent_ha", year=y, ecosystem="all_natural"),
             "of which forest (ha)": fmt(run.value("natural_extent_ha", year=y, ecosystem="forest")),
             "unmapped (ha)": fmt(run.value("unmapped_ha", year=y))} for y in years]
    s.tables.append(("Natural extent per year", pd.DataFrame(rows)))
    rows = [{"period": f"{a}-{b}", "converted (ha)": fmt(run.value("converted_ha", period=(a, b), ecosystem="all_natural")),
             "converted (%)": fmt(run.value("converted_pct", period=(a, b), ecosystem="all_natural"), 3),
             "gain (ha)": fmt(run.value("gain_ha", period=(a, b), ecosystem="all_natural")),
             "net change (ha)": fmt(run.value("net_change_ha", period=(a, b), ecosystem="all_natural")),
             "annual rate (%/yr)": fmt(run.value("annual_rate_pct", period=(a, b), ecosystem="all_natural"), 3)}
            for a, b in c.periods()]
    s.tables.append(("Conversion of natural land per period (% of the natural extent at the start)", pd.DataFrame(rows)))
    patches = _layer(run, "conversion", "conversion_patches")
    if patches is not None:
        patches = patches[(patches["year_from"] == first) & (patches["year_to"] == last)]
    s.images.append((maps["map"](out / "conversion_map.png", features=patches, column="class_to", label="converted to",
                                 title=f"Natural land converted {first}-{last} (patches >= {c.indicators.conversion.min_mapping_unit_ha:g} ha)",
                                 ), f"Conversion {first}-{last}"))
    natural = _series(run, "natural_extent_ha", ecosystem="all_natural")
    s.images.append((plots.line_chart(out / "conversion_chart.png", {"all natural": natural},
                                      title="Natural extent", ylabel="ha").name, "Natural extent per year"))
    s.method = [
        "Natural-ecosystem conversion is the area that was natural in the earlier year and not natural in the later "
        "one (legend classes flagged natural); gain (non-natural to natural) is reported apart and never netted "
        "silently; the annual rate is 100 ln(extent_b/extent_a)/(b-a) (Puyravaud 2003). " + _source_text(run),
        "Limitations: land-cover maps see a change only when a whole pixel changes class, so selective logging, "
        "understorey fire and clearings smaller than a pixel are not conversion here (see degradation). "
        "Classification errors of the product move the numbers; small year-to-year differences near the stable "
        "band are not evidence of change. Unmapped pixels (nodata inside the boundary) are excluded and reported.",
    ]
    return s


def connectivity_section(run: Run, out: Path, maps: dict) -> Section:
    c = run.config.indicators.connectivity
    years, last = run.config.years, run.config.years[-1]
    s = Section("connectivity", "Natural-ecosystem connectivity")
    tags = [f"{d:g}m" for d in c.dispersal_m]
    rows = []
    for y in years:
        row = {"year": y, "patches": with_range(run, "patch_count", 0, year=y, ecosystem="all_natural"),
               "mesh size (ha)": with_range(run, "effective_mesh_size_ha", year=y, ecosystem="all_natural"),
               "core area (ha)": with_range(run, "core_area_ha", year=y, ecosystem="all_natural")}
        for tag in tags:
            row[f"ECA {tag} (%)"] = with_range(run, f"eca_pct_{tag}", 3, year=y, ecosystem="all_natural")
        rows.append(row)
    s.tables.append(("All natural land: patches, effective mesh size, core area, ECA", pd.DataFrame(rows)))
    patches = _layer(run, "connectivity", "patches")
    if patches is not None:
        patches = patches[(patches["year"] == last) & (patches["ecosystem"] == "all_natural")]
    s.images.append((maps["map"](out / "connectivity_map.png", features=patches, column="area_ha", label="patch ha",
                                 bins=[0, 10, 100, 1000, 10000, float("inf")], title=f"Natural patches >= {c.min_patch_ha:g} ha in {last}"), f"Natural patches {last}"))
    series = {f"ECA {tag}": _series(run, f"eca_pct_{tag}", ecosystem="all_natural") for tag in tags}
    s.images.append((plots.line_chart(out / "connectivity_chart.png", series, title="Equivalent connected area",
                                      ylabel="% of natural area").name, "ECA per year (band: sensitivity range)"))
    s.method = [
        f"Patches are {c.neighbourhood}-neighbour connected components of natural land, labelled over the whole "
        "landscape; metrics follow FRAGSTATS class-level definitions (checked against pylandstats): patch count, "
        f"effective mesh size (Jaeger 2000), edge density, core area (farther than {c.edge_depth_m:g} m from other "
        "land). The equivalent connected area (ECA; Saura and Pascual-Hortal 2007) uses the probability of "
        f"connectivity with p = {c.p_at_dispersal:g} at each dispersal distance ({', '.join(tags)}), edge-to-edge "
        f"distances and patches of at least {c.min_patch_ha:g} ha; links less likely than {c.prune_probability:g} "
        "are pruned. " + _source_text(run),
        "Limitations: structural connectivity only: roads, rivers as barriers, species behaviour and matrix "
        "permeability are not modelled; patch counts and core area depend on the neighbour rule and edge depth "
        "(the sensitivity range shows by how much); the landscape boundary cuts patches (cutting-out).",
    ]
    return s


def degradation_section(run: Run, out: Path, maps: dict) -> Section:
    d = run.config.indicators.degradation
    periods = run.config.periods()
    s = Section("degradation", "Natural-ecosystem degradation")
    chain = [p for p in periods if run.config.years.index(p[1]) == run.config.years.index(p[0]) + 1]
    rows = []
    for a, b in periods:
        row = {"period": f"{a}-{b}", "any rule (ha)": with_range(run, "degraded_ha_any", period=(a, b), ecosystem="all_natural"),
               "any rule (%)": fmt(run.value("degraded_pct_any", period=(a, b), ecosystem="all_natural"), 3)}
        for rule in d.rules:
            row[f"{rule} (ha)"] = fmt(run.value(f"degraded_ha_{rule}", period=(a, b), ecosystem="all_natural"))
        rows.append(row)
    s.tables.append(("Degraded natural area per period, by rule (each pixel once in 'any')", pd.DataFrame(rows)))
    first, last = periods[0][0], run.config.years[-1]
    patches = _layer(run, "degradation", "degraded_patches")
    if patches is not None:
        patches = patches[(patches["year_from"] == chain[-1][0]) & (patches["year_to"] == last)]
    s.images.append((maps["map"](out / "degradation_map.png", features=patches, column="rules", label="rules",
                                 title=f"Degraded natural land {chain[-1][0]}-{last}"),
                     f"Degraded patches {chain[-1][0]}-{last}"))
    bars = pd.DataFrame({rule: [(run.value(f"degraded_ha_{rule}", period=(a, b), ecosystem="all_natural") or 0.0) / (b - a)
                                for a, b in chain] for rule in d.rules}, index=[f"{a}-{b}" for a, b in chain])
    s.images.append((plots.bar_chart(out / "degradation_chart.png", bars, title="Degraded natural area by rule, per year",
                                     ylabel="ha per year").name, "Degraded area per year of each period, by rule"))
    s.method = [
        "Degradation is natural land that stays natural but loses condition, by rules reported apart and once per "
        "pixel in their union: transition (a -1/0/+1 matrix between land-cover groups, Trends.Earth style; the "
        f"matrix used is in manifest.json), condition (lower condition rank), edge (newly within {d.edge_depth_m:g} m "
        f"of non-natural land), small patch (newly in a patch below {d.small_patch_ha:g} ha) and isolation (newly "
        f"farther than {d.isolation_m:g} m from a patch above {d.large_patch_ha:g} ha). Percentages are of the "
        f"natural extent of the earlier year. First period: {first}. " + _source_text(run),
        "Limitations: the rules infer degradation from land-cover pattern; canopy degradation that does not change "
        "the class (selective logging, fire, mercury contamination of water) is invisible unless an external "
        "layer (e.g. JRC TMF degraded forest) is configured.",
    ]
    return s


def mining_section(run: Run, out: Path, maps: dict) -> Section:
    m = run.config.indicators.mining
    years, last = run.config.years, run.config.years[-1]
    s = Section("mining", "Alluvial mining footprint")
    rows = []
    for y in years:
        rows.append({"year": y, "mining (ha)": with_range(run, "mining_ha", year=y),
                     "riparian (%)": fmt(run.value("riparian_mining_pct", year=y)),
                     "river km affected": fmt(run.value("river_km_affected", year=y)),
                     "sites": fmt(run.value("mining_sites", year=y), 0),
                     "without mining rights (ha)": fmt(run.value("mining_without_mining_rights_ha", year=y))})
    s.tables.append(("Mining footprint per year", pd.DataFrame(rows)))
    sites = _layer(run, "mining", "sites")
    if sites is not None:
        sites = sites[sites["year"] == last]
    s.images.append((maps["map"](out / "mining_map.png", features=sites, column="first_year_seen", label="first seen",
                                 title=f"Mining sites in {last} by first year seen", rivers=True),
                     f"Mining sites {last}"))
    series = {"mining footprint": _series(run, "mining_ha")}
    for layer in run.config.mining_layers:  # detection patches (footprint: false) are shown by their own estimate
        metric = f"mining_ha_source_{layer.name}" if layer.footprint else f"mined_area_ha_source_{layer.name}"
        label = f"{layer.name} (pixels)" if layer.footprint else f"{layer.name}: its own mined-area estimate"
        if not _series(run, metric).empty:
            series[label] = _series(run, metric)
    s.images.append((plots.line_chart(out / "mining_chart.png", series, title="Mining footprint", ylabel="ha").name,
                     "Mining area per year and source"))
    s.method = [
        "Mining is the union of the configured sources (land-cover mining classes, Amazon Mining Watch polygons as "
        "yearly increments, mining masks), rasterised on the grid; a pixel counts when it is mining in "
        f"{m.min_persistence_years} consecutive observed year(s). Riparian mining lies within "
        f"{m.riparian_buffer_m:g} m of a river; river km affected is the river centre-line within "
        f"{m.affected_distance_m:g} m of mining. Sources are reported apart with their agreement. " + _source_text(run),
        "Limitations: mining under forest canopy, very recent or small pits, and dredges on the river itself are "
        "missed; mapped rivers are centre-lines at the scale of their source, so small streams are absent; the "
        "mining-rights overlay shows titles in the register, not whether a title holder does the mining.",
    ]
    return s


SECTIONS = {"conversion": conversion_section, "connectivity": connectivity_section,
            "degradation": degradation_section, "mining": mining_section}


def _series(run: Run, metric: str, ecosystem=None) -> pd.DataFrame:
    t = run.table
    rows = t[(t["metric"] == metric) & (t["zone_layer"] == "landscape") & t["year"].notna() & t["class_from"].isna()]
    rows = rows[rows["ecosystem"] == ecosystem] if ecosystem else rows[rows["ecosystem"].isna()]
    columns = [c for c in ("value", "value_lo", "value_hi") if c in rows.columns]
    return rows[columns].assign(x=rows["year"].astype(int)).reset_index(drop=True)


# ------------------------------------------------------------------------------------------------ headlines
def headlines(run: Run) -> pd.DataFrame:
    """The numbers an assessment quotes first, with their direction between the first and last year."""
    years = run.config.years
    first, last = years[0], years[-1]
    rows = []

    def add(label, metric, unit, digits=1, **where):
        if run.value(metric, **where) is None:
            return
        rows.append({"headline": label, "value": with_range(run, metric, digits, **where), "unit": unit})

    for eco, name in (("forest", "Forest extent"), ("all_natural", "Natural extent")):
        for y in (first, last):
            add(f"{name} {y}", "natural_extent_ha", "ha", ecosystem=eco, year=y)
        if rows and rows[-1]["headline"].startswith(name):
            rows[-1]["direction"] = run.direction("natural_extent_ha", first, last, eco)
    add(f"Natural land converted {first}-{last}", "converted_ha", "ha", ecosystem="all_natural", period=(first, last))
    if run.config.cutoff_year:
        add(f"Converted since the {run.config.cutoff_year} cut-off", "converted_since_cutoff_ha", "ha",
            ecosystem="all_natural", period=(run.config.cutoff_year, last))
    for y in (first, last):
        add(f"Mining footprint {y}", "mining_ha", "ha", year=y)
    if rows and rows[-1]["headline"].startswith("Mining"):
        rows[-1]["direction"] = run.direction("mining_ha", first, last)
    add(f"Mining on natural land {first}-{last}", "mining_on_natural_ha", "ha", ecosystem="all_natural", period=(first, last))
    add(f"Mining without exploitation rights {last}", "mining_without_mining_rights_ha", "ha", year=last)
    if run.config.indicators.connectivity:
        tag = f"{run.config.indicators.connectivity.dispersal_m[0]:g}m"
        for y in (first, last):
            add(f"ECA ({tag}) {y}", f"equivalent_connected_area_ha_{tag}", "ha", ecosystem="all_natural", year=y)
        if rows and rows[-1]["headline"].startswith("ECA"):
            rows[-1]["direction"] = run.direction(f"equivalent_connected_area_ha_{tag}", first, last, "all_natural")
    add(f"Degraded natural land {first}-{last} (any rule)", "degraded_ha_any", "ha", ecosystem="all_natural",
        period=(first, last))
    return pd.DataFrame(rows, columns=["headline", "value", "unit", "direction"]).fillna("")


# ------------------------------------------------------------------------------------------------ documents
def _md_table(frame: pd.DataFrame) -> str:
    cells = [[str(c) for c in frame.columns]] + [["" if pd.isna(v) else str(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(r) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("---" for _ in frame.columns) + "|")
    return "\n".join(lines)


def _html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('' if pd.isna(v) else str(v))}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _preamble(run: Run) -> list[str]:
    c, m = run.config, run.manifest
    band = m.get("trends", {})
    text = [f"Landscape **{c.title or c.name}** ({c.name}); run of {m['finished_utc']} with pipeline "
            f"{m['pipeline_version']}; years {', '.join(map(str, c.years))} (baseline {c.baseline}"
            + (f", cut-off {c.cutoff_year}" if c.cutoff_year else "") + ").",
            f"Direction (better/worse/stable) compares the first and last year by each metric's polarity; a change is "
            f"`stable` when it is smaller than {band.get('relative_tolerance_pct', 'n/a')} % of the earlier value, one "
            f"minimum mapping unit ({band.get('mapping_unit_ha', 'n/a')} ha) for areas, and the sensitivity range "
            "when one was computed (a conservative test: the range of either year). trends.csv has every metric."]
    sens = m.get("sensitivity") or {}
    if sens.get("variants"):
        labels = sorted({v for vs in sens["variants"].values() for v in vs})
        text.append("Ranges in brackets are the smallest and largest value over reruns with one parameter changed ("
                    + "; ".join(labels) + ").")
    if m.get("not_computed"):
        text.append("Not computed: " + "; ".join(f"{n['indicator']} {n['metric']}: {n['reason']}" for n in m["not_computed"]))
    return text


def _sources(run: Run) -> pd.DataFrame:
    rows = [{"dataset": s.name, "used for": s.used_for, "licence": s.licence, "attribution": s.attribution}
            for s in run.config.data_sources]
    if not rows:
        legend = run.manifest["legend"]
        rows = [{"dataset": legend["product"], "used for": "land cover", "licence": "see the provider",
                 "attribution": legend.get("reference") or ""}]
    return pd.DataFrame(rows)


def render_markdown(run: Run, sections: list[Section], head: pd.DataFrame) -> str:
    parts = [f"# Ecosystem indicators: {run.config.title or run.config.name}", "", *_preamble(run), "",
             "## Headline numbers", "", _md_table(head), ""]
    for s in sections:
        parts += [f"## {s.title}", ""]
        parts += [f"![{caption}]({name})" for name, caption in s.images] + [""]
        for caption, table in s.tables:
            parts += [f"*{caption}*", "", _md_table(table), ""]
        parts += ["**Method and limitations.** " + s.method[0], "", s.method[1], ""]
    parts += ["## Data sources, licences and attribution", "", _md_table(_sources(run)), ""]
    return "\n".join(parts)


def render_html(run: Run, sections: list[Section], head: pd.DataFrame) -> str:
    def para(text: str) -> str:
        escaped = html.escape(text)
        while "**" in escaped:
            escaped = escaped.replace("**", "<strong>", 1).replace("**", "</strong>", 1)
        return f"<p>{escaped.replace('`', '')}</p>"

    body = [f"<h1>Ecosystem indicators: {html.escape(run.config.title or run.config.name)}</h1>",
            *[para(t) for t in _preamble(run)], "<h2>Headline numbers</h2>", _html_table(head)]
    for s in sections:
        body.append(f'<section id="{s.key}"><h2>{html.escape(s.title)}</h2><div class="figures">')
        body += [f'<figure><img src="{name}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'
                 for name, caption in s.images]
        body.append("</div>")
        for caption, table in s.tables:
            body += [f"<p><em>{html.escape(caption)}</em></p>", _html_table(table)]
        body += [para("**Method and limitations.** " + s.method[0]), para(s.method[1]), "</section>"]
    body += ["<h2>Data sources, licences and attribution</h2>", _html_table(_sources(run))]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.45;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0 1em;font-size:.9em}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:right}th{background:#f2f2f2}td:first-child{text-align:left}.figures{display:flex;flex-wrap:wrap;gap:1em}"
             "figure{margin:0;flex:1 1 480px}img{max-width:100%}figcaption{font-size:.85em;color:#555}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(run.config.name)} '
            f"ecosystem indicators</title><style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


# ------------------------------------------------------------------------------------------------ entry point
def load_run(config_path: Path, run_dir: Path | None = None) -> Run:
    config = load_landscape(config_path)
    run_dir = run_dir or project_root(config_path) / "data" / "processed" / config.name
    if not (run_dir / "manifest.json").is_file():
        raise SourceError(f"{run_dir}: no run to report on (manifest.json missing); run `make landscape={config.name}` first")
    manifest, table = read_run(run_dir)
    trends_path = run_dir / "trends.csv"
    try:
        trend = (pd.read_csv(trends_path, encoding=outputs.CSV_ENCODING, dtype={"from": str, "to": str})
                 if trends_path.is_file() else None)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise SourceError(f"{trends_path}: unreadable ({exc}); rerun the landscape to rewrite it") from None
    return Run(run_dir, config, manifest, table, trend)


def build_report(config_path: Path, *, run_dir: Path | None = None) -> Path:
    """Write RUN/report/ (report.html, report.md, PNGs) atomically and return the path of report.html."""
    run = load_run(config_path, run_dir)
    root = project_root(config_path)
    legend_path = Path(run.manifest["legend"]["path"])
    if not legend_path.is_file():
        legend_path = legends_dir(root) / f"{run.manifest['legend']['name']}.yaml"
    legend = load_legend(legend_path)
    last = run.config.years[-1]
    landcover = run.dir / f"landcover_{last}.tif"
    zones = next((z for z in (_layer(run, name, "zones") for name in SECTIONS) if z is not None), None)
    rivers = None
    if run.config.rivers is not None:
        rivers_path = Path(run.config.rivers.path)
        rivers_path = rivers_path if rivers_path.is_absolute() else root / rivers_path
        rivers = read_vector(rivers_path, layer=run.config.rivers.layer, what="rivers").to_crs(zones.crs)
        rivers = rivers.clip(zones[zones["zone_layer"] == "landscape"].geometry.union_all())

    def landscape_map(path, *, features, column, label, title, bins=None, rivers_=False):
        return plots.landscape_map(path, landcover=landcover if landcover.is_file() else None, legend=legend, zones=zones, features=features,
                                   feature_column=column, feature_label=label, title=title, bins=bins,
                                   lines=rivers if rivers_ else None).name

    maps = {"map": lambda path, rivers=False, **kw: landscape_map(path, rivers_=rivers, **kw)}
    with outputs.Staging(run.dir / "report") as staging:
        sections = [make(run, staging.dir, maps) for name, make in SECTIONS.items()
                    if getattr(run.config.indicators, name) is not None and (run.dir / f"{name}.csv").is_file()]
        head = headlines(run)
        (staging.path("report.md")).write_text(render_markdown(run, sections, head), encoding="utf-8")
        (staging.path("report.html")).write_text(render_html(run, sections, head), encoding="utf-8")
        names = [name for s in sections for name, _ in s.images] + ["report.md", "report.html"]
        staging.commit(names)
    return run.dir / "report" / "report.html"
