"""Earth Engine: the only module that imports ``ee`` (DESIGN.md §1, §6).

``import ee`` happens inside the functions, and nothing here runs at import: ``initialize`` is called by the
fetch stage when it is about to talk to Earth Engine. Requests are built from the product configs in
configs/products/ (asset ids, bands, recipes); this module knows how to turn a recipe into an ``ee.Image``,
how to ask ``ee.data.computePixels`` for one tile of the landscape grid, and which failures are worth a
retry (quota, transient server or network errors) and which are the user's to fix (credentials, a wrong
asset id, a tile too large).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import shapely
from affine import Affine
from pyproj import CRS

from pipeline.config import ProductConfig
from pipeline.errors import PipelineError

# computePixels limits (Earth Engine docs, "Usage and quotas": 48 MB per request, 32768 px per side)
MAX_REQUEST_BYTES = 48 * 1024 * 1024
MAX_REQUEST_SIDE_PX = 32768
MODE_RATIO = 1.5  # as pipeline.align: a grid pixel this many times the product's pixel is resampled by mode
BACKOFF_BASE_S = 2.0
BACKOFF_CAP_S = 120.0

AUTH_HELP = (
    "run `earthengine authenticate` (user account), or set GOOGLE_APPLICATION_CREDENTIALS to a service-account "
    "JSON key registered with Earth Engine; give the Cloud project in landcover.fetch.project or EARTHENGINE_PROJECT"
)
# EEException carries the server's message only (no HTTP status), so failures are told apart by their text
_QUOTA_MARKERS = ("too many concurrent aggregations", "quota", "rate limit", "too many requests", "resource_exhausted")
_TRANSIENT_MARKERS = ("internal error", "service unavailable", "backend error", "deadline", "timed out", "timeout",
                      "connection reset", "temporarily", "try again", "bad gateway")
_MISSING_MARKERS = ("not found", "does not exist", "doesn't allow access", "does not allow access", "no such asset",
                    "did not match any bands")
_AUTH_MARKERS = ("invalid authentication", "unauthenticated", "not registered", "permission denied",
                 "caller does not have permission", "invalid_grant")
_TOO_LARGE_MARKERS = ("total request size", "must be less than or equal to", "memory limit exceeded",
                      "too many pixels", "request payload size exceeds")

T = TypeVar("T")


class EarthEngineError(PipelineError):
    """Earth Engine refused or failed a request in a way the user must act on."""


class CredentialsError(EarthEngineError):
    """No usable Earth Engine credentials or Cloud project."""


class AssetError(EarthEngineError):
    """A configured asset id or band does not exist or is not readable with these credentials."""


# ------------------------------------------------------------------------------------------- credentials
def credentials_available(env: Mapping[str, str] | None = None) -> str | None:
    """Which credentials a fetch would use, without any network call: a description, or None when there are none."""
    env = os.environ if env is None else env
    key = env.get("GOOGLE_APPLICATION_CREDENTIALS")
    if key:
        return f"service-account key {key}" if Path(key).is_file() else None
    stored = _stored_credentials_path()
    return f"stored credentials {stored} (earthengine authenticate)" if stored.is_file() else None


def _stored_credentials_path() -> Path:
    from ee import oauth

    return Path(oauth.get_credentials_path())


def initialize(project: str | None, *, env: Mapping[str, str] | None = None, where: str = "landcover.fetch.project") -> str:
    """Initialise Earth Engine with a service-account key (GOOGLE_APPLICATION_CREDENTIALS) or the stored user
    credentials of ``earthengine authenticate``, for ``project`` (else EARTHENGINE_PROJECT, GOOGLE_CLOUD_PROJECT,
    the key's project_id). Returns the project used; CredentialsError names what to run otherwise."""
    import ee

    env = os.environ if env is None else env
    project = project or env.get("EARTHENGINE_PROJECT") or env.get("GOOGLE_CLOUD_PROJECT")
    key = env.get("GOOGLE_APPLICATION_CREDENTIALS")
    if key:
        credentials, key_project = _service_account(key)
        project = project or key_project
    else:
        if not _stored_credentials_path().is_file():
            raise CredentialsError(f"no Earth Engine credentials found (no {_stored_credentials_path()} and "
                                   f"GOOGLE_APPLICATION_CREDENTIALS is not set); {AUTH_HELP}")
        credentials = "persistent"
    if not project:
        raise CredentialsError(f"no Google Cloud project for Earth Engine: set {where}, or the environment variable "
                               "EARTHENGINE_PROJECT (a project registered at https://code.earthengine.google.com/register)")
    try:
        ee.Initialize(credentials=credentials, project=project)
    except Exception as exc:  # ee raises EEException, google.auth raises RefreshError / DefaultCredentialsError
        if _unreachable(exc):
            raise explain(exc, what="ee.Initialize") from None
        raise CredentialsError(f"Earth Engine did not accept the credentials for project {project!r} "
                               f"({type(exc).__name__}: {_first_line(exc)}); {AUTH_HELP}") from None
    ee.data.setMaxRetries(0)  # with_retries() below is the one back-off policy
    return project


def _service_account(key: str):
    import ee

    path = Path(key)
    if not path.is_file():
        raise CredentialsError(f"GOOGLE_APPLICATION_CREDENTIALS={key}: no such file; point it at the service account's "
                               "JSON key, or unset it and run `earthengine authenticate`")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        email = info["client_email"]
    except (ValueError, KeyError, TypeError):
        raise CredentialsError(f"{key}: not a service-account JSON key (no client_email); download a key for the "
                               "service account (IAM > Service accounts > Keys) and set GOOGLE_APPLICATION_CREDENTIALS") from None
    try:
        return ee.ServiceAccountCredentials(email, key_file=str(path)), info.get("project_id")
    except Exception as exc:  # a malformed private key
        raise CredentialsError(f"{key}: the service-account key cannot be used ({_first_line(exc)}); "
                               "create a new key for the service account") from None


# ---------------------------------------------------------------------------------------------- errors
def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_retryable(exc: BaseException) -> bool:
    """True for quota (HTTP 429, "Too many concurrent aggregations") and transient server or network errors."""
    import ee

    if _unreachable(exc):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    try:
        import httplib2

        if isinstance(exc, httplib2.HttpLib2Error):
            return True
    except ImportError:  # pragma: no cover - httplib2 ships with earthengine-api
        pass
    if isinstance(exc, ee.ee_exception.EEException):
        text = str(exc).lower()
        if any(m in text for m in _MISSING_MARKERS + _TOO_LARGE_MARKERS + _AUTH_MARKERS):
            return False
        return any(m in text for m in _QUOTA_MARKERS + _TRANSIENT_MARKERS)
    return isinstance(exc, OSError)


def _unreachable(exc: BaseException) -> bool:
    """No network or DNS: retrying for minutes would only delay the message (e.g. `make run` offline)."""
    import socket

    kinds: list[type] = [socket.gaierror]
    try:  # all three ship with earthengine-api; guarded so a version without one still works
        import google.auth.exceptions
        import httplib2
        import requests

        kinds += [httplib2.ServerNotFoundError, requests.exceptions.ConnectionError,
                  google.auth.exceptions.TransportError]
    except ImportError:  # pragma: no cover
        pass
    return isinstance(exc, tuple(kinds))


def explain(exc: BaseException, *, what: str) -> EarthEngineError:
    """A non-retryable Earth Engine failure as one clear pipeline error; ``what`` names the request."""
    text = _first_line(exc)
    lower = text.lower()
    if _unreachable(exc):
        return EarthEngineError(f"{what}: cannot reach Earth Engine ({text}); check the network connection and rerun")
    if any(m in lower for m in _MISSING_MARKERS):
        return AssetError(f"{what}: Earth Engine says {text!r}; check the asset id and band names in the product "
                          "config (configs/products/), and that your project may read the asset")
    if any(m in lower for m in _AUTH_MARKERS):
        return CredentialsError(f"{what}: Earth Engine refused the request ({text}); {AUTH_HELP}")
    if any(m in lower for m in _TOO_LARGE_MARKERS):
        return EarthEngineError(f"{what}: the request is too large for Earth Engine ({text}); lower "
                                "landcover.fetch.tile_px (e.g. 1024)")
    return EarthEngineError(f"{what}: Earth Engine failed ({type(exc).__name__}: {text})")


def with_retries(call: Callable[[], T], *, what: str, max_retries: int, sleep: Callable[[float], object] = time.sleep,
                 on_retry: Callable[[int, BaseException, float], object] | None = None) -> T:
    """``call()`` with exponential back-off (2 s, 4 s, ... capped at 120 s, plus jitter) on retryable errors.

    Non-retryable errors, and retryable ones after ``max_retries`` retries, raise an EarthEngineError."""
    for attempt in range(max_retries + 1):
        try:
            return call()
        except PipelineError:
            raise
        except Exception as exc:  # classified below: ee, googleapiclient, httplib2 and socket errors differ by version
            if not is_retryable(exc):
                raise explain(exc, what=what) from None
            if attempt == max_retries:
                raise EarthEngineError(f"{what}: still failing after {max_retries} retries ({_first_line(exc)}); "
                                       "rerun later (finished tiles are kept) or raise landcover.fetch.max_retries") from None
            delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt) + random.uniform(0, BACKOFF_BASE_S)
            if on_retry is not None:
                on_retry(attempt + 1, exc, delay)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------------------------- requests
def asset_info(asset_id: str) -> dict:
    """Id, type, update time, dates and scalar properties of an asset (for the manifest); AssetError if missing.

    Retryable failures are raised as they are, for with_retries()."""
    import ee

    try:
        info = ee.data.getAsset(asset_id)
    except ee.ee_exception.EEException as exc:
        if is_retryable(exc):
            raise
        raise explain(exc, what=f"asset {asset_id}") from None
    properties = {k: v for k, v in (info.get("properties") or {}).items() if isinstance(v, (str, int, float, bool))}
    return {"id": asset_id, "type": info.get("type"), "update_time": info.get("updateTime"),
            "start_time": info.get("startTime"), "end_time": info.get("endTime"), "properties": properties}


def product_assets(product: ProductConfig, years: list[int]) -> list[str]:
    """Asset ids a fetch of ``years`` reads."""
    if product.assets_by_year is not None:
        return sorted({product.assets_by_year[y] for y in years})
    return [product.asset]  # type: ignore[list-item]


def region_geometry(region_lonlat: shapely.Geometry):
    """A planar (non-geodesic) ee.Geometry from a lon/lat shapely geometry."""
    import ee

    return ee.Geometry(shapely.geometry.mapping(region_lonlat), None, False)


def product_image(product: ProductConfig, year: int, *, region, resolution_m: float,
                  canopy_threshold_pct: float | None = None):
    """The ee.Image of one year of a product: one band ``landcover``, clipped to ``region`` (an ee.Geometry),
    masked pixels set to the product's nodata_value, cast to its dtype. Mode-resampled when the grid pixel is
    more than MODE_RATIO times the product's pixel (categorical data are never averaged)."""
    import ee

    if not product.first_year <= year <= product.last_year or (
            product.assets_by_year is not None and year not in product.assets_by_year):
        raise EarthEngineError(f"{product.product} has no year {year} (years: {_years_text(product)})")
    collection = None
    if product.recipe == "band_per_year":
        band = product.band.format(year=year)  # type: ignore[union-attr]
        if product.asset_type == "image_collection":
            collection = ee.ImageCollection(product.asset)
            image = collection.select([band]).mosaic()
        else:
            image = ee.Image(product.asset).select([band])
    elif product.recipe == "image_per_year":
        asset = product.assets_by_year[year]  # type: ignore[index]
        if product.asset_type == "image_collection":
            collection = ee.ImageCollection(asset)
            image = collection.select([product.band]).mosaic()
        else:
            image = ee.Image(asset).select([product.band])
    elif product.recipe == "annual_mode":
        collection = (ee.ImageCollection(product.asset).filterDate(f"{year}-01-01", f"{year + 1}-01-01")
                      .filterBounds(region).select([product.band]))
        image = collection.reduce(ee.Reducer.mode())
    else:
        image = _forest_in_year(product, year, canopy_threshold_pct)
    if collection is not None:  # mosaic() and reduce() forget the native projection; mode resampling needs it
        image = image.setDefaultProjection(collection.first().projection())
    if resolution_m > MODE_RATIO * product.native_resolution_m:
        ratio = resolution_m / product.native_resolution_m
        image = image.reduceResolution(reducer=ee.Reducer.mode(), bestEffort=False,
                                       maxPixels=int(min(65535, max(64, 4 * ratio * ratio))))
    image = image.rename(["landcover"]).clip(region).unmask(product.nodata_value, False)
    return image.toUint8() if product.dtype == "uint8" else image.toUint16()


def _forest_in_year(product: ProductConfig, year: int, canopy_threshold_pct: float | None):
    """Hansen-style forest / non-forest / water codes in ``year`` (see configs/products/hansen_gfc.yaml)."""
    import ee

    recipe = product.forest_loss
    source = ee.Image(product.asset)
    threshold = canopy_threshold_pct if canopy_threshold_pct is not None else recipe.canopy_threshold_pct
    treecover = source.select([recipe.treecover_band])
    lossyear = source.select([recipe.lossyear_band])
    lost_by_year = lossyear.gte(1).And(lossyear.lte(year - recipe.base_year))
    forest = treecover.gte(threshold).And(lost_by_year.Not())
    codes = treecover.multiply(0).add(recipe.non_forest_code).where(forest, recipe.forest_code)
    if recipe.datamask_band is not None:
        datamask = source.select([recipe.datamask_band])
        codes = codes.where(datamask.eq(2), recipe.water_code).updateMask(datamask.neq(0))
    return codes


def _years_text(product: ProductConfig) -> str:
    if product.assets_by_year is not None:
        return ", ".join(str(y) for y in sorted(product.assets_by_year))
    return f"{product.first_year}-{product.last_year}"


def grid_request(crs: CRS, transform: Affine, shape: tuple[int, int]) -> dict:
    """The computePixels ``grid`` (PixelGrid) of a window: dimensions, affine transform, CRS code or WKT."""
    grid: dict[str, Any] = {
        "dimensions": {"width": int(shape[1]), "height": int(shape[0])},
        "affineTransform": {"scaleX": transform.a, "shearX": transform.b, "translateX": transform.c,
                            "shearY": transform.d, "scaleY": transform.e, "translateY": transform.f},
    }
    epsg = crs.to_epsg()
    if epsg is not None:
        grid["crsCode"] = f"EPSG:{epsg}"
    else:
        grid["crsWkt"] = crs.to_wkt("WKT1_GDAL")
    return grid


def check_tile_size(tile_px: int, dtype: str) -> None:
    """computePixels limits: at most 32768 px a side and 48 MB a request."""
    size = tile_px * tile_px * (1 if dtype == "uint8" else 2)
    if tile_px > MAX_REQUEST_SIDE_PX or size > MAX_REQUEST_BYTES:
        raise EarthEngineError(f"landcover.fetch.tile_px {tile_px} gives {size / 2**20:.0f} MB requests; Earth Engine's "
                               f"computePixels allows {MAX_REQUEST_BYTES // 2**20} MB and {MAX_REQUEST_SIDE_PX} px a side: "
                               "lower tile_px (2048 is a good value)")


def compute_pixels(image, grid: dict) -> bytes:
    """One GeoTIFF tile of ``image`` on ``grid`` (see grid_request)."""
    import ee

    return ee.data.computePixels({"expression": image, "fileFormat": "GEO_TIFF", "grid": grid})


# -------------------------------------------------------------------------------------------- summaries
def zone_features(zones: list[tuple[str, str, shapely.Geometry]]):
    """An ee.FeatureCollection of (zone_layer, zone, lon/lat geometry)."""
    import ee

    return ee.FeatureCollection([ee.Feature(region_geometry(geom), {"zone_layer": layer, "zone": name})
                                 for layer, name, geom in zones])


def transition_areas(image_from, image_to, zones, *, crs: CRS, transform: Affine, code_base: int):
    """Per zone, the area (ha) of every (code_from, code_to) pair, computed by Earth Engine (reduceRegions).

    Pixel areas come from ee.Image.pixelArea() on the landscape grid (crs + transform); the sum is unweighted,
    so a pixel counts fully in a zone when its centre is inside (the pipeline's pixel-centre rule).
    Group code = code_from * code_base + code_to."""
    import ee

    pair = image_from.toInt64().multiply(code_base).add(image_to.toInt64()).rename(["pair"])
    stack = ee.Image.pixelArea().divide(10_000).rename(["area_ha"]).addBands(pair)
    reducer = ee.Reducer.sum().unweighted().group(groupField=1, groupName="pair")
    crs_text = f"EPSG:{crs.to_epsg()}" if crs.to_epsg() is not None else crs.to_wkt("WKT1_GDAL")
    reduced = stack.reduceRegions(collection=zones, reducer=reducer, crs=crs_text,
                                  crsTransform=[transform.a, transform.b, transform.c, transform.d, transform.e, transform.f])
    return reduced.select(["zone_layer", "zone", "groups"], None, False)


def compute_features(collection) -> list[dict]:
    """The features of a computed collection (properties only)."""
    import ee

    result = ee.data.computeValue(collection)
    return [feature.get("properties", {}) for feature in result.get("features", [])]


def parse_transitions(features: list[dict], *, code_base: int) -> list[tuple[str, str, int, int, float]]:
    """(zone_layer, zone, code_from, code_to, area_ha) rows from transition_areas() features."""
    rows = []
    for props in features:
        for group in props.get("groups") or []:
            pair = int(round(group["pair"]))
            rows.append((props["zone_layer"], props["zone"], pair // code_base, pair % code_base, float(group["sum"])))
    return rows
