"""Earth Engine requests, built offline with earthengine-api's own test mode (ee.apitestcase: the library is
initialised from its shipped algorithms list, no network). Each product's request is serialised exactly as
the library would send it, and its content is checked: asset, bands, recipe, region, CRS and affine grid."""

import json
import subprocess
import sys
from pathlib import Path

import httplib2
import pytest
import shapely
from affine import Affine
from pyproj import CRS

from pipeline.config import ProductConfig, load_legend, load_product
from pipeline.ee_summaries import summary_rows
from pipeline.errors import LegendError, PipelineError
from pipeline.fetch import FetchTooLargeError, fetch_plan
from pipeline.grid import LandscapeGrid, laea_crs
from pipeline.sources import earthengine as gee

ee = pytest.importorskip("ee")
from ee import apitestcase  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PRODUCTS = REPO / "configs" / "products"
REGION = shapely.Polygon([(-59.2, 2.2), (-59.1, 2.2), (-59.1, 2.3), (-59.2, 2.3)])


@pytest.fixture
def ee_api():
    """earthengine-api initialised in its offline test mode; state restored afterwards."""
    case = apitestcase.ApiTestCase()
    case.setUp()
    ee.data.setMaxRetries(0)
    yield case
    case.tearDown()


def invocations(encoded) -> list[tuple[str, dict]]:
    """Every (functionName, arguments) in a serialised expression graph."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            call = node.get("functionInvocationValue")
            if call is not None:
                found.append((call["functionName"], call.get("arguments", {})))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(encoded)
    return found


def constants(encoded, function: str, argument: str) -> list:
    """Constant values of ``argument`` in every call to ``function``."""
    return [args[argument]["constantValue"] for name, args in invocations(encoded)
            if name == function and argument in args and "constantValue" in args[argument]]


def unmask_values(encoded) -> list:
    """The fill value of every Image.unmask (the library wraps numbers in Image.constant)."""
    return [args["value"]["functionInvocationValue"]["arguments"]["value"]["constantValue"]
            for name, args in invocations(encoded) if name == "Image.unmask"]


def build(product_name: str, year: int, *, resolution_m: float = 30.0, **kw):
    product = load_product(PRODUCTS / f"{product_name}.yaml")
    image = gee.product_image(product, year, region=gee.region_geometry(REGION), resolution_m=resolution_m, **kw)
    return product, ee.serializer.encode(image)


def test_no_ee_import_and_no_initialize_at_import():
    code = ("import sys, pipeline.cli, pipeline.fetch, pipeline.runner, pipeline.sources.earthengine; "
            "sys.exit(1 if 'ee' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_every_product_loads_and_its_legend_exists():
    names = sorted(p.stem for p in PRODUCTS.glob("*.yaml"))
    assert names == ["dynamic_world", "esa_worldcover", "hansen_gfc", "jrc_tmf_annual_change", "mapbiomas_amazonia_c6"]
    for name in names:
        product = load_product(PRODUCTS / f"{name}.yaml")
        legend = load_legend(REPO / "configs" / "legends" / f"{product.legend}.yaml")
        assert product.nodata_value not in legend.classes  # written as the GeoTIFF's nodata: read as unmapped


def test_product_recipe_fields_are_checked():
    with pytest.raises(ValueError, match=r"\{year\} template in band"):
        ProductConfig(product="x", legend="x", recipe="band_per_year", asset="a", band="classification", first_year=1,
                      last_year=2, native_resolution_m=30, nodata_value=0)
    with pytest.raises(ValueError, match="needs assets_by_year"):
        ProductConfig(product="x", legend="x", recipe="image_per_year", band="Map", first_year=1, last_year=2,
                      native_resolution_m=30, nodata_value=0)


def test_mapbiomas_request(ee_api):
    product, encoded = build("mapbiomas_amazonia_c6", 2020)
    assert constants(encoded, "Image.load", "id") == [
        "projects/mapbiomas-public/assets/amazon/lulc/collection6/mapbiomas_collection60_integration_v1"]
    assert constants(encoded, "Image.select", "bandSelectors") == [["classification_2020"]]
    assert constants(encoded, "Image.rename", "names") == [["landcover"]]
    assert "Image.reduceResolution" not in {n for n, _ in invocations(encoded)}  # same pixel size: nearest
    clip = [args for name, args in invocations(encoded) if name == "Image.clip"]
    assert len(clip) == 1
    text = json.dumps(encoded)
    assert "-59.2" in text and "2.3" in text  # the region's coordinates
    assert unmask_values(encoded) == [0]
    assert constants(encoded, "Image.unmask", "sameFootprint") == [False]
    assert "Image.toUint8" in {n for n, _ in invocations(encoded)}


def test_worldcover_request_per_year_and_mode_when_coarser(ee_api):
    _, encoded = build("esa_worldcover", 2021, resolution_m=30)
    assert constants(encoded, "ImageCollection.load", "id") == ["ESA/WorldCover/v200"]
    assert ["Map"] in constants(encoded, "Image.select", "bandSelectors") + constants(
        encoded, "ImageCollection.select", "selectors")  # select on the collection before mosaic
    names = [n for n, _ in invocations(encoded)]
    assert "ImageCollection.mosaic" in names and "Image.reduceResolution" in names  # 30 m grid from 10 m: mode
    reducers = [args["reducer"] for n, args in invocations(encoded) if n == "Image.reduceResolution"]
    assert "Reducer.mode" in json.dumps(reducers)
    _, encoded_2020 = build("esa_worldcover", 2020, resolution_m=10)
    assert constants(encoded_2020, "ImageCollection.load", "id") == ["ESA/WorldCover/v100"]
    assert "Image.reduceResolution" not in {n for n, _ in invocations(encoded_2020)}
    with pytest.raises(PipelineError, match="has no year 2019"):
        build("esa_worldcover", 2019)


def test_dynamic_world_annual_mode_request(ee_api):
    _, encoded = build("dynamic_world", 2022, resolution_m=10)
    assert constants(encoded, "ImageCollection.load", "id") == ["GOOGLE/DYNAMICWORLD/V1"]
    text = json.dumps(encoded)
    assert "2022-01-01" in text and "2023-01-01" in text  # the calendar year, end exclusive
    names = [n for n, _ in invocations(encoded)]
    assert "ImageCollection.reduce" in names and "Reducer.mode" in names
    assert "label" in text
    assert unmask_values(encoded) == [255]  # 0 is water in Dynamic World


def test_hansen_forest_in_year_request(ee_api):
    _, encoded = build("hansen_gfc", 2015, canopy_threshold_pct=25)
    assert set(constants(encoded, "Image.load", "id")) == {"UMD/hansen/global_forest_change_2023_v1_11"}
    bands = {b for sel in constants(encoded, "Image.select", "bandSelectors") for b in sel}
    assert bands == {"treecover2000", "lossyear", "datamask"}
    text = json.dumps(encoded)
    assert '"constantValue": 25' in text  # the configured canopy threshold, not the product's 30
    assert '"constantValue": 15' in text  # lost by 2015: lossyear 1..15
    _, default = build("hansen_gfc", 2000)
    assert '"constantValue": 30' in json.dumps(default)


def test_jrc_tmf_request(ee_api):
    _, encoded = build("jrc_tmf_annual_change", 2020)
    assert constants(encoded, "ImageCollection.load", "id") == ["projects/JRC/TMF/v1_2023/AnnualChanges"]
    assert "Dec2020" in json.dumps(encoded)
    assert "ImageCollection.mosaic" in {n for n, _ in invocations(encoded)}


def test_grid_request_keeps_the_landscape_grid_exactly():
    transform = Affine(30, 0, -123450.0, 0, -30, 98760.0)
    grid = gee.grid_request(laea_crs(-59.0, 2.8), transform, (2048, 1024))
    assert grid["dimensions"] == {"width": 1024, "height": 2048}
    assert grid["affineTransform"] == {"scaleX": 30, "shearX": 0, "translateX": -123450.0, "shearY": 0,
                                       "scaleY": -30, "translateY": 98760.0}
    assert "crsCode" not in grid and CRS.from_wkt(grid["crsWkt"]).equals(laea_crs(-59.0, 2.8))
    assert gee.grid_request(CRS.from_epsg(31976), transform, (1, 1))["crsCode"] == "EPSG:31976"


class FakeHttp:
    """Answers the Cloud API at the HTTP layer: computePixels bodies are recorded; assets are unknown."""

    def __init__(self):
        self.bodies = []

    def request(self, uri, method="GET", body=None, headers=None, redirections=5, connection_type=None):
        if "computePixels" in uri:
            self.bodies.append(json.loads(body))
            return httplib2.Response({"status": 429}), json.dumps(
                {"error": {"code": 429, "message": "Too many concurrent aggregations.", "status": "RESOURCE_EXHAUSTED"}}).encode()
        name = uri.split("/assets/")[1].split("?")[0]
        return httplib2.Response({"status": 404}), json.dumps(
            {"error": {"code": 404, "message": f"Asset '{name}' does not exist or doesn't allow access.",
                       "status": "NOT_FOUND"}}).encode()


def test_compute_pixels_body_as_sent(ee_api):
    http = FakeHttp()
    product, _ = build("mapbiomas_amazonia_c6", 2018)
    image = gee.product_image(product, 2018, region=gee.region_geometry(REGION), resolution_m=30)
    grid = gee.grid_request(laea_crs(-59.0, 2.8), Affine(30, 0, 0, 0, -30, 0), (64, 32))
    with apitestcase.UsingCloudApi(mock_http=http), pytest.raises(ee.ee_exception.EEException, match="concurrent"):
        gee.compute_pixels(image, grid)
    body = http.bodies[0]
    assert body["fileFormat"] == "GEO_TIFF" and body["grid"] == grid
    assert "classification_2018" in json.dumps(body["expression"])


def test_wrong_asset_id_is_one_clear_message(ee_api):
    with apitestcase.UsingCloudApi(mock_http=FakeHttp()), pytest.raises(gee.AssetError) as info:
        gee.asset_info("projects/mapbiomas-public/assets/amazon/lulc/collection6/typo")
    message = str(info.value)
    assert "asset projects/mapbiomas-public/assets/amazon/lulc/collection6/typo" in message
    assert "does not exist" in message and "configs/products/" in message


def test_retries_with_exponential_backoff_on_quota(ee_api):
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ee.ee_exception.EEException("Too many concurrent aggregations.")
        return b"tile"

    assert gee.with_retries(flaky, what="t", max_retries=5, sleep=sleeps.append) == b"tile"
    assert len(calls) == 3 and len(sleeps) == 2
    assert 2 <= sleeps[0] < 4 and 4 <= sleeps[1] < 6  # 2 s then 4 s, plus up to 2 s of jitter


def test_retry_gives_up_and_does_not_retry_user_errors(ee_api):
    def quota():
        raise ee.ee_exception.EEException("Quota exceeded")

    with pytest.raises(gee.EarthEngineError, match="still failing after 2 retries"):
        gee.with_retries(quota, what="t", max_retries=2, sleep=lambda s: None)
    calls = []

    def missing():
        calls.append(1)
        raise ee.ee_exception.EEException("Image.load: Image asset 'x' not found.")

    with pytest.raises(gee.AssetError):
        gee.with_retries(missing, what="t", max_retries=5, sleep=lambda s: None)
    assert len(calls) == 1
    assert gee.is_retryable(ConnectionResetError()) and gee.is_retryable(ee.ee_exception.EEException("Internal error."))
    assert not gee.is_retryable(ee.ee_exception.EEException("User memory limit exceeded."))
    offline = httplib2.ServerNotFoundError("Unable to find the server at earthengine.googleapis.com")
    assert not gee.is_retryable(offline) and "cannot reach Earth Engine" in str(gee.explain(offline, what="x"))
    band = ee.ee_exception.EEException("Image.select: Pattern 'classification_2030' did not match any bands.")
    assert isinstance(gee.explain(band, what="x"), gee.AssetError)
    refused = ee.ee_exception.EEException("Request had invalid authentication credentials.")
    assert isinstance(gee.explain(refused, what="x"), gee.CredentialsError)
    assert "earthengine authenticate" in str(gee.explain(refused, what="x"))


def test_missing_credentials_say_what_to_run(monkeypatch, tmp_path):
    monkeypatch.setattr(gee, "_stored_credentials_path", lambda: tmp_path / "credentials")
    assert gee.credentials_available({}) is None
    with pytest.raises(gee.CredentialsError, match="earthengine authenticate") as info:
        gee.initialize("my-project", env={})
    assert "GOOGLE_APPLICATION_CREDENTIALS" in str(info.value)
    with pytest.raises(gee.CredentialsError, match="no such file"):
        gee.initialize("p", env={"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "nokey.json")})
    bad = tmp_path / "key.json"
    bad.write_text(json.dumps({"type": "authorized_user"}))
    with pytest.raises(gee.CredentialsError, match="not a service-account JSON key"):
        gee.initialize("p", env={"GOOGLE_APPLICATION_CREDENTIALS": str(bad)})


def test_refused_credentials_and_missing_project(monkeypatch, tmp_path):
    stored = tmp_path / "credentials"
    stored.write_text("{}")
    monkeypatch.setattr(gee, "_stored_credentials_path", lambda: stored)
    assert "earthengine authenticate" in gee.credentials_available({})
    with pytest.raises(gee.CredentialsError, match="no Google Cloud project"):
        gee.initialize(None, env={})

    def refuse(**kw):
        raise ee.ee_exception.EEException("Please authorize access to your Earth Engine account.")

    monkeypatch.setattr(ee, "Initialize", refuse)
    with pytest.raises(gee.CredentialsError, match="did not accept the credentials for project 'p'.*earthengine authenticate"):
        gee.initialize(None, env={"EARTHENGINE_PROJECT": "p"})


def test_tile_plan_and_too_large_boundary():
    grid = LandscapeGrid(laea_crs(0, 0), Affine(30, 0, 0, 0, -30, 3000), (100, 100), 2048)
    boundary = shapely.box(0, 0, 3000, 3000).difference(shapely.box(0, 0, 1500, 1500))  # an L: one quadrant empty
    plan = fetch_plan(grid, boundary, adjacency_m=100, tile_px=60, max_tiles=100)
    assert plan.ring_px == 4 and plan.shape == (108, 108)
    assert plan.transform == Affine(30, 0, -120, 0, -30, 3120)  # same origin grid, widened by whole pixels
    assert len(plan.tiles) + plan.n_skipped == 4
    assert plan.region.contains(boundary.buffer(100))
    with pytest.raises(FetchTooLargeError, match=r"more than landcover.fetch.max_tiles 3.*--summaries-only"):
        fetch_plan(grid, boundary, adjacency_m=100, tile_px=60, max_tiles=3)
    with pytest.raises(gee.EarthEngineError, match="lower tile_px"):
        gee.check_tile_size(8192, "uint8")  # 64 MB > 48 MB
    gee.check_tile_size(4096, "uint16")


def test_summary_rows_by_hand():
    """Forest 3 (natural) -> pasture 15: 2 ha converted; 3 -> 3: 5 ha stable; 12 grassland -> 27 unobserved: 1 ha."""
    legend = load_legend(REPO / "configs" / "legends" / "mapbiomas_c8.yaml")
    transitions = [("landscape", "L", 3, 15, 2.0), ("landscape", "L", 3, 3, 5.0), ("landscape", "L", 12, 27, 1.0)]
    rows, extents = summary_rows(transitions, legend, 2000, 2020, source="s", legend_path=Path("l.yaml"))
    converted = {r["ecosystem"]: r["value"] for r in rows if r["metric"] == "converted_ha"}
    assert converted == {"forest": 2.0, "all_natural": 2.0}
    assert extents[("landscape", "L", "all_natural", 2000)] == 8.0 and extents[("landscape", "L", "forest", 2020)] == 5.0
    assert len([r for r in rows if r["metric"] == "transition_ha"]) == 3
    with pytest.raises(LegendError, match="codes \\[99\\] occur in s but not in l.yaml"):
        summary_rows([("landscape", "L", 99, 3, 1.0)], legend, 2000, 2020, source="s", legend_path=Path("l.yaml"))
