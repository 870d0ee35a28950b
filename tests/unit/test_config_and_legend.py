"""Config and legend validation: unknown keys, names, years, legends that name every code."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline import legend as legend_mod
from pipeline.config import LandscapeConfig, load_landscape, resolve_config_path
from pipeline.errors import ConfigError, LegendError
from pipeline.legend import OUTSIDE, UNMAPPED
from pipeline.testing import make_config, make_legend

LEGENDS = Path("configs/legends")


def _write(tmp_path: Path, data: dict, name: str = "x") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _base() -> dict:
    return yaml.safe_load(Path("configs/landscapes/lourenco.yaml").read_text()) | {"name": "x"}


def test_shipped_landscapes_load():
    for path in Path("configs/landscapes").glob("*.yaml"):
        assert load_landscape(path).name == path.stem


def test_periods_are_consecutive_then_baseline_and_cutoff_to_last():
    config = make_config([1985, 2000, 2010, 2020, 2022], cutoff_year=2010)
    assert config.periods() == [(1985, 2000), (2000, 2010), (2010, 2020), (2020, 2022), (1985, 2022), (2010, 2022)]
    assert make_config([2000, 2010]).periods() == [(2000, 2010)]


@pytest.mark.parametrize(("change", "message"), [
    ({"colour": "red"}, "colour: unknown key"),
    ({"grid": {"crs": "auto", "resolutoin_m": 30}}, "grid.resolutoin_m: unknown key"),
    ({"years": [2000, 1990]}, "strictly ascending"),
    ({"cutoff_year": 1990}, "cutoff_year 1990 must be one of years"),
    ({"name": "../x"}, "may only contain a-z"),
    ({"indicators": {"conversion": {"min_mapping_unit_ha": -1}}}, "indicators.conversion.min_mapping_unit_ha"),
    ({"grid": {"chunk_px": 4}}, "grid.chunk_px"),
])
def test_config_errors_name_file_and_key(tmp_path, change, message):
    path = _write(tmp_path, _base() | change)
    with pytest.raises(ConfigError) as err:
        load_landscape(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_name_must_match_file(tmp_path):
    with pytest.raises(ConfigError, match="must equal the file name 'y'"):
        load_landscape(_write(tmp_path, _base(), name="y"))


def test_landscape_names_with_paths_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="may only contain a-z"):
        resolve_config_path("../x", tmp_path)
    with pytest.raises(ConfigError, match="known landscapes: lourenco"):
        resolve_config_path("nowhere", Path("."))


@pytest.mark.parametrize("name", ["mapbiomas_c8", "mapbiomas_c6", "mapbiomas_amazonia"])
def test_shipped_legends(name):
    legend = legend_mod.load(name, LEGENDS)
    assert legend.config.nodata == [27]
    assert legend.mining[legend.codes == 30].all() and legend.mining.sum() == 1
    assert not legend.natural[legend.codes == 15].any() and legend.natural[legend.codes == 3].all()
    assert legend.water[legend.codes == 33].all()
    assert 0 not in legend.config.classes  # the araguari rasters' undocumented 0 must stay an error


def test_lookup_table_and_unknown_codes():
    legend = make_legend()
    lut = legend.lookup_table(np.dtype("uint8"), outside_code=0)
    assert lut[0] == OUTSIDE and lut[27] == UNMAPPED
    assert [legend.names[lut[c]] for c in (3, 12, 15, 30, 33)] == ["Forest", "Grassland", "Pasture", "Mining", "River"]
    histogram = np.zeros(256, np.int64)
    histogram[[0, 3, 27, 41]] = [5, 10, 1, 2]
    assert legend.unknown_codes(histogram, outside_code=0) == [41]
    with pytest.raises(LegendError, match=r"code\(s\) 41 \(2 px\) occur in some.tif .* not in test.yaml; add them"):
        legend.check_codes(histogram, source="some.tif", outside_code=0)


def test_outside_code_avoids_legend_codes():
    legend = make_legend()
    assert legend.outside_code(np.dtype("uint8")) == 0
    with_zero = make_legend({0: {"name": "Zero", "natural": False}, 3: {"name": "Forest", "natural": True, "ecosystem": "forest"}})
    assert with_zero.outside_code(np.dtype("uint8")) == 255


@pytest.mark.parametrize(("cls", "message"), [
    ({"name": "Forest", "natural": True}, "needs an ecosystem"),
    ({"name": "Pasture", "natural": False, "ecosystem": "forest"}, "must not have an ecosystem"),
    ({"name": "Forest", "natural": True, "ecosystem": "jungle"}, "ecosystem"),
])
def test_legend_class_validation(tmp_path, cls, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"product": "p", "nodata": [27], "classes": {3: cls}}))
    with pytest.raises(ConfigError, match=message):
        legend_mod.load("bad", tmp_path)


def test_missing_legend_lists_known_ones(tmp_path):
    with pytest.raises(LegendError, match="known legends: dynamic_world, esa_worldcover, hansen_forest, jrc_tmf_annual_change, mapbiomas_amazonia, mapbiomas_c6, mapbiomas_c8"):
        legend_mod.load("nope", LEGENDS)


def test_config_model_is_strict():
    assert LandscapeConfig.model_config["extra"] == "forbid"


def test_edge_depth_wider_than_a_chunk_is_a_config_error(tmp_path):
    import shutil

    from pipeline.prepare import prepare

    for f in Path("tests/data/mini").iterdir():
        shutil.copy(f, tmp_path / f.name)
    data = yaml.safe_load((tmp_path / "mini.yaml").read_text())
    data["grid"]["chunk_px"] = 16
    data["indicators"]["connectivity"]["edge_depth_m"] = 600  # 20 px at 30 m
    degradation = data["indicators"].pop("degradation")
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="edge_depth_m 600 needs a halo of 20 px, wider than grid.chunk_px 16"):
        prepare(tmp_path / "mini.yaml")
    data["indicators"]["degradation"] = degradation  # isolation_m 1000 m = 34 px
    data["indicators"]["connectivity"]["edge_depth_m"] = 60
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="indicators.degradation edge_depth_m/isolation_m need a halo of 34 px"):
        prepare(tmp_path / "mini.yaml")


def test_external_degradation_raster_missing_a_period_end_year(tmp_path):
    import shutil

    from pipeline.errors import SourceError
    from pipeline.prepare import prepare

    for f in Path("tests/data/mini").iterdir():
        if f.is_file():
            shutil.copy(f, tmp_path / f.name)
    shutil.copy(tmp_path / "landcover_1985_2000_2022.tif", tmp_path / "tmf_2000.tif")  # 2022 is missing
    data = yaml.safe_load((tmp_path / "mini.yaml").read_text())
    data["indicators"]["degradation"]["rules"] = ["edge", "external"]
    data["indicators"]["degradation"]["external"] = {"path": "tmf_{year}.tif", "degraded_values": [30], "name": "tmf"}
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SourceError, match=r"tmf_\{year\}.tif: indicators.degradation.external has no file or band for \[2022\]"):
        prepare(tmp_path / "mini.yaml")


def test_too_many_mining_sources_is_a_config_error(tmp_path):
    data = _base() | {"mining_layers": [{"name": f"l{i}", "path": "x.gpkg", "year_field": "year"} for i in range(8)]}
    with pytest.raises(ConfigError, match="at most 7 mining_layers and mining_rasters together"):
        load_landscape(_write(tmp_path, data))
