"""Compare two runs (a baseline assessment and a reassessment): the trend table between them, and every input
that changed, because a metric that moved with its data source is not a change on the ground.

An input is flagged when its content hash changed (same role, e.g. ``landcover_2020`` or ``legend``), when it
is in one run only, when the land-cover product or legend differs, when the grid differs, or when an indicator
parameter of the config differs. Each row of compare.csv lists the flags that can move it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline import outputs, trends
from pipeline.errors import SourceError
from pipeline.indicators import REGISTRY
from pipeline.indicators.base import COLUMNS

GRID_KEYS = ("crs_wkt", "transform", "shape", "resolution_m")
GLOBAL_ROLES = ("config", "legend", "boundary", "product", "grid")  # roles that can move any number


def read_run(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    """A run folder's manifest and its indicator tables (concatenated)."""
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise SourceError(f"{run_dir}: no manifest.json; give the output folder of a run "
                          f"(e.g. data/processed/lourenco) or run `make landscape=NAME` first")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SourceError(f"{manifest_path}: not valid JSON ({exc}); rerun the landscape to rewrite it") from exc
    tables = [read_table(run_dir / f"{name}.csv") for name in REGISTRY if (run_dir / f"{name}.csv").is_file()]
    if not tables:
        raise SourceError(f"{run_dir}: no indicator CSV ({', '.join(REGISTRY)}.csv); the run wrote none")
    return manifest, pd.concat(tables, ignore_index=True)


def read_table(path: Path) -> pd.DataFrame:
    """A tidy indicator CSV with the key columns as strings and years as nullable integers."""
    text = ["landscape", "indicator", "metric", "unit", "zone_layer", "zone", "ecosystem", "class_from", "class_to"]
    try:
        table = pd.read_csv(path, encoding=outputs.CSV_ENCODING, dtype={c: "string" for c in text})
        missing = [c for c in COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"columns {missing} are missing")
        for column in ("year", "year_from", "year_to"):
            table[column] = table[column].astype("Int64")
    except (ValueError, TypeError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise SourceError(f"{path}: not a tidy indicator table of this pipeline ({exc}); rerun the landscape to "
                          "rewrite it") from None
    return table


def _by_role(manifest: dict) -> dict[str, set[str]]:
    roles: dict[str, set[str]] = {}
    for record in manifest.get("inputs", []):
        roles.setdefault(record["role"], set()).add(record["sha256"])
    return roles


def _flat(data, prefix: str = "") -> dict[str, object]:
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def _fetched_assets(manifest: dict) -> dict[str, list[tuple]]:
    """Per fetched layer (landcover, ...): (asset id, update time) of every Earth Engine asset it was built from."""
    layers = (manifest.get("fetch") or {}).get("layers", {})
    return {role: sorted((a.get("id"), a.get("update_time")) for a in entry.get("assets", []))
            for role, entry in layers.items()}


def input_changes(a: dict, b: dict) -> pd.DataFrame:
    """One row per changed input between manifests ``a`` and ``b``: input, what changed, detail."""
    rows = []
    roles_a, roles_b = _by_role(a), _by_role(b)
    for role in sorted(set(roles_a) | set(roles_b)):
        if role not in roles_b or role not in roles_a:
            rows.append({"input": role, "change": "only in one run",
                         "detail": f"in run {'A' if role in roles_a else 'B'} only"})
        elif roles_a[role] != roles_b[role] and role != "config":  # config parameters are compared one by one
            rows.append({"input": role, "change": "content hash", "detail": "file contents differ (SHA-256)"})
    legend_a, legend_b = a.get("legend", {}), b.get("legend", {})
    for key, role in (("product", "product"), ("name", "legend")):
        if legend_a.get(key) != legend_b.get(key):
            rows.append({"input": role, "change": f"legend {key}", "detail": f"{legend_a.get(key)} -> {legend_b.get(key)}"})
    assets_a, assets_b = _fetched_assets(a), _fetched_assets(b)
    for role in sorted(set(assets_a) | set(assets_b)):
        if assets_a.get(role) != assets_b.get(role):
            rows.append({"input": "product", "change": f"Earth Engine assets of {role}",
                         "detail": f"{assets_a.get(role)} -> {assets_b.get(role)}"})
    grid_a, grid_b = a.get("grid", {}), b.get("grid", {})
    changed = [k for k in GRID_KEYS if grid_a.get(k) != grid_b.get(k)]
    if changed:
        rows.append({"input": "grid", "change": ", ".join(changed),
                     "detail": "; ".join(f"{k}: {grid_a.get(k)} -> {grid_b.get(k)}" for k in changed if k != "crs_wkt")
                     or "CRS differs"})
    config_a, config_b = _flat(a.get("config", {})), _flat(b.get("config", {}))
    skip = ("title", "data_sources", "compute", "trends")
    for key in sorted(set(config_a) | set(config_b)):
        if key.split(".")[0] in skip or config_a.get(key) == config_b.get(key):
            continue
        if key in ("boundary", "landcover.path") or key.startswith(("zones.", "rivers.", "mining_layers")):
            continue  # file names: their content is compared by hash above
        rows.append({"input": f"config.{key}", "change": "parameter", "detail": f"{config_a.get(key)} -> {config_b.get(key)}"})
    return pd.DataFrame(rows, columns=["input", "change", "detail"])


def _applies(flag: str, row_indicator: str, zone_layer: str | None, years: set[int]) -> bool:
    """Whether a changed input can move a row of ``row_indicator`` for ``zone_layer`` and ``years``."""
    if flag in GLOBAL_ROLES or flag.startswith("config.landcover") or flag.startswith("config.grid") \
            or flag.startswith("config.years") or flag.startswith("config.baseline") or flag.startswith("config.cutoff"):
        return True
    if flag.startswith("landcover_"):
        return int(flag.removeprefix("landcover_")) in years
    if flag.startswith("zones."):
        return zone_layer == flag.split(".")[1]
    if flag.startswith("config.indicators."):
        return flag.split(".")[2] == row_indicator
    if flag.startswith(("rivers", "mining_layers", "mining_rasters", "indicators.mining", "mining:")):
        return row_indicator == "mining"
    if flag.startswith(("indicators.degradation", "degradation:")):
        return row_indicator == "degradation"
    return True  # an input we cannot place: flag it everywhere rather than nowhere


def compare_runs(run_a: Path, run_b: Path, *, band: trends.StableBand | None = None):
    """(compare table, input changes) between two run folders; ``band`` defaults to run B's stable band."""
    manifest_a, table_a = read_run(run_a)
    manifest_b, table_b = read_run(run_b)
    if band is None:
        saved = manifest_b.get("trends", {})
        band = trends.StableBand(saved.get("relative_tolerance_pct", 0.5), saved.get("mapping_unit_ha", 0.0))
    table = trends.run_table(table_a, table_b, band=band, label_a="A", label_b="B")
    changes = input_changes(manifest_a, manifest_b)
    flags = list(dict.fromkeys(changes["input"]))
    when = table["from"].str.removeprefix("A").str.strip()  # "1985", "1985-2000" or "" (landscape_area_ha)
    years = [{int(y) for y in w.split("-") if y} for w in when]
    table["inputs_changed"] = [
        "; ".join(f for f in flags if _applies(f, indicator, zone_layer if isinstance(zone_layer, str) else None, ys))
        for indicator, zone_layer, ys in zip(table["indicator"], table["zone_layer"], years, strict=True)
    ]
    return table, changes


def write_comparison(run_a: Path, run_b: Path, out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write compare.csv and inputs_changed.csv into ``out_dir`` atomically; return both tables."""
    table, changes = compare_runs(run_a, run_b)
    with outputs.Staging(out_dir) as staging:
        outputs.write_csv(table, staging.path("compare.csv"))
        outputs.write_csv(changes, staging.path("inputs_changed.csv"))
        outputs.write_json({"run_a": str(run_a), "run_b": str(run_b)}, staging.path("runs.json"))
        staging.commit(["compare.csv", "inputs_changed.csv", "runs.json"])
    return table, changes
