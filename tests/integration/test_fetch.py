"""The fetch stage end to end, offline: earthengine-api runs in its test mode and a fake transport answers
its HTTP requests (asset metadata, computePixels, value:compute) with real data: GeoTIFF tiles cut by GDAL
from the shipped MapBiomas raster of tests/data/mini, reprojected to the requested grid window. Checks
tiling, retry on a quota error, resume after a crash, the mosaic and the final file, the manifest; then the
pipeline runs on what was fetched, and the engine-side summaries agree with the local conversion numbers."""

import json
import re
import subprocess
import sys
from pathlib import Path

import httplib2
import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml
from affine import Affine
from pyproj import CRS
from rasterio.features import geometry_mask
from rasterio.io import MemoryFile
from rasterio.warp import Resampling, reproject

ee = pytest.importorskip("ee")
from ee import apitestcase  # noqa: E402

from pipeline import ee_summaries  # noqa: E402
from pipeline import fetch as fetch_stage  # noqa: E402
from pipeline.config import load_landscape  # noqa: E402
from pipeline.errors import ConfigError  # noqa: E402
from pipeline.sources import local  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MINI = REPO / "tests" / "data" / "mini"
SOURCE = MINI / "landcover_1985_2000_2022.tif"
BAND_OF_YEAR = {1985: 1, 2000: 2, 2022: 3}
ASSET = "projects/mapbiomas-test/assets/lulc/mapbiomas_c8_mini"
NAME = "minifetch"


class Crash(BaseException):
    """A simulated kill of the fetch process (not an Exception: nothing may catch it)."""


def cut(year: int, crs: CRS, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """The source band of ``year`` warped by GDAL (nearest) onto a grid window; 0 beyond the source."""
    out = np.zeros(shape, np.uint8)
    with rasterio.open(SOURCE) as src:
        reproject(src.read(BAND_OF_YEAR[year]), out, src_transform=src.transform, src_crs=src.crs, src_nodata=None,
                  dst_transform=transform, dst_crs=crs, dst_nodata=None, resampling=Resampling.nearest)
    return out


class FakeEarthEngine:
    """Stands in for earthengine.googleapis.com at the HTTP layer (httplib2.Http.request's signature)."""

    def __init__(self, *, quota_errors_at=(), crash_at=None, root=None):
        self.pixels_calls = 0
        self.tiles = []  # (year, translateX, translateY, width, height) of every tile served
        self.bodies = []
        self.quota_errors_at, self.crash_at, self.root = set(quota_errors_at), crash_at, root

    def request(self, uri, method="GET", body=None, headers=None, redirections=5, connection_type=None):
        if "/assets/" in uri:
            name = re.sub(r"^.*?/v1(alpha|beta)?/", "", uri.split("?")[0])  # projects/<project>/assets/<path>
            name = re.sub(r"^projects/earthengine-(legacy|public)/assets/", "", name)
            if name != ASSET:
                return self._error(404, f"Asset '{name}' does not exist or doesn't allow access.")
            return self._json({"type": "IMAGE", "name": name, "id": ASSET,
                               "updateTime": "2023-08-01T12:00:00Z", "properties": {"collection": 8}})
        body = json.loads(body)
        self.bodies.append(body)
        if "computePixels" in uri:
            self.pixels_calls += 1
            if self.pixels_calls == self.crash_at:
                raise Crash
            if self.pixels_calls in self.quota_errors_at:
                return self._error(429, "Too many concurrent aggregations.")
            return self._tile(body)
        if "value:compute" in uri:
            return self._json({"result": self._areas(body)})
        return self._error(400, f"unexpected request {uri}")

    def _tile(self, body):
        year = int(re.search(r"classification_(\d{4})", json.dumps(body["expression"])).group(1))
        grid = body["grid"]
        crs = CRS.from_wkt(grid["crsWkt"]) if "crsWkt" in grid else CRS.from_user_input(grid["crsCode"])
        a = grid["affineTransform"]
        transform = Affine(a["scaleX"], a["shearX"], a["translateX"], a["shearY"], a["scaleY"], a["translateY"])
        shape = (grid["dimensions"]["height"], grid["dimensions"]["width"])
        self.tiles.append((year, a["translateX"], a["translateY"], shape[1], shape[0]))
        with MemoryFile() as memfile:
            with memfile.open(driver="GTiff", width=shape[1], height=shape[0], count=1, dtype="uint8",
                              crs=crs.to_wkt(), transform=transform) as dst:
                dst.write(cut(year, crs, transform, shape), 1)
            data = memfile.read()
        return httplib2.Response({"status": 200, "content-type": "image/tiff"}), data

    def _areas(self, body):
        """What reduceRegions would answer for the landscape zone: pixel-centre areas of each (from, to) pair,
        computed from the fetched rasters (pixelArea on the equal-area grid = |a e|)."""
        text = json.dumps(body["expression"])
        ya, yb = sorted({int(y) for y in re.findall(r"classification_(\d{4})", text)})
        assert "Image.pixelArea" in text and "reduceRegions" in text and "Reducer.group" in text
        raw = self.root / "data" / "raw" / NAME
        with rasterio.open(raw / f"landcover_{ya}.tif") as a, rasterio.open(raw / f"landcover_{yb}.tif") as b:
            boundary, crs, _ = local.read_boundary(raw / "boundary.gpkg")
            geom = boundary if crs.equals(CRS(a.crs.to_wkt())) else None
            if geom is None:
                import geopandas as gpd
                geom = gpd.GeoSeries([boundary], crs=crs).to_crs(a.crs.to_wkt()).iloc[0]
            inside = geometry_mask([geom], out_shape=a.shape, transform=a.transform, invert=True)
            pair = a.read(1).astype(np.int64) * 256 + b.read(1)
            counts = np.bincount(pair[inside], minlength=256 * 256)
            pixel_ha = abs(a.transform.a * a.transform.e) / 10_000
        groups = [{"pair": int(p), "sum": float(counts[p] * pixel_ha)} for p in np.flatnonzero(counts)]
        return {"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": None, "properties": {"zone_layer": "landscape", "zone": NAME, "groups": groups}}]}

    @staticmethod
    def _json(data):
        return httplib2.Response({"status": 200, "content-type": "application/json"}), json.dumps(data).encode()

    @staticmethod
    def _error(status, message):
        return httplib2.Response({"status": status, "content-type": "application/json"}), json.dumps(
            {"error": {"code": status, "message": message, "status": "ERROR"}}).encode()


@pytest.fixture
def ee_api():
    case = apitestcase.ApiTestCase()
    case.setUp()
    ee.data.computeValue = case.old_compute_value  # the test mode stubs it; the fake transport answers instead
    ee.data.setMaxRetries(0)
    yield
    case.tearDown()


@pytest.fixture
def project(tmp_path):
    """A project folder with the mini landscape as an Earth Engine landscape (land cover not on disk)."""
    raw = tmp_path / "data" / "raw" / NAME
    raw.mkdir(parents=True)
    for name in ("boundary.gpkg", "zones.gpkg", "rivers.gpkg", "amw.gpkg"):
        (raw / name).write_bytes((MINI / name).read_bytes())
    config = yaml.safe_load((MINI / "mini.yaml").read_text())
    config["name"] = NAME
    config["boundary"] = f"data/raw/{NAME}/boundary.gpkg"
    config["landcover"] = {"legend": "mapbiomas_c8", "source": "earthengine", "path": f"data/raw/{NAME}/landcover_{{year}}.tif",
                           "fetch": {"product": "mapbiomas_c8_mini", "project": "test-project", "adjacency_m": 300,
                                     "tile_px": 64, "max_retries": 3}}
    for zone in config["zones"].values():
        zone["path"] = f"data/raw/{NAME}/{zone['path']}"
    config["indicators"]["mining"]["mining_rights"]["path"] = f"data/raw/{NAME}/zones.gpkg"
    config["rivers"]["path"] = f"data/raw/{NAME}/rivers.gpkg"
    config["mining_layers"][0]["path"] = f"data/raw/{NAME}/amw.gpkg"
    (tmp_path / "configs" / "landscapes").mkdir(parents=True)
    (tmp_path / "configs" / "landscapes" / f"{NAME}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (tmp_path / "configs" / "products").mkdir()
    product = {"product": "MapBiomas Brazil C8 (test asset)", "legend": "mapbiomas_c8", "recipe": "band_per_year",
               "asset": ASSET, "band": "classification_{year}", "first_year": 1985, "last_year": 2022,
               "native_resolution_m": 30, "dtype": "uint8", "nodata_value": 0}
    (tmp_path / "configs" / "products" / "mapbiomas_c8_mini.yaml").write_text(yaml.safe_dump(product))
    return tmp_path


def test_fetch_tiles_retry_resume_mosaic_and_manifest(ee_api, project):
    config_path = project / "configs" / "landscapes" / f"{NAME}.yaml"
    raw = project / "data" / "raw" / NAME

    crashing = FakeEarthEngine(crash_at=5)
    with apitestcase.UsingCloudApi(mock_http=crashing), pytest.raises(Crash):
        fetch_stage.fetch(config_path, progress=False, initialize=False, sleep=lambda s: None)
    tiles_dir = raw / ".fetch" / "1985" / "landcover_1985"
    assert len(list(tiles_dir.glob("*.tif"))) == 4  # 4 tiles written before the crash, none half-written
    assert not list(tiles_dir.glob("*.part")) and not (raw / "landcover_1985.tif").exists()

    sleeps = []
    fake = FakeEarthEngine(quota_errors_at={1})
    with apitestcase.UsingCloudApi(mock_http=fake):
        manifest = fetch_stage.fetch(config_path, progress=False, initialize=False, sleep=sleeps.append)
    assert len(sleeps) == 1 and 2 <= sleeps[0] < 4  # one back-off after the simulated quota error
    first = {t[1:] for t in crashing.tiles if t[0] == 1985}
    again = {t[1:] for t in fake.tiles if t[0] == 1985}
    assert len(first) == 4 and not first & again  # resumed: tiles on disk were not requested again

    config = load_landscape(config_path)
    grid, _ = fetch_stage.landscape_grid(config, config_path, project, fetch_stage.resolve_product(
        "mapbiomas_c8_mini", "mapbiomas_c8", project, config_path)[1])
    ring = 10  # 300 m at 30 m
    for year in (1985, 2000, 2022):
        with rasterio.open(raw / f"landcover_{year}.tif") as src:
            assert src.profile["tiled"] and src.compression.name == "deflate" and src.nodata == 0
            assert src.transform == grid.transform @ Affine.translation(-ring, -ring)
            assert src.shape == (grid.shape[0] + 2 * ring, grid.shape[1] + 2 * ring)
            assert CRS(src.crs.to_wkt()).equals(grid.crs)
            data = src.read(1)
        # the mosaic of 9 tiles equals one GDAL warp of the whole extent
        expected = cut(year, grid.crs, src.transform, src.shape)
        assert np.array_equal(data, expected), f"{year}: mosaic differs from a one-shot warp"
        assert set(np.unique(data)) <= {0, 3, 4, 9, 11, 12, 15, 27, 30, 33}
    assert not (raw / ".fetch").exists()  # tiles removed once every year is complete

    layer = manifest["layers"]["landcover"]
    assert layer["assets"][0]["id"] == ASSET and layer["assets"][0]["update_time"] == "2023-08-01T12:00:00Z"
    assert layer["assets"][0]["properties"] == {"collection": 8}
    record = layer["years"]["1985"]
    assert record["tiles"] == 9 and record["tiles_resumed"] == 4 and record["tiles_fetched"] == 5
    assert record["retries"] == 1 and len(record["tile_sha256"]) == 9
    assert layer["years"]["2000"]["tiles_fetched"] == 9
    assert record["sha256"] == local_sha256(raw / "landcover_1985.tif")
    on_disk = json.loads((raw / fetch_stage.MANIFEST_NAME).read_text())
    assert on_disk["project"] == "test-project" and on_disk["adjacency_m"] == 300 and on_disk["fetched_utc"]

    quiet = FakeEarthEngine()
    with apitestcase.UsingCloudApi(mock_http=quiet):
        fetch_stage.fetch(config_path, progress=False, initialize=False)
    assert quiet.pixels_calls == 0  # nothing missing: nothing requested


def local_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pipeline_runs_on_fetched_land_cover_and_summaries_agree(ee_api, project):
    from pipeline.runner import run

    config_path = project / "configs" / "landscapes" / f"{NAME}.yaml"
    with apitestcase.UsingCloudApi(mock_http=FakeEarthEngine()):
        fetch_stage.fetch(config_path, progress=False, initialize=False)
    result = run(config_path, out_dir=project / "out")
    manifest = json.loads((project / "out" / "manifest.json").read_text())
    assert manifest["fetch"]["layers"]["landcover"]["assets"][0]["id"] == ASSET
    # alignment of a fetched file is a window read: the run's raster equals the fetched pixels inside the boundary
    raw = project / "data" / "raw" / NAME
    for year in (1985, 2022):
        with rasterio.open(project / "out" / f"landcover_{year}.tif") as aligned, \
                rasterio.open(raw / f"landcover_{year}.tif") as fetched:
            ring = round((aligned.transform.c - fetched.transform.c) / aligned.transform.a)
            window = fetched.read(1)[ring:ring + aligned.height, ring:ring + aligned.width]
            out = aligned.read(1)
            inside = out != aligned.nodata
            assert inside.sum() > 10_000
            fetched_codes = np.where(window == 0, 27, window)  # file nodata -> the legend's unmapped code
            assert np.array_equal(out[inside], fetched_codes[inside])
    conversion = result.results["conversion"].table

    # engine-side summaries (fake reduceRegions computed from the same rasters) give the local numbers
    with apitestcase.UsingCloudApi(mock_http=(fake := FakeEarthEngine(root=project))):
        path = ee_summaries.summaries(config_path, initialize=False, out=project / "ee.csv")
    request = json.dumps(fake.bodies[0]["expression"])
    assert "Image.reduceRegions" in request or "reduceRegions" in request
    assert "municipalities" in request and "mining_titles" in request  # every zone layer is sent
    ee_table = pd.read_csv(path, encoding="utf-8-sig")
    for ya, yb in load_landscape(config_path).periods():
        local_value = conversion[(conversion.metric == "converted_ha") & (conversion.zone_layer == "landscape")
                                 & (conversion.ecosystem == "all_natural") & conversion.class_to.isna()
                                 & (conversion.year_from == ya) & (conversion.year_to == yb)]["value"].iloc[0]
        ee_value = ee_table[(ee_table.metric == "converted_ha") & (ee_table.ecosystem == "all_natural")
                            & (ee_table.year_from == ya) & (ee_table.year_to == yb)]["value"].iloc[0]
        assert local_value > 10 and ee_value == pytest.approx(local_value, rel=1e-9), (ya, yb)
    for year in (1985, 2000, 2022):
        local_value = conversion[(conversion.metric == "natural_extent_ha") & (conversion.zone_layer == "landscape")
                                 & (conversion.ecosystem == "forest") & (conversion.year == year)]["value"].iloc[0]
        ee_value = ee_table[(ee_table.metric == "natural_extent_ha") & (ee_table.ecosystem == "forest")
                            & (ee_table.year == year)]["value"].iloc[0]
        assert ee_value == pytest.approx(local_value, rel=1e-9), year


def test_wrong_asset_id_stops_before_any_download(ee_api, project):
    config_path = project / "configs" / "landscapes" / f"{NAME}.yaml"
    product = project / "configs" / "products" / "mapbiomas_c8_mini.yaml"
    product.write_text(product.read_text().replace(ASSET, ASSET + "_typo"))
    fake = FakeEarthEngine()
    with apitestcase.UsingCloudApi(mock_http=fake), pytest.raises(Exception) as info:
        fetch_stage.fetch(config_path, progress=False, initialize=False)
    assert type(info.value).__name__ == "AssetError"
    assert f"asset {ASSET}_typo" in str(info.value) and "does not exist" in str(info.value)
    assert fake.pixels_calls == 0


def test_extra_layer_and_years_outside_a_product(project):
    """landcover.fetch.layers adds a product on the same grid (JRC TMF for the degradation rule `external`);
    a configured year the product does not map is a config error that names it."""
    config_path = project / "configs" / "landscapes" / f"{NAME}.yaml"
    (project / "configs" / "products" / "jrc_tmf_annual_change.yaml").write_bytes(
        (REPO / "configs" / "products" / "jrc_tmf_annual_change.yaml").read_bytes())
    config = yaml.safe_load(config_path.read_text())
    config["landcover"]["fetch"]["layers"] = [{"product": "jrc_tmf_annual_change", "path": "data/raw/x/tmf_{year}.tif"}]
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(ConfigError, match=r"years \[1985\] are not in JRC Tropical Moist Forest"):
        fetch_stage.fetch_layers(load_landscape(config_path), project, config_path)
    config["years"] = [2000, 2022]
    config["cutoff_year"] = None
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    layers = fetch_stage.fetch_layers(load_landscape(config_path), project, config_path)
    assert [(lay.role, lay.name) for lay in layers] == [("landcover", "mapbiomas_c8_mini"),
                                                        ("layers[0]", "jrc_tmf_annual_change")]
    assert layers[1].path(2000) == project / "data/raw/x/tmf_2000.tif"


def test_fetch_if_missing_never_stops_a_run(project, monkeypatch):
    """Before `make run`: credentials present but Earth Engine unreachable -> a note, not an error."""
    config_path = project / "configs" / "landscapes" / f"{NAME}.yaml"
    monkeypatch.setattr(fetch_stage.gee, "credentials_available", lambda env=None: "stored credentials")

    def unreachable(*args, **kwargs):
        raise fetch_stage.gee.CredentialsError("Earth Engine did not accept the credentials (TransportError)")

    monkeypatch.setattr(fetch_stage, "fetch", unreachable)
    note = fetch_stage.fetch_if_missing(config_path, progress=False)
    assert "did not complete" in note and "TransportError" in note


def test_cli_without_credentials(project, tmp_path):
    """`fetch` fails with one line naming what to run; `fetch --if-missing` (make run) warns and succeeds."""
    env = {"HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "COLUMNS": "250"}
    args = [sys.executable, "-m", "pipeline", "fetch", NAME, "--root", str(project), "--no-progress"]
    failed = subprocess.run(args, cwd=project, capture_output=True, text=True, env=env)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "CredentialsError" in failed.stderr and "earthengine authenticate" in failed.stderr
    warned = subprocess.run([*args, "--if-missing"], cwd=project, capture_output=True, text=True, env=env)
    assert warned.returncode == 0, warned.stderr
    assert "no Earth Engine credentials" in warned.stderr and f"make fetch landscape={NAME}" in warned.stderr
