"""`compare` between two runs (pipeline/compare.py, `python -m pipeline compare`): on two runs of the mini
landscape whose inputs differ (a renamed legend class, a block of changed pixels in the land cover), exactly
those inputs are flagged, and each row lists the flags that can move it; an identical rerun flags nothing."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio

from pipeline.compare import compare_runs, input_changes, read_run
from pipeline.runner import run

pytestmark = pytest.mark.xdist_group("compare")  # one worker builds the module's runs (make test: --dist loadgroup)
MINI = Path("tests/data/mini")
LEGEND = Path("configs/legends/mapbiomas_c8.yaml")
RASTER = "landcover_1985_2000_2022.tif"
LANDCOVER_YEARS = {"landcover_1985", "landcover_2000", "landcover_2022"}
BLOCK = (slice(70, 90), slice(70, 90))  # source pixels inside the 2.2 km circle; 208 of them forest in 2022


def make_root(dest: Path) -> Path:
    """A self-contained project root: the mini landscape and configs/legends/mapbiomas_c8.yaml; returns the config."""
    dest.mkdir(parents=True)
    for path in MINI.iterdir():
        if path.is_file():
            shutil.copy2(path, dest / path.name)
    (dest / "configs" / "legends").mkdir(parents=True)
    shutil.copy2(LEGEND, dest / "configs" / "legends" / LEGEND.name)
    return dest / "mini.yaml"


def rename_pasture(root: Path) -> None:
    """Legend edit that keeps the file valid: class 15 'Pasture' -> 'Planted pasture' (still non-natural)."""
    path = root / "configs" / "legends" / LEGEND.name
    text = path.read_text(encoding="utf-8")
    assert text.count("{name: Pasture,") == 1
    path.write_text(text.replace("{name: Pasture,", "{name: Planted pasture,"), encoding="utf-8")


def clear_forest_2022(root: Path) -> int:
    """Raster edit: forest (3) -> pasture (15) in a block of band 3 (2022) only; profile and CRS untouched."""
    with rasterio.open(root / RASTER, "r+") as dst:
        window = rasterio.windows.Window.from_slices(*BLOCK)
        block = dst.read(3, window=window)
        dst.write(np.where(block == 3, 15, block).astype(block.dtype), 3, window=window)
    return int((block == 3).sum())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs A (the mini landscape as is), B (legend and 2022 raster edited) and C (A's inputs again)."""
    tmp = tmp_path_factory.mktemp("compare")
    config_a, config_b = make_root(tmp / "root_a"), make_root(tmp / "root_b")
    rename_pasture(config_b.parent)
    assert clear_forest_2022(config_b.parent) == 208
    with rasterio.open(config_a.parent / RASTER) as a, rasterio.open(config_b.parent / RASTER) as b:
        assert a.profile == b.profile and a.crs == b.crs
        assert np.array_equal(a.read([1, 2]), b.read([1, 2])) and not np.array_equal(a.read(3), b.read(3))
    for config, out in ((config_a, "A"), (config_b, "B"), (config_a, "C")):
        run(config, out_dir=tmp / out)
    return tmp / "A", tmp / "B", tmp / "C"


def rows(table: pd.DataFrame, metric: str, **kw) -> pd.DataFrame:
    out = table[(table["metric"] == metric) & (table["zone_layer"] == "landscape")]
    for key, value in kw.items():
        out = out[out[key].isna()] if value is None else out[out[key] == value]
    return out


def test_legends_resolve_from_each_root(runs):
    a, b, _ = runs
    for folder in (a, b):
        manifest, _ = read_run(folder)
        legend = next(i for i in manifest["inputs"] if i["role"] == "legend")
        assert Path(legend["path"]) == folder.parent / f"root_{folder.name.lower()}" / "configs/legends/mapbiomas_c8.yaml"


def test_changed_inputs_are_exactly_the_legend_and_the_landcover(runs):
    """All three years are bands of one file, so changing one band changes the file's hash and flags every
    year read from it (landcover_1985 and _2000 too): the manifest has a checksum per file, not per band."""
    a, b, _ = runs
    table, changes = compare_runs(a, b)
    assert set(changes["input"]) == {"legend", *LANDCOVER_YEARS}
    assert len(changes) == 4  # one row each; not boundary, zones, rivers, mining layers, config or grid
    assert set(changes["change"]) == {"content hash"}

    # a conversion row lists the legend and the land-cover years it spans (and nothing else)
    converted = rows(table, "converted_ha", ecosystem="all_natural", class_from=None, class_to=None)
    flags = dict(zip(converted["from"], converted["inputs_changed"], strict=True))
    assert set(flags["A 1985-2000"].split("; ")) == {"legend", "landcover_1985", "landcover_2000"}
    assert set(flags["A 2000-2022"].split("; ")) == {"legend", "landcover_2000", "landcover_2022"}
    extent = rows(table, "natural_extent_ha", ecosystem="all_natural").set_index("from")
    assert set(extent.loc["A 2022", "inputs_changed"].split("; ")) == {"legend", "landcover_2022"}

    # mining rows are flagged too: the land-cover mining class is one of their sources, so a land-cover
    # flag applies by year to every indicator (conservative), even to rows of the AMW polygons alone
    amw = table[(table["indicator"] == "mining") & table["metric"].str.contains("amw")]
    assert len(amw) and amw["inputs_changed"].str.contains("legend").all()
    for when, flags_ in zip(amw["from"], amw["inputs_changed"], strict=True):
        years = {f"landcover_{y}" for y in when.removeprefix("A ").split("-")}
        assert set(flags_.split("; ")) == {"legend", *years}
    assert (table["inputs_changed"] != "").all()  # the legend can move any number
    # a row without a year (the zone's area) is moved by no land-cover year, only by the global legend
    assert set(rows(table, "landscape_area_ha")["inputs_changed"]) == {"legend"}


def test_numbers_moved_only_where_the_inputs_moved(runs):
    a, b, _ = runs
    table, _ = compare_runs(a, b)
    extent = rows(table, "natural_extent_ha", ecosystem="all_natural").set_index("from")
    assert extent.loc["A 1985", "change"] == 0 and extent.loc["A 2000", "change"] == 0
    assert extent.loc["A 1985", "direction"] == "stable"
    # 208 source pixels of ~0.089 ha cleared in 2022 (nearest-neighbour onto the 30 m grid: about as many)
    assert -22 < extent.loc["A 2022", "change"] < -15
    assert extent.loc["A 2022", "direction"] == "worse"
    # the renamed class: rows keyed by the old name exist in A only, by the new name in B only
    old = table[table["class_to"] == "Pasture"]
    new = table[table["class_to"] == "Planted pasture"]
    assert len(old) and len(new)
    assert old["value_to"].isna().all() and new["value_from"].isna().all()
    assert (old["direction"] == "").all() and (new["direction"] == "").all()


def test_identical_rerun_flags_nothing_and_changes_nothing(runs):
    a, _, c = runs
    table, changes = compare_runs(a, c)
    assert changes.empty and list(changes.columns) == ["input", "change", "detail"]
    assert len(table) > 1000
    assert (table["change"] == 0).all()
    assert (table["direction"] == "stable").all()
    assert (table["inputs_changed"] == "").all()


# ------------------------------------------------------------------------------------------------------ CLI
def cli(*args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_cli_compare_writes_both_tables(runs, tmp_path):
    a, b, _ = runs
    out = tmp_path / "cmp"
    proc = cli("compare", a, b, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["compare.csv", "inputs_changed.csv", "runs.json"]
    changes = pd.read_csv(out / "inputs_changed.csv", encoding="utf-8-sig")
    assert set(changes["input"]) == {"legend", *LANDCOVER_YEARS}
    table = pd.read_csv(out / "compare.csv", encoding="utf-8-sig")
    expected, _ = compare_runs(a, b)
    assert len(table) == len(expected) and "inputs_changed" in table.columns
    assert "4 input change(s)" in proc.stderr and "legend: content hash" in proc.stderr


def test_cli_compare_without_manifest_fails_with_one_line(runs, tmp_path):
    a, _, _ = runs
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    out = tmp_path / "cmp"
    proc = cli("compare", a, empty, "--out", out)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert f"{empty}: no manifest.json" in lines[0]
    assert not out.exists()


def test_changed_earth_engine_asset_is_a_product_change():
    """Two runs fetched from different asset versions: the product is flagged with both versions."""
    base = {"inputs": [], "legend": {"product": "P", "name": "l"}, "grid": {}, "config": {}}
    fetched = {"layers": {"landcover": {"assets": [{"id": "projects/x/c6", "update_time": "2024-01-01T00:00:00Z"}]}}}
    newer = {"layers": {"landcover": {"assets": [{"id": "projects/x/c6", "update_time": "2025-03-01T00:00:00Z"}]}}}
    assert input_changes({**base, "fetch": fetched}, {**base, "fetch": fetched}).empty
    changes = input_changes({**base, "fetch": fetched}, {**base, "fetch": newer})
    assert changes["input"].tolist() == ["product"]
    assert "2024-01-01" in changes["detail"].iloc[0] and "2025-03-01" in changes["detail"].iloc[0]


def test_a_broken_indicator_csv_is_one_clear_error(tmp_path):
    """A run folder whose CSV was damaged (e.g. saved back from a spreadsheet with columns removed)."""
    from pipeline.errors import SourceError

    (tmp_path / "manifest.json").write_text("{}", encoding="utf-8")
    (tmp_path / "conversion.csv").write_text("metric,value\nconverted_ha,1\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"conversion.csv: not a tidy indicator table .*'landscape'"):
        read_run(tmp_path)
