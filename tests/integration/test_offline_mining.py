"""Mining footprint without land cover (Rupununi before the Earth Engine fetch), on real Amazon Mining Watch
polygons around the Marudi Mountain garimpos of Region 9, Guyana."""

import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import yaml

REPO = Path(__file__).resolve().parents[2]
AMW = REPO / "data/raw/rupununi/amw_mining_guyana_2018_2025q3.geojson"
YEARS = [2000, 2018, 2020, 2023]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("marudi")
    region = gpd.read_file(REPO / "data/raw/rupununi/rupununi_boundary.geojson")
    centre = gpd.GeoSeries([shapely.Point(-59.16, 2.23)], crs=4326).to_crs(32621).buffer(12_000).to_crs(4326)
    boundary = gpd.GeoDataFrame({"name": ["marudi"]}, geometry=[centre.iloc[0].intersection(region.union_all())], crs=4326)
    boundary.to_file(root / "boundary.gpkg")
    config = yaml.safe_load((REPO / "configs/landscapes/rupununi.yaml").read_text())
    config.update(name="marudi", title="Marudi Mountain, Region 9", boundary=str(root / "boundary.gpkg"), years=YEARS,
                  baseline_year=None, cutoff_year=None)
    config["landcover"]["path"] = str(root / "landcover_{year}.tif")
    config["zones"] = {}
    config["rivers"]["path"] = str(REPO / config["rivers"]["path"])
    config["mining_layers"][0]["path"] = str(AMW)
    config["grid"]["chunk_px"] = 256
    folder = root / "configs" / "landscapes"
    folder.mkdir(parents=True)
    (folder / "marudi.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "pipeline", "run", "marudi", "--root", str(root), "--no-progress"],
                            cwd=root, capture_output=True, text=True, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    return root, result


def test_runs_with_a_warning_that_says_what_is_missing(run_dir):
    root, result = run_dir
    assert result.returncode == 0, result.stderr
    assert "land cover for landscape 'marudi' is not on disk" in result.stderr
    assert "make fetch landscape=marudi" in result.stderr
    out = root / "data/processed/marudi"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "mining.csv", "mining.gpkg", "trends.csv"]
    manifest = json.loads((out / "manifest.json").read_text())
    missing = {item["indicator"] for item in manifest["not_computed"]}
    assert missing == {"conversion", "connectivity", "degradation", "mining"}  # mining: only its land-cover metrics


def test_mined_area_equals_amw_attribute_shared_by_overlap(run_dir):
    """Our mined_area_ha_source_amw against an independent computation in another equal-area CRS."""
    root, _ = run_dir
    table = pd.read_csv(root / "data/processed/marudi/mining.csv", encoding="utf-8-sig")
    boundary = gpd.read_file(root / "boundary.gpkg").to_crs(6933).union_all()
    amw = gpd.read_file(AMW).to_crs(6933)
    amw = amw[amw.intersects(boundary)]
    share = amw.intersection(boundary).area / amw.area
    year = amw["year"] // 100
    for y in (2018, 2020, 2023):
        expected = float((amw["Mined area (ha)"] * share)[year <= y].sum())
        got = table[(table.metric == "mined_area_ha_source_amw") & (table.year == y)]["value"].iloc[0]
        assert got == pytest.approx(expected, rel=1e-6)
    assert 2000 not in set(table[table.metric == "mining_ha"]["year"])  # AMW starts in 2018: 2000 not observed


def test_detection_footprint_and_sites(run_dir):
    root, _ = run_dir
    table = pd.read_csv(root / "data/processed/marudi/mining.csv", encoding="utf-8-sig")
    sites = gpd.read_file(root / "data/processed/marudi/mining.gpkg", layer="sites")
    boundary = gpd.read_file(root / "boundary.gpkg").to_crs(sites.crs).union_all()
    amw = gpd.read_file(AMW).to_crs(sites.crs)
    amw = amw[(amw["year"] // 100 <= 2020) & amw.intersects(boundary)]
    polygon_ha = shapely.union_all(amw.intersection(boundary).to_numpy()).area / 10_000
    got = table[(table.metric == "mining_ha") & (table.year == 2020)]["value"].iloc[0]
    assert got == pytest.approx(polygon_ha, rel=0.02)  # rasterised at 30 m, pixel-centre rule
    s2020 = sites[sites.year == 2020]
    assert np.isclose(s2020["area_ha"].sum(), got)
    assert len(s2020) == table[(table.metric == "mining_sites") & (table.year == 2020)]["value"].iloc[0]
    assert s2020["was_natural"].isna().all()


def test_mining_raster_mask_source(tmp_path):
    """A mask raster per year (MapBiomas class 30 of the mini landscape, written as 0/1 GeoTIFFs) is aligned like
    land cover: it agrees pixel for pixel with the land-cover source; a year without a file is not observed."""
    import rasterio

    from pipeline.runner import run

    mini = REPO / "tests/data/mini"
    for f in mini.iterdir():
        if f.is_file():
            (tmp_path / f.name).write_bytes(f.read_bytes())
    with rasterio.open(mini / "landcover_1985_2000_2022.tif") as src:
        profile = src.profile | {"count": 1, "nodata": None}
        for band, year in ((2, 2000), (3, 2022)):
            with rasterio.open(tmp_path / f"mask_{year}.tif", "w", **profile) as dst:
                dst.write((src.read(band) == 30).astype("uint8"), 1)
    config = yaml.safe_load((tmp_path / "mini.yaml").read_text())
    config["mining_rasters"] = [{"name": "mask", "path": "mask_{year}.tif"}]
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(config))
    result = run(tmp_path / "mini.yaml", out_dir=tmp_path / "out")
    t = result.results["mining"].table
    land = t[(t.zone_layer == "landscape") & t.year.notna()]
    values = land.pivot_table(index="metric", columns="year", values="value")
    assert 1985 not in values.loc["mining_ha_source_mask"].dropna().index
    for year in (2000, 2022):
        assert values.loc["mining_ha_source_mask", year] == values.loc["mining_ha_source_landcover", year] > 0
    assert "mining_in_all_sources_ha" in values.index  # three sources observed in 2022


def test_report_of_a_run_without_land_cover(run_dir):
    """The report has the mining section only, drawn without a land-cover background, and says why."""
    root, _ = run_dir
    result = subprocess.run([sys.executable, "-m", "pipeline", "report", "marudi", "--root", str(root)],
                            cwd=root, capture_output=True, text=True, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    report = root / "data/processed/marudi/report"
    assert sorted(p.name for p in report.iterdir()) == ["mining_chart.png", "mining_map.png", "report.html", "report.md"]
    text = (report / "report.html").read_text(encoding="utf-8")
    assert '<section id="mining">' in text and '<section id="conversion">' not in text
    assert "This run had no land cover" in text and "Earth Genome / Amazon Mining Watch" in text
