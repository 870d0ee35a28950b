"""Parameter sensitivity (pipeline/sensitivity.py): which reruns a config gets, and the value_lo/value_hi
envelope over them, on hand-made tables."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import SensitivityConfig, load_landscape
from pipeline.indicators.base import tidy
from pipeline.sensitivity import envelope, moved_by, variants
from pipeline.testing import make_config

MINI = Path("tests/data/mini/mini.yaml")
PIXEL_HA = 0.09  # 30 m pixels


def rows(values: list[float | None], *, zone: str = "L", landscape: str = "L") -> pd.DataFrame:
    """core_area_ha of zone ``zone`` in the years 2000, 2010, 2020 (None = no row for that year)."""
    data = [{"metric": "core_area_ha", "unit": "ha", "zone_layer": "landscape", "zone": zone, "ecosystem": "forest",
             "year": year, "value": v} for year, v in zip((2000, 2010, 2020), values, strict=True) if v is not None]
    return tidy(data, landscape=landscape, indicator="connectivity")


# ---------------------------------------------------------------------------------------------- envelope
def test_envelope_is_min_and_max_over_base_and_reruns():
    base = rows([100.0, 80.0, 60.0])
    low, high = rows([90.0, 80.0, 61.0]), rows([105.0, 79.0, 62.0])
    out = envelope(base, [low, high])
    assert out["value"].tolist() == [100.0, 80.0, 60.0]  # the base value is kept
    assert out["value_lo"].tolist() == [90.0, 79.0, 60.0]
    assert out["value_hi"].tolist() == [105.0, 80.0, 62.0]
    assert list(out.columns[-2:]) == ["value_lo", "value_hi"]  # DESIGN §5: they follow `value`
    assert "value_lo" not in base.columns  # the input is not modified


def test_rows_missing_from_a_rerun_are_ignored():
    """A rerun without the 2010 row (e.g. no patch at 4 neighbours) neither narrows nor widens its range;
    a rerun row the base does not have adds no row."""
    base = rows([100.0, 80.0, 60.0])
    partial = rows([120.0, None, 50.0])
    extra = rows([100.0, 80.0, 60.0], zone="only in the rerun")
    out = envelope(base, [partial, pd.concat([extra, rows([99.0, 81.0, 60.0])], ignore_index=True)])
    assert len(out) == 3
    assert out["value_lo"].tolist() == [99.0, 80.0, 50.0]
    assert out["value_hi"].tolist() == [120.0, 81.0, 60.0]


def test_envelope_matches_on_keys_not_on_row_order_or_labels():
    base = rows([100.0, 80.0, 60.0])
    shuffled = rows([90.0, 70.0, 50.0], landscape="renamed").iloc[::-1].reset_index(drop=True)
    out = envelope(base, [shuffled])
    assert out["value_lo"].tolist() == [90.0, 70.0, 50.0]


def test_no_rerun_and_missing_base_value():
    base = rows([100.0, np.nan, 60.0])
    out = envelope(base, [])
    assert out["value_lo"].tolist()[::2] == [100.0, 60.0] and out["value_hi"].tolist()[::2] == [100.0, 60.0]
    widened = envelope(base, [rows([90.0, 5.0, 60.0])])
    assert np.isnan(widened["value_lo"].iloc[1]) and np.isnan(widened["value_hi"].iloc[1])  # no value, no range


def test_moved_by_counts_rows_each_variant_moved():
    base = rows([100.0, 80.0, 60.0])
    assert moved_by(base, {"a": rows([100.0, 80.0, 60.0]), "b": rows([99.0, 80.0, 61.0])}) == {"a": 0, "b": 2}


# ---------------------------------------------------------------------------------------------- variants
@pytest.fixture(scope="module")
def mini():
    """mini.yaml: connectivity 8 neighbours, edge 60 m, min patch 0.5 ha; degradation 8 neighbours, edge 100 m;
    mining persistence 1 year (default); conversion (no sensitive parameter)."""
    return load_landscape(MINI)


def test_variants_of_the_mini_config(mini):
    out = variants(mini, SensitivityConfig(), PIXEL_HA)
    assert [(v.label, v.indicators) for v in out] == [
        ("neighbourhood 4<->8", ("connectivity", "degradation")),
        ("edge_depth x0.5", ("connectivity", "degradation")),
        ("edge_depth x1.5", ("connectivity", "degradation")),
        ("min_patch -1 px", ("connectivity",)),
        ("min_patch +1 px", ("connectivity",)),
        ("persistence 1<->2", ("mining",)),
    ]
    by = {v.label: v.config.indicators for v in out}
    assert by["neighbourhood 4<->8"].connectivity.neighbourhood == 4
    assert by["neighbourhood 4<->8"].degradation.neighbourhood == 4
    assert by["edge_depth x0.5"].connectivity.edge_depth_m == pytest.approx(30)
    assert by["edge_depth x0.5"].degradation.edge_depth_m == pytest.approx(50)
    assert by["edge_depth x1.5"].connectivity.edge_depth_m == pytest.approx(90)
    assert by["edge_depth x1.5"].degradation.edge_depth_m == pytest.approx(150)
    assert by["min_patch -1 px"].connectivity.min_patch_ha == pytest.approx(0.41)
    assert by["min_patch +1 px"].connectivity.min_patch_ha == pytest.approx(0.59)
    assert by["persistence 1<->2"].mining.min_persistence_years == 2


def test_each_variant_changes_one_parameter_and_leaves_the_base_alone(mini):
    before = mini.model_dump()
    for v in variants(mini, SensitivityConfig(), PIXEL_HA):
        base, changed = before["indicators"], v.config.model_dump()["indicators"]
        diff = {(ind, key) for ind in base if base[ind] is not None
                for key in base[ind] if base[ind][key] != changed[ind][key]}
        assert {ind for ind, _ in diff} == set(v.indicators), v.label
        assert len({key for _, key in diff}) == 1, v.label  # one parameter (in each indicator that has it)
        assert v.config.model_dump() | {"indicators": None} == before | {"indicators": None}
    assert mini.model_dump() == before


def test_other_way_round_and_clipping():
    """4 neighbours -> 8, persistence 2 -> 1, min patch 0.05 ha - 1 px clipped at 0."""
    config = make_config([2000, 2010], indicators={
        "connectivity": {"neighbourhood": 4, "min_patch_ha": 0.05, "edge_depth_m": 100},
        "mining": {"min_persistence_years": 2}})
    by = {v.label: v.config.indicators for v in variants(config, SensitivityConfig(), PIXEL_HA)}
    assert set(by) == {"neighbourhood 4<->8", "edge_depth x0.5", "edge_depth x1.5", "min_patch -1 px",
                       "min_patch +1 px", "persistence 1<->2"}
    assert by["neighbourhood 4<->8"].connectivity.neighbourhood == 8
    assert by["persistence 1<->2"].mining.min_persistence_years == 1
    assert by["min_patch -1 px"].connectivity.min_patch_ha == 0.0
    assert by["min_patch +1 px"].connectivity.min_patch_ha == pytest.approx(0.14)
    assert by["neighbourhood 4<->8"].degradation is None  # not configured, not created


def test_settings_switch_variants_off_and_unconfigured_indicators_get_none(mini):
    off = SensitivityConfig(neighbourhood=False, edge_depth_factor=0, mapping_unit_px=0, persistence=False)
    assert variants(mini, off, PIXEL_HA) == []
    only_conversion = make_config([2000, 2010])
    assert variants(only_conversion, SensitivityConfig(), PIXEL_HA) == []
    two_px = variants(mini, SensitivityConfig(neighbourhood=False, edge_depth_factor=0.25, mapping_unit_px=2,
                                              persistence=False), PIXEL_HA)
    assert [v.label for v in two_px] == ["edge_depth x0.75", "edge_depth x1.25", "min_patch -2 px", "min_patch +2 px"]
    assert two_px[2].config.indicators.connectivity.min_patch_ha == pytest.approx(0.5 - 0.18)
