"""End-to-end runs on real data: the golden mini landscape, chunk-size invariance, output contract, lourenco."""

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio

from pipeline.indicators.base import COLUMNS
from pipeline.runner import run

MINI = Path("tests/data/mini/mini.yaml")
GOLDEN = Path("tests/golden/mini")


@pytest.fixture(scope="module")
def mini_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mini") / "out"
    return run(MINI, out_dir=out), out


def test_golden_tables(mini_run):
    """`make golden` regenerates the reference after a reviewed change."""
    _, out = mini_run
    golden = sorted(GOLDEN.glob("*.csv"))
    assert [p.name for p in golden] == ["connectivity.csv", "conversion.csv", "degradation.csv", "mining.csv"]
    for path in golden:
        got = pd.read_csv(out / path.name, encoding="utf-8-sig")
        want = pd.read_csv(path, encoding="utf-8-sig")
        pd.testing.assert_frame_equal(got, want, rtol=1e-9)


def test_output_files_and_contract(mini_run):
    result, out = mini_run
    names = sorted(p.name for p in out.iterdir())
    assert names == ["connectivity.csv", "connectivity.gpkg", "conversion.csv", "conversion.gpkg", "degradation.csv",
                     "degradation.gpkg", "landcover_1985.tif",
                     "landcover_2000.tif", "landcover_2022.tif", "manifest.json", "mining.csv", "mining.gpkg",
                     "trends.csv"]
    table = pd.read_csv(out / "conversion.csv", encoding="utf-8-sig")
    assert tuple(table.columns) == COLUMNS
    assert (out / "conversion.csv").read_bytes()[:3] == b"\xef\xbb\xbf"  # Excel reads UTF-8 with the BOM
    assert set(table["zone_layer"]) == {"landscape", "municipalities", "mining_titles"}
    layers = dict(pyogrio.list_layers(out / "conversion.gpkg"))
    assert layers == {"zones": "MultiPolygon", "conversion_patches": "MultiPolygon"}
    zones = gpd.read_file(out / "conversion.gpkg", layer="zones")
    assert zones.crs == result.prepared.grid.crs
    land = zones[zones["zone_layer"] == "landscape"].iloc[0]
    tab = table[(table.zone_layer == "landscape") & (table.metric == "natural_extent_ha")
                & (table.ecosystem == "all_natural") & (table.year == 2022)]
    assert land["natural_extent_ha_2022"] == pytest.approx(tab["value"].iloc[0])
    patches = gpd.read_file(out / "conversion.gpkg", layer="conversion_patches")
    assert (patches["area_ha"] >= 0.5).all()
    assert np.allclose(patches.geometry.area / 10_000, patches["area_ha"])


def test_aligned_rasters_are_cogs_on_the_grid(mini_run):
    result, out = mini_run
    grid = result.prepared.grid
    with rasterio.open(out / "landcover_2022.tif") as src:
        assert src.crs == grid.crs.to_wkt() or src.crs.to_wkt() == rasterio.crs.CRS.from_wkt(grid.crs.to_wkt()).to_wkt()
        assert src.transform == grid.transform and src.shape == grid.shape
        assert src.profile["tiled"] and src.nodata == 0
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        data = src.read(1)
    inside = int((data != 0).sum())
    assert inside * grid.pixel_area_ha == pytest.approx(result.manifest["area_check"]["grid_inside_ha"])
    assert set(np.unique(data)) <= {0, 3, 4, 9, 11, 12, 15, 27, 30, 33}


def test_manifest(mini_run):
    _, out = mini_run
    manifest = json.loads((out / "manifest.json").read_text())
    roles = {i["role"] for i in manifest["inputs"]}
    assert {"config", "legend", "boundary", "landcover_1985", "zones.municipalities", "zones.mining_titles"} <= roles
    landcover = next(i for i in manifest["inputs"] if i["role"] == "landcover_1985")
    import hashlib
    assert landcover["sha256"] == hashlib.sha256(Path(landcover["path"]).read_bytes()).hexdigest()
    assert manifest["config"]["name"] == "mini" and manifest["grid"]["resolution_m"] == 30
    assert manifest["area_check"]["passed"] and abs(manifest["area_check"]["difference_pct"]) < 0.1
    assert {"rasterio", "dask", "gdal"} <= set(manifest["packages"])
    assert {o["file"] for o in manifest["outputs"]} >= {"conversion.csv", "conversion.gpkg"}


@pytest.mark.parametrize("chunk_px", [64, 37])
def test_same_numbers_at_any_chunk_size(mini_run, tmp_path, chunk_px):
    """64 cuts conversion patches; 37 does not divide the 148 x 147 grid."""
    _, out = mini_run
    other = run(MINI, out_dir=tmp_path / "out", chunk_px=chunk_px)
    assert other.prepared.grid.chunks[0][0] == chunk_px
    for name in ("conversion.csv", "connectivity.csv", "mining.csv", "degradation.csv"):
        assert (tmp_path / "out" / name).read_bytes() == (out / name).read_bytes(), name
    for year in (1985, 2022):
        with rasterio.open(out / f"landcover_{year}.tif") as a, rasterio.open(tmp_path / "out" / f"landcover_{year}.tif") as b:
            assert np.array_equal(a.read(1), b.read(1))
    pa = gpd.read_file(out / "conversion.gpkg", layer="conversion_patches")
    pb = gpd.read_file(tmp_path / "out" / "conversion.gpkg", layer="conversion_patches")
    assert len(pa) == len(pb)
    assert pa.geometry.normalize().geom_equals_exact(pb.geometry.normalize(), 1e-6).all()


@pytest.mark.xdist_group("lourenco")
def test_lourenco_end_to_end(lourenco_run, tmp_path):
    """The default landscape: area self-check against the boundary's geodesic area, identity of the parts,
    the same numbers at two chunk sizes (one cuts patches), and the mining class showing up as class_to."""
    a, out_a = lourenco_run
    run(Path("configs/landscapes/lourenco.yaml"), out_dir=tmp_path / "b", chunk_px=500, sensitivity_reruns=False)
    for name in ("conversion.csv", "connectivity.csv", "mining.csv", "degradation.csv", "trends.csv"):
        with_range = pd.read_csv(out_a / name, encoding="utf-8-sig")
        without = pd.read_csv(tmp_path / "b" / name, encoding="utf-8-sig")
        if name == "trends.csv":  # the stable band of run a includes the sensitivity range
            with_range, without = with_range.drop(columns=["stable_band", "direction"]), without.drop(columns=["stable_band", "direction"])
        elif "value_lo" in with_range.columns:  # conversion has no parameter the reruns vary: no range columns
            assert (with_range["value_lo"] <= with_range["value"] + 1e-9).all() and (with_range["value"] <= with_range["value_hi"] + 1e-9).all()
            with_range = with_range.drop(columns=["value_lo", "value_hi"])
        pd.testing.assert_frame_equal(with_range, without, check_exact=True, obj=name)
    check = a.manifest["area_check"]
    assert check["boundary_geodesic_ha"] == pytest.approx(125_736, abs=1)
    assert abs(check["difference_pct"]) < 0.01
    t = a.results["conversion"].table
    land = t[t.zone_layer == "landscape"]

    def v(metric, **kw):
        rows = land[land.metric == metric]
        for k, val in kw.items():
            rows = rows[rows[k].isna()] if val is None else rows[rows[k] == val]
        return rows["value"].sum()

    for ya, yb in [(1985, 2000), (2020, 2022), (1985, 2022)]:
        p = {"year_from": ya, "year_to": yb}
        parts = sum(v(m, **p) for m in ("stable_natural_ha", "stable_non_natural_ha", "unmapped_ha"))
        parts += sum(v(m, ecosystem="all_natural", class_to=None, class_from=None, **p) for m in ("converted_ha", "gain_ha"))
        assert parts == pytest.approx(check["grid_inside_ha"], rel=1e-12)
    mining_1985_2022 = v("converted_ha", ecosystem="all_natural", class_to="Mining", year_from=1985, year_to=2022)
    assert 500 < mining_1985_2022 < 2000  # MapBiomas mining 871 ha (1985) -> 1,806 ha (2022), PROVENANCE 2.1
    municipalities = set(t[t.zone_layer == "municipalities"]["zone"])
    assert municipalities == {"Calçoene", "Oiapoque"}
