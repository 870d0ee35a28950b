"""Sensitivity reruns in a real run (the mini landscape): value_lo/value_hi equal the values of separate runs
made with the changed parameter, and trends.csv widens its stable band by the range."""

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.runner import run

MINI = Path("tests/data/mini")


def _config(tmp_path: Path, name: str, **changes) -> Path:
    """A copy of mini.yaml next to a copy of its data, with indicator parameters or top-level keys changed."""
    folder = tmp_path / name
    shutil.copytree(MINI, folder)
    config = yaml.safe_load((MINI / "mini.yaml").read_text(encoding="utf-8"))
    for key, value in changes.items():
        if "." in key:
            indicator, field = key.split(".")
            config["indicators"][indicator][field] = value
        else:
            config[key] = value
    path = folder / "mini.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def _landscape(out: Path, indicator: str, metric: str, **where) -> pd.Series:
    table = pd.read_csv(out / f"{indicator}.csv", encoding="utf-8-sig")
    rows = table[(table.metric == metric) & (table.zone_layer == "landscape")]
    for key, value in where.items():
        rows = rows[rows[key] == value]
    assert len(rows) == 1, (metric, where, len(rows))
    return rows.iloc[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sensitivity")
    settings = {"neighbourhood": True, "edge_depth_factor": 0.5, "mapping_unit_px": 1, "persistence": True}
    out = {}
    for name, changes in {
        "with_range": {"sensitivity": settings},
        "edge_30": {"connectivity.edge_depth_m": 30},     # 60 m x 0.5
        "edge_90": {"connectivity.edge_depth_m": 90},     # 60 m x 1.5
        "four": {"connectivity.neighbourhood": 4, "degradation.neighbourhood": 4},
        "persist_2": {"mining.min_persistence_years": 2},
    }.items():
        out[name] = tmp / name / "out"
        run(_config(tmp, name, **changes), out_dir=out[name])
    return out


def test_ranges_equal_separate_runs(runs):
    core = _landscape(runs["with_range"], "connectivity", "core_area_ha", ecosystem="all_natural", year=2022)
    assert core.value_hi == _landscape(runs["edge_30"], "connectivity", "core_area_ha", ecosystem="all_natural", year=2022).value
    assert core.value_lo == _landscape(runs["edge_90"], "connectivity", "core_area_ha", ecosystem="all_natural", year=2022).value
    assert core.value_lo < core.value < core.value_hi

    patches = _landscape(runs["with_range"], "connectivity", "patch_count", ecosystem="all_natural", year=2022)
    four = _landscape(runs["four"], "connectivity", "patch_count", ecosystem="all_natural", year=2022).value
    assert four > patches.value  # 4-neighbour patches split 8-neighbour ones
    assert patches.value_hi == four and patches.value_lo == patches.value

    mining = _landscape(runs["with_range"], "mining", "mining_ha", year=1985)
    assert mining.value_lo == _landscape(runs["persist_2"], "mining", "mining_ha", year=1985).value

    conversion = pd.read_csv(runs["with_range"] / "conversion.csv", encoding="utf-8-sig")
    assert "value_lo" not in conversion.columns  # no varied parameter moves conversion numbers


def test_trends_band_includes_the_range(runs):
    trends = pd.read_csv(runs["with_range"] / "trends.csv", encoding="utf-8-sig", dtype={"from": str, "to": str})
    row = trends[(trends.metric == "core_area_ha") & (trends.zone_layer == "landscape")
                 & (trends.ecosystem == "all_natural") & (trends["from"] == "2000") & (trends["to"] == "2022")].iloc[0]
    a = _landscape(runs["with_range"], "connectivity", "core_area_ha", ecosystem="all_natural", year=2000)
    b = _landscape(runs["with_range"], "connectivity", "core_area_ha", ecosystem="all_natural", year=2022)
    assert row.stable_band == pytest.approx(max(a.value_hi - a.value_lo, b.value_hi - b.value_lo,
                                                0.005 * abs(a.value), 0.5), rel=1e-6)
    assert row.change == pytest.approx(b.value - a.value)
