"""End-to-end checks of what a user sees when an input is wrong (DESIGN.md §5, §7; pipeline/cli.py).

Every case copies the tiny real landscape tests/data/mini/ into ``tmp_path``, breaks one thing, runs the CLI
as a subprocess (``python -m pipeline ...``, the most faithful way to get exit codes and stderr) and checks:

- the exit code: 1 for data/config errors, 2 for usage errors;
- the message: an ``error:`` line naming the file and/or key and saying the fix (specific substrings);
- no traceback (``--debug`` is never passed);
- nothing written: the ``--out`` folder does not exist afterwards, no staging folder is left behind, and a
  good earlier result in ``--out`` is left byte-identical by a failing run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.shutil
import shapely
import shapely.affinity
import yaml

REPO = Path(__file__).resolve().parents[2]
MINI = REPO / "tests" / "data" / "mini"
MINI_FILES = ("mini.yaml", "boundary.gpkg", "landcover_1985_2000_2022.tif", "zones.gpkg", "amw.gpkg", "rivers.gpkg")
MINI_TIF = "landcover_1985_2000_2022.tif"
ARAGUARI_TIF = REPO / "tests" / "data" / "araguari" / "mapbiomas_c6_araguari_2020.tif"
C6_LEGEND = "configs/legends/mapbiomas_c6.yaml"


# ------------------------------------------------------------------------------------------------ helpers
@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


def cli(*args: str | Path, cwd: Path) -> Result:
    """``python -m pipeline ARGS`` in ``cwd``; never raises on a non-zero exit."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_data_error(result: Result, *fragments: str) -> None:
    """Exit 1, an ``error:`` line on stderr, every fragment in that error text, and no traceback."""
    assert result.returncode == 1, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.output, result.output
    assert result.error_lines(), f"no line starting with 'error:' on stderr:\n{result.stderr}"
    message = result.stderr[result.stderr.index("error:"):]
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in the error message:\n{message}"


def assert_nothing_written(out: Path) -> None:
    assert not out.exists(), f"{out} was created by a failing run: {sorted(p.name for p in out.iterdir())}"
    leftovers = [p.name for p in out.parent.glob(f".{out.name}.staging-*")]
    assert not leftovers, f"staging folder(s) left behind: {leftovers}"


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def copy_mini(dest: Path) -> Path:
    """Copy the mini landscape into ``dest``; return the path of its YAML file."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in MINI_FILES:
        shutil.copy2(MINI / name, dest / name)
    return dest / "mini.yaml"


def edit_yaml(path: Path, **changes: object) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def rewrite_boundary(case: Path, geometry: shapely.Geometry | None) -> Path:
    """Replace boundary.gpkg by one feature ``geometry`` (or a layer with zero features), same CRS/layer."""
    path = case / "boundary.gpkg"
    frame = gpd.read_file(path)
    path.unlink()
    if geometry is None:
        empty = gpd.GeoDataFrame({"landscape": []}, geometry=gpd.GeoSeries([], crs=frame.crs), crs=frame.crs)
        empty.to_file(path, layer="boundary", driver="GPKG", engine="pyogrio", geometry_type="Polygon")
    else:
        gpd.GeoDataFrame({"landscape": ["mini"]}, geometry=[geometry], crs=frame.crs).to_file(
            path, layer="boundary", driver="GPKG", engine="pyogrio")
    return path


def raster_centre(path: Path) -> tuple[float, float]:
    with rasterio.open(path) as src:
        b = src.bounds
    return (b.left + b.right) / 2, (b.bottom + b.top) / 2


@pytest.fixture
def case(tmp_path: Path) -> Path:
    """A fresh copy of the mini landscape; returns its YAML path (folder: tmp_path / 'mini')."""
    return copy_mini(tmp_path / "mini")


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out"


# ----------------------------------------------------------------------------- 1. raster without a CRS
@pytest.mark.parametrize("command", ["run", "validate"])
def test_raster_without_crs(case: Path, out: Path, command: str) -> None:
    tif = case.parent / MINI_TIF
    with rasterio.open(tif) as src:
        data, profile = src.read(), src.profile
    tif.unlink()
    with rasterio.open(tif, "w", **(profile | {"crs": None})) as dst:
        dst.write(data)
    with rasterio.open(tif) as src:
        assert src.crs is None

    args = [command, case] + (["--out", out, "--no-progress"] if command == "run" else [])
    result = cli(*args, cwd=case.parent)
    assert_data_error(result, str(tif), "no CRS", "assign one", "gdal_edit.py -a_srs")
    assert_nothing_written(out)


# --------------------------------------------------------------------- 2. boundary beside the raster
@pytest.mark.parametrize("command", ["run", "validate"])
def test_boundary_not_overlapping_raster(case: Path, out: Path, command: str) -> None:
    boundary = case.parent / "boundary.gpkg"
    shifted = shapely.affinity.translate(gpd.read_file(boundary).geometry.iloc[0], xoff=200_000)
    rewrite_boundary(case.parent, shifted)

    args = [command, case] + (["--out", out, "--no-progress"] if command == "run" else [])
    result = cli(*args, cwd=case.parent)
    assert_data_error(result, str(boundary), "does not overlap", MINI_TIF, "check both files' CRS")
    assert_nothing_written(out)


# ------------------------------------------------------------------------ 3. code not in the legend
@pytest.fixture
def araguari_case(tmp_path: Path) -> Path:
    """The Araguari MapBiomas C6 raster (holds undocumented code 0) as ara_2019.tif and ara_2020.tif, a
    boundary covering the whole raster, legend mapbiomas_c6, native grid. A full run takes ~10 s."""
    folder = tmp_path / "ara"
    folder.mkdir()
    shutil.copy2(ARAGUARI_TIF, folder / "ara_2019.tif")
    (folder / "ara_2020.tif").symlink_to("ara_2019.tif")
    with rasterio.open(ARAGUARI_TIF) as src:
        assert src.crs.to_epsg() == 31976
        zeros = int((src.read(1) == 0).sum())
        bounds = src.bounds
    assert zeros > 0, "the Araguari raster was expected to contain code 0"
    gpd.GeoDataFrame({"landscape": ["ara"]}, geometry=[shapely.box(*bounds)], crs="EPSG:31976").to_file(
        folder / "boundary.gpkg", layer="boundary", driver="GPKG", engine="pyogrio")
    config = {
        "name": "ara", "boundary": "boundary.gpkg", "years": [2019, 2020],
        "landcover": {"legend": "mapbiomas_c6", "path": "ara_{year}.tif"},
        "grid": {"crs": "native"}, "indicators": {"conversion": {}},
    }
    path = folder / "ara.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _assert_code_0_error(result: Result, config: Path) -> None:
    assert_data_error(result, str(config.parent / "ara_2019.tif"), C6_LEGEND, "to classes or to nodata")
    message = result.error_lines()[0]
    assert re.search(r"\bcode(?:s|\(s\))? 0\b", message), f"code 0 is not named: {message}"


def test_unknown_code_validate(araguari_case: Path) -> None:
    result = cli("validate", araguari_case, cwd=REPO)
    _assert_code_0_error(result, araguari_case)


def test_unknown_code_run(araguari_case: Path, tmp_path: Path) -> None:
    """Regression: `run` once dropped undocumented code 0 silently, because 0 is also the code it writes for
    'outside the boundary' when the legend leaves 0 free; align.align_tile now rejects it."""
    out = tmp_path / "ara_out"
    result = cli("run", araguari_case, "--out", out, "--no-progress", cwd=REPO)
    _assert_code_0_error(result, araguari_case)
    assert_nothing_written(out)


# ---------------------------------------------------------------- 4. a configured year has no data
@pytest.mark.parametrize("command", ["run", "validate"])
def test_year_without_band(case: Path, out: Path, command: str) -> None:
    edit_yaml(case, years=[1985, 2000, 2022, 2023])  # band_per_year.years stays [1985, 2000, 2022]

    args = [command, case] + (["--out", out, "--no-progress"] if command == "run" else [])
    result = cli(*args, cwd=case.parent)
    assert_data_error(result, str(case.parent / MINI_TIF), "no band for year 2023", "the file has 3 bands",
                      "remove 2023 from years or fix landcover.band_per_year")
    assert_nothing_written(out)


def test_per_year_template_file_missing(case: Path, out: Path) -> None:
    folder = case.parent
    with rasterio.open(folder / MINI_TIF) as src:
        profile = src.profile | {"count": 1}
        for band, year in enumerate((1985, 2000, 2022), start=1):
            if year == 2000:
                continue  # the missing year
            with rasterio.open(folder / f"lc_{year}.tif", "w", **profile) as dst:
                dst.write(src.read(band), 1)
    data = yaml.safe_load(case.read_text(encoding="utf-8"))
    data["landcover"] = {"legend": "mapbiomas_c8", "path": "lc_{year}.tif"}
    case.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    result = cli("run", case, "--out", out, "--no-progress", cwd=folder)
    assert_data_error(result, str(folder / "lc_2000.tif"), "land cover for 2000 not found",
                      "check landcover.path and years")
    assert "lc_1985.tif" not in result.error_lines()[0]
    assert_nothing_written(out)


# ------------------------------------------------------------------------- 5. corrupt / truncated tif
def _truncate(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(size // 2)


@pytest.mark.parametrize("command", ["run", "validate"])
def test_truncated_geotiff(case: Path, out: Path, command: str) -> None:
    """GDAL writes the mini file's directory at its end, so half the bytes cannot even be opened."""
    tif = case.parent / MINI_TIF
    _truncate(tif)
    args = [command, case] + (["--out", out, "--no-progress"] if command == "run" else [])
    result = cli(*args, cwd=case.parent)
    assert_data_error(result, str(tif), "cannot open as a raster", "corrupt")
    assert_nothing_written(out)


def test_garbage_geotiff(case: Path, out: Path) -> None:
    tif = case.parent / MINI_TIF
    tif.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    result = cli("run", case, "--out", out, "--no-progress", cwd=case.parent)
    assert_data_error(result, str(tif), "cannot open as a raster", "corrupt or not a GeoTIFF")
    assert_nothing_written(out)


def _cog_with_missing_tiles(tif: Path) -> None:
    """Rewrite ``tif`` as an uncompressed COG (directory first) and cut its tile data in half: the file opens
    (metadata intact) and fails only when pixels are read, i.e. inside the run's staging step."""
    tmp = tif.with_name("cog.tif")
    rasterio.shutil.copy(tif, tmp, driver="COG", compress="NONE", overviews="NONE", blocksize=64)
    os.replace(tmp, tif)
    _truncate(tif)
    with rasterio.open(tif) as src:  # still opens
        assert src.count == 3 and src.crs is not None


def test_truncated_tiles_leave_good_result_untouched(case: Path, out: Path) -> None:
    good = cli("run", case, "--out", out, "--no-progress", cwd=case.parent)
    assert good.returncode == 0, good.output
    before = snapshot(out)
    assert "manifest.json" in before and "conversion.csv" in before

    tif = case.parent / MINI_TIF
    _cog_with_missing_tiles(tif)
    result = cli("run", case, "--out", out, "--no-progress", cwd=case.parent)
    assert_data_error(result, str(tif), "cannot read bands", "truncated or corrupt", "copy it again")
    assert snapshot(out) == before, "a failing run changed the earlier good result"
    assert not list(out.parent.glob(f".{out.name}.staging-*")), "staging folder left behind"


def test_failure_while_the_cogs_are_copied_leaves_good_result_untouched(case: Path, out: Path, monkeypatch) -> None:
    """In one process: a good run; a run whose last indicator fails once the COGs are being copied in their own
    thread (the reading threads keeping rasters open) changes nothing and leaves no staging folder; then a land
    cover broken in place is reported by the next run. (That a kept-open file is reopened when it changes on
    disk: tests/unit/test_raster_files.py.)"""
    from pipeline import runner
    from pipeline.indicators import REGISTRY

    runner.run(case, out_dir=out, sensitivity_reruns=False)
    before = snapshot(out)
    last = list(REGISTRY.values())[-1]

    def fails(*args, **kwargs):
        raise RuntimeError("the last indicator failed")

    with monkeypatch.context() as patched:
        patched.setattr(last, "compute", fails)
        with pytest.raises(RuntimeError, match="the last indicator failed"):
            runner.run(case, out_dir=out, sensitivity_reruns=False)
    assert snapshot(out) == before, "a failing run changed the earlier good result"
    assert not list(out.parent.glob(f".{out.name}.staging-*")), "staging folder left behind"

    tif = case.parent / MINI_TIF
    _cog_with_missing_tiles(tif)
    with pytest.raises(Exception, match="truncated or corrupt"):
        runner.run(case, out_dir=out, sensitivity_reruns=False)
    assert snapshot(out) == before


def test_truncated_tiles_validate(case: Path) -> None:
    tif = case.parent / MINI_TIF
    _cog_with_missing_tiles(tif)
    result = cli("validate", case, cwd=case.parent)
    assert_data_error(result, str(tif), "cannot read bands", "truncated or corrupt")


# ------------------------------------------------------------------- 6. empty and invalid boundaries
def test_empty_boundary(case: Path, out: Path) -> None:
    """A boundary layer with zero features is an error naming the file (local.read_vector)."""
    boundary = rewrite_boundary(case.parent, None)
    result = cli("run", case, "--out", out, "--no-progress", cwd=case.parent)
    assert_data_error(result, str(boundary), "boundary has no features")
    assert_nothing_written(out)


def test_self_intersecting_boundary_is_repaired(case: Path, out: Path) -> None:
    """What the pipeline does (pipeline/sources/local.py, read_boundary): an invalid boundary polygon (here a
    bow-tie around the raster centre) is repaired with ``shapely.make_valid`` -- the two triangles the
    analyst drew -- with a warning naming the file and the reason; the run succeeds, and the repair note is
    recorded in manifest.json ``boundary_notes``."""
    cx, cy = raster_centre(case.parent / MINI_TIF)
    d = 1500.0
    bowtie = shapely.Polygon([(cx - d, cy - d), (cx + d, cy + d), (cx + d, cy - d), (cx - d, cy + d)])
    assert not bowtie.is_valid
    boundary = rewrite_boundary(case.parent, bowtie)

    result = cli("run", case, "--out", out, "--no-progress", cwd=case.parent)
    assert result.returncode == 0, result.output
    assert "Traceback" not in result.output
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning:") and "make_valid" in line]
    assert warning, result.stderr
    assert str(boundary) in warning[0] and "invalid boundary polygon(s) repaired" in warning[0]
    assert "Self-intersection" in warning[0]

    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    notes = manifest["boundary_notes"]
    assert len(notes) == 1 and "repaired with make_valid" in notes[0] and str(boundary) in notes[0]
    assert manifest["area_check"]["passed"]
    # the repaired area is the two triangles, i.e. half the square spanned by the bow-tie
    assert manifest["area_check"]["boundary_geodesic_ha"] == pytest.approx(2 * d * d / 10_000, rel=0.01)


# --------------------------------------------------------------------------------- 7. unknown keys
@pytest.mark.parametrize("command", ["run", "validate"])
def test_unknown_config_keys(case: Path, out: Path, command: str) -> None:
    edit_yaml(case, colour="red", grid={"crs": "auto", "resolutoin_m": 30})
    args = [command, case] + (["--out", out, "--no-progress"] if command == "run" else [])
    result = cli(*args, cwd=case.parent)
    assert_data_error(result, f"{case}: colour: unknown key", f"{case}: grid.resolutoin_m: unknown key",
                      "check its spelling")
    assert_nothing_written(out)


# ------------------------------------------------------------------------ 8. names with a path in them
def test_landscape_argument_with_path(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    result = cli("run", "../x", "--no-progress", cwd=root)
    assert_data_error(result, "'../x'", "may only contain a-z, 0-9, _ and - (no paths)",
                      "or give the path of a .yaml file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]
    assert not any(root.iterdir())


def test_yaml_name_with_path(tmp_path: Path) -> None:
    folder = tmp_path / "cfg"
    config = copy_mini(folder).rename(folder / "x.yaml")
    edit_yaml(config, name="../x")
    before = sorted(p.name for p in tmp_path.rglob("*"))

    result = cli("run", config, "--no-progress", cwd=folder)  # default output: <root>/data/processed/<name>
    assert_data_error(result, str(config), "name:", "'../x'", "may only contain a-z, 0-9, _ and - (no paths)")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert not (folder / "data").exists()


# ------------------------------------------------------------------------------------ 9. usage errors
@pytest.mark.parametrize("args", [["run"], ["run", "mini", "--frobnicate"], ["validate"], ["run", "--chunk-px", "8", "mini"]],
                         ids=["run-no-argument", "unknown-option", "validate-no-argument", "chunk-px-too-small"])
def test_usage_errors(tmp_path: Path, args: list[str]) -> None:
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.output
    assert "Traceback" not in result.output
    assert "Usage:" in result.output
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------- 10. land cover not fetched yet
def test_rupununi_without_land_cover_and_without_mining(tmp_path: Path) -> None:
    """Rupununi's land cover comes from Earth Engine. With no mining indicator configured there is nothing the
    shipped data allow, so the run stops with one message naming the missing files and how they come.
    (With the mining indicator, the run goes on with the mining footprint: tests/integration/test_offline_mining.py.)"""
    config = yaml.safe_load((REPO / "configs/landscapes/rupununi.yaml").read_text(encoding="utf-8"))
    config["indicators"].pop("mining")
    for key in ("boundary",):
        config[key] = str(REPO / config[key])
    config["landcover"]["path"] = str(REPO / config["landcover"]["path"])
    for layer in config["zones"].values():
        layer["path"] = str(REPO / layer["path"])
    config["rivers"]["path"] = str(REPO / config["rivers"]["path"])
    for layer in config["mining_layers"]:
        layer["path"] = str(REPO / layer["path"])
    folder = tmp_path / "configs" / "landscapes"
    folder.mkdir(parents=True)
    (folder / "rupununi.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    missing = [REPO / "data/raw/rupununi" / f"landcover_{y}.tif" for y in config["years"]]
    if any(p.exists() for p in missing):
        pytest.skip("rupununi land cover has been fetched on this machine")
    result = cli("run", "rupununi", "--root", tmp_path, "--no-progress", cwd=tmp_path)
    assert_data_error(result, "land cover for landscape 'rupununi' is not on disk",
                      *(str(p) for p in missing), "make fetch landscape=rupununi")
    assert not (tmp_path / "data" / "processed" / "rupununi").exists()
    assert not list((tmp_path / "data" / "processed").glob(".rupununi.staging-*")) if (tmp_path / "data/processed").exists() else True


# ------------------------------------------------------------------------- 11. zone id_field missing
@pytest.mark.parametrize("command", ["run", "validate"])
def test_zone_id_field_missing(case: Path, out: Path, command: str) -> None:
    data = yaml.safe_load(case.read_text(encoding="utf-8"))
    data["zones"]["mining_titles"]["id_field"] = "PROCESS_NUMBER"
    case.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    args = [command, case] + (["--out", out, "--no-progress"] if command == "run" else [])
    result = cli(*args, cwd=case.parent)
    assert_data_error(result, str(case.parent / "zones.gpkg"), "zones.mining_titles.id_field 'PROCESS_NUMBER'",
                      "is not a field of the layer", "fields: PROCESSO, FASE, SUBS")
    assert_nothing_written(out)


# ------------------------------------------------------ extra: messages must be printed verbatim
@pytest.mark.parametrize("kind", ["zone-name-pattern", "closing-tag-in-argument"])
def test_error_text_printed_verbatim(case: Path, kind: str) -> None:
    """Regression: messages were printed through rich markup, so '[a-z0-9_-]+' vanished from the zone-name
    message and a value holding '[/x]' raised MarkupError (a traceback) instead of the one-line error."""
    if kind == "zone-name-pattern":
        data = yaml.safe_load(case.read_text(encoding="utf-8"))
        data["zones"]["Bad_Zone"] = data["zones"].pop("municipalities")
        case.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        result = cli("validate", case, cwd=case.parent)
        assert_data_error(result, str(case), "zones", "'Bad_Zone'", "must match [a-z0-9_-]+")
    else:
        result = cli("validate", "[/x]", cwd=case.parent)
        assert_data_error(result, "landscape name '[/x]' may only contain a-z, 0-9, _ and - (no paths)")
