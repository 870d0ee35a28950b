"""Fetch stage (DESIGN.md §1, §6): land cover from Google Earth Engine into data/raw/<name>/.

For each configured year and product (``landcover`` and ``landcover.fetch.layers``) the product's image is
built (pipeline/sources/earthengine.py), clipped to the boundary plus ``landcover.fetch.adjacency_m``, and
downloaded with ``computePixels`` tile by tile on the landscape grid itself (same CRS, pixel size and origin,
widened by the ring), so the later alignment is a window read without resampling. Tiles land in
``<raster folder>/.fetch/<year>/<file stem>/`` and are kept until the year's GeoTIFF is complete, so a broken
fetch resumes where it stopped. Each year is mosaicked into a tiled DEFLATE GeoTIFF written atomically at
``landcover.path``, and ``fetch_manifest.json`` beside it records assets, versions, dates, tiles and checksums.

The engine-side alternative for landscapes too large to download is in pipeline/ee_summaries.py.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import rasterio
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.io import MemoryFile
from rasterio.windows import Window

from pipeline.config import (
    LandcoverFetchConfig,
    LandscapeConfig,
    ProductConfig,
    legends_dir,
    load_landscape,
    load_legend,
    load_product,
    products_dir,
    project_root,
)
from pipeline.errors import ConfigError
from pipeline.grid import LandscapeGrid, build_grid
from pipeline.sources import earthengine as gee
from pipeline.sources import local

MANIFEST_NAME = "fetch_manifest.json"
TILE_DIR = ".fetch"
BLOCK_PX = 512  # GeoTIFF block size of the fetched rasters


class FetchTooLargeError(gee.EarthEngineError):
    """The boundary needs more tiles than the configured limit."""


@dataclass(frozen=True)
class FetchLayer:
    """One product to fetch and the per-year files it goes to."""

    role: str  # "landcover" or "layers[i]"
    name: str
    product: ProductConfig
    product_path: Path
    template: str  # absolute path with {year}
    legend_path: Path

    def path(self, year: int) -> Path:
        return Path(self.template.replace("{year}", str(year)))


@dataclass(frozen=True)
class FetchPlan:
    """The fetch extent (landscape grid widened by the adjacency ring) cut into request tiles."""

    grid: LandscapeGrid
    transform: Affine
    shape: tuple[int, int]
    ring_px: int
    tile_px: int
    tiles: tuple[tuple[int, int, int, int], ...]  # (row_off, col_off, height, width) touching the region
    n_skipped: int  # tiles wholly outside the region: never requested, written as nodata
    region: shapely.Geometry  # in the grid CRS
    region_lonlat: shapely.Geometry

    def describe(self) -> dict:
        return {"transform": list(self.transform)[:6], "shape": list(self.shape), "ring_px": self.ring_px,
                "tile_px": self.tile_px, "crs_wkt": self.grid.crs.to_wkt()}


# ------------------------------------------------------------------------------------------------ plan
def fetch_plan(grid: LandscapeGrid, boundary: shapely.Geometry, *, adjacency_m: float, tile_px: int,
               max_tiles: int, what: str = "landscape") -> FetchPlan:
    """Tiles of ``tile_px`` covering the grid plus ``adjacency_m`` (rounded up to whole pixels) around it.

    ``boundary`` is in the grid CRS. The region sent to Earth Engine is the boundary buffered by the ring plus
    two pixels and simplified by one pixel, so it always contains every pixel centre the pipeline keeps."""
    res = grid.resolution_m
    ring_px = math.ceil(adjacency_m / res - 1e-9)
    transform = grid.transform @ Affine.translation(-ring_px, -ring_px)
    shape = (grid.shape[0] + 2 * ring_px, grid.shape[1] + 2 * ring_px)
    region = boundary.buffer(adjacency_m + 2 * res).simplify(res)
    prepared = shapely.prepared.prep(region)
    tiles, skipped = [], 0
    n_total = math.ceil(shape[0] / tile_px) * math.ceil(shape[1] / tile_px)
    if n_total > max_tiles:
        gpx = shape[0] * shape[1] / 1e9
        raise FetchTooLargeError(
            f"{what}: the boundary plus a {adjacency_m:g} m ring is {shape[1]} x {shape[0]} px at {res:g} m ({gpx:.1f} Gpx), "
            f"{n_total} tiles of {tile_px} px, more than landcover.fetch.max_tiles {max_tiles}; compute per-zone areas on "
            "Earth Engine instead (python -m pipeline fetch NAME --summaries-only), or use a coarser grid.resolution_m, "
            "or raise max_tiles if the disk can hold it")
    for row in range(0, shape[0], tile_px):
        for col in range(0, shape[1], tile_px):
            height, width = min(tile_px, shape[0] - row), min(tile_px, shape[1] - col)
            t = transform @ Affine.translation(col, row)
            box = shapely.box(t.c, t.f + t.e * height, t.c + t.a * width, t.f)
            if prepared.intersects(box):
                tiles.append((row, col, height, width))
            else:
                skipped += 1
    to_lonlat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    region_lonlat = shapely.transform(region, lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1])))
    return FetchPlan(grid, transform, shape, ring_px, tile_px, tuple(tiles), skipped, region, region_lonlat)


def landscape_grid(config: LandscapeConfig, config_path: Path, root: Path, product: ProductConfig
                   ) -> tuple[LandscapeGrid, shapely.Geometry]:
    """The landscape grid as `prepare` will build it once the files exist, and the boundary in its CRS."""
    if config.grid.crs == "native":
        raise ConfigError(f"{config_path}: grid.crs: native needs a land-cover raster to take the grid from; with "
                          "source: earthengine use grid.crs: auto (or a projected CRS) and grid.resolution_m")
    boundary_path = _resolve(root, config.boundary)
    boundary, boundary_crs, _ = local.read_boundary(boundary_path, layer=config.boundary_layer)
    grid = build_grid(boundary, boundary_crs, crs_setting=config.grid.crs,
                      resolution_m=config.grid.resolution_m or product.native_resolution_m,
                      chunk_px=config.grid.chunk_px, source_crs=None, source_transform=None, source_shape=None)
    to_grid = Transformer.from_crs(boundary_crs, grid.crs, always_xy=True)
    return grid, shapely.transform(boundary, lambda xy: np.column_stack(to_grid.transform(xy[:, 0], xy[:, 1])))


def _resolve(root: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else root / p


def resolve_product(name: str | None, legend: str, root: Path, config_path: Path) -> tuple[str, ProductConfig, Path]:
    """The product named in the config, or else the one product whose legend is the land cover's."""
    folder = products_dir(root)
    if name is None:
        matches = [p for p in sorted(folder.glob("*.yaml")) if load_product(p).legend == legend]
        if len(matches) != 1:
            found = ", ".join(p.stem for p in matches) or "none"
            raise ConfigError(f"{config_path}: landcover.fetch.product is not set and {len(matches)} products in {folder} "
                              f"use legend {legend!r} ({found}); set landcover.fetch.product")
        path = matches[0]
    else:
        path = folder / f"{name}.yaml"
        if not path.exists():
            known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml"))) or "none"
            raise ConfigError(f"{config_path}: landcover.fetch.product {name!r}: no file {path}; known products: {known}")
    return path.stem, load_product(path), path


def fetch_layers(config: LandscapeConfig, root: Path, config_path: Path) -> list[FetchLayer]:
    """What `fetch` downloads: the land cover (source: earthengine) and every landcover.fetch.layers entry."""
    fetch_cfg = config.landcover.fetch
    layers = []
    if config.landcover.source == "earthengine":
        name, product, path = resolve_product(fetch_cfg.product if fetch_cfg else None, config.landcover.legend, root,
                                              config_path)
        if product.legend != config.landcover.legend:
            raise ConfigError(f"{config_path}: landcover.legend is {config.landcover.legend!r} but product {name!r} "
                              f"delivers codes of legend {product.legend!r}; make them agree")
        layers.append(FetchLayer("landcover", name, product, path, str(_resolve(root, config.landcover.path)),
                                 legends_dir(root) / f"{product.legend}.yaml"))
    for i, extra in enumerate(fetch_cfg.layers if fetch_cfg else []):
        name, product, path = resolve_product(extra.product, "", root, config_path)
        layers.append(FetchLayer(f"layers[{i}]", name, product, path, str(_resolve(root, extra.path)),
                                 legends_dir(root) / f"{product.legend}.yaml"))
    for layer in layers:
        if not layer.legend_path.exists():
            raise ConfigError(f"{layer.product_path}: legend: no file {layer.legend_path}; add the legend or fix the name")
        if layer.product.nodata_value in load_legend(layer.legend_path).classes:
            raise ConfigError(f"{layer.product_path}: nodata_value {layer.product.nodata_value} is a class of "
                              f"{layer.legend_path}; choose a code the legend does not use")
        unavailable = [y for y in config.years if y not in layer.product.years()]
        if unavailable:
            raise ConfigError(f"{config_path}: years {unavailable} are not in {layer.product.product} ({layer.product_path}: "
                              f"{layer.product.years()[0]}-{layer.product.years()[-1]}); remove them from years or "
                              "choose another product")
    return layers


# ----------------------------------------------------------------------------------------------- fetch
def fetch(config_path: Path, *, years: list[int] | None = None, force: bool = False, progress: bool = True,
          sleep: Callable[[float], object] = time.sleep, env: Mapping[str, str] | None = None,
          initialize: bool = True) -> dict:
    """Download every missing year of every fetch layer; returns the fetch manifest (also written to disk).

    ``initialize=False`` skips ``ee.Initialize`` (tests initialise the library themselves)."""
    config = load_landscape(config_path)
    root = project_root(config_path)
    layers = fetch_layers(config, root, config_path)
    if not layers:
        raise ConfigError(f"{config_path}: nothing to fetch: landcover.source is {config.landcover.source!r} and "
                          "landcover.fetch.layers is empty")
    fetch_cfg = config.landcover.fetch or LandcoverFetchConfig()
    for layer in layers:
        gee.check_tile_size(fetch_cfg.tile_px, layer.product.dtype)
    grid, boundary = landscape_grid(config, config_path, root, layers[0].product)
    plan = fetch_plan(grid, boundary, adjacency_m=fetch_cfg.adjacency_m, tile_px=fetch_cfg.tile_px,
                      max_tiles=fetch_cfg.max_tiles, what=str(config_path))
    manifest_path = layers[0].path(config.years[0]).parent / MANIFEST_NAME
    manifest = _read_manifest(manifest_path)
    # files fetched on another grid or extent (config changed) are fetched again; files without a manifest
    # (put there by hand) are the user's and are kept
    extent_changed = "fetch_extent" in manifest and manifest["fetch_extent"] != plan.describe()
    unknown = sorted(set(years or []) - set(config.years))
    if unknown:
        raise ConfigError(f"{config_path}: --year {unknown} not in years {config.years}; add them to years first")
    wanted = years or config.years
    todo = [(layer, y) for layer in layers for y in wanted
            if force or extent_changed or not layer.path(y).exists()]
    if not todo:
        return manifest
    project = gee.initialize(fetch_cfg.project, env=env) if initialize else fetch_cfg.project
    if extent_changed:
        manifest = {}
    manifest.update({"landscape": config.name, "config": str(config_path), "project": project,
                     "earthengine_api": _ee_version(), "grid": grid.describe(), "fetch_extent": plan.describe(),
                     "adjacency_m": fetch_cfg.adjacency_m})
    for layer in {layer.role: layer for layer, _ in todo}.values():  # every asset checked before any download
        entry = manifest.setdefault("layers", {}).setdefault(layer.role, {})
        if entry.get("product") != layer.name:
            entry.clear()
        entry.update({"product": layer.name, "product_file": str(layer.product_path), "title": layer.product.product,
                      "legend": layer.product.legend, "recipe": layer.product.recipe,
                      "assets": [gee.with_retries(lambda a=a: gee.asset_info(a), what=f"asset {a}", sleep=sleep,
                                                  max_retries=fetch_cfg.max_retries)
                                 for a in gee.product_assets(layer.product, config.years)]})
    region = gee.region_geometry(plan.region_lonlat)
    with _progress_bar(progress) as bar:
        for layer, year in todo:
            entry = manifest["layers"][layer.role]
            image = gee.product_image(layer.product, year, region=region, resolution_m=grid.resolution_m,
                                      canopy_threshold_pct=fetch_cfg.canopy_threshold_pct)
            if layer.product.recipe == "forest_loss":
                entry["canopy_threshold_pct"] = fetch_cfg.canopy_threshold_pct or layer.product.forest_loss.canopy_threshold_pct
            task = bar.add_task(f"{layer.name} {year}", total=len(plan.tiles)) if bar else None
            record = fetch_year(layer, year, plan, image, max_retries=fetch_cfg.max_retries, sleep=sleep,
                                advance=(lambda task=task: bar.advance(task)) if bar else None,
                                say=bar.console.print if bar else None)
            entry.setdefault("years", {})[str(year)] = record
            manifest["fetched_utc"] = record["fetched_utc"]
            _write_json_atomic(manifest, manifest_path)
    return manifest


def _ee_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("earthengine-api")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "not installed"


def _progress_bar(enabled: bool):
    from contextlib import nullcontext

    if not enabled:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description:<32}"), BarColumn(), MofNCompleteColumn(), TextColumn("tiles"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True))


def request_key(image, plan: FetchPlan, product: ProductConfig) -> str:
    """SHA-256 of what determines a tile's bytes: the serialised expression, the tiling and the product dtype."""
    import ee

    text = json.dumps({"expression": ee.serializer.encode(image), "plan": plan.describe(), "dtype": product.dtype},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def fetch_year(layer: FetchLayer, year: int, plan: FetchPlan, image, *, max_retries: int,
               sleep: Callable[[float], object] = time.sleep, advance: Callable[[], object] | None = None,
               say: Callable[[str], object] | None = None) -> dict:
    """Fetch the tiles of one year that are not on disk yet, mosaic them, and return the manifest record.

    ``advance()`` is called after each tile, ``say(text)`` on each retry (the progress bar's console)."""
    out = layer.path(year)
    tiles_dir = out.parent / TILE_DIR / str(year) / out.stem
    key = request_key(image, plan, layer.product)
    key_file = tiles_dir / "request.sha256"
    if tiles_dir.exists() and (not key_file.exists() or key_file.read_text().strip() != key):
        shutil.rmtree(tiles_dir)  # tiles of another request (config or product changed): never mix them
    tiles_dir.mkdir(parents=True, exist_ok=True)
    key_file.write_text(key + "\n")
    resumed = fetched = retries = 0
    checksums = {}
    for row, col, height, width in plan.tiles:
        name = f"r{row:06d}_c{col:06d}.tif"
        path = tiles_dir / name
        if path.exists() and _tile_ok(path, (height, width)):
            resumed += 1
        else:
            transform = plan.transform @ Affine.translation(col, row)
            grid = gee.grid_request(plan.grid.crs, transform, (height, width))

            def note(attempt: int, exc: BaseException, delay: float, name=name) -> None:
                nonlocal retries
                retries += 1
                if say is not None:
                    say(f"{layer.name} {year} {name}: {str(exc).strip()[:80]}; retry {attempt} in {delay:.0f} s")

            data = gee.with_retries(lambda grid=grid: gee.compute_pixels(image, grid), max_retries=max_retries,
                                    sleep=sleep, on_retry=note,
                                    what=f"{layer.name} {year} tile rows {row}-{row + height} cols {col}-{col + width}")
            _check_tile(data, (height, width), transform, what=f"{layer.name} {year} tile {name}")
            part = path.with_suffix(".part")
            part.write_bytes(data)
            os.replace(part, path)
            fetched += 1
        checksums[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        if advance is not None:
            advance()
    mosaic(tiles_dir, plan, out, layer=layer, year=year)
    record = {"file": str(out), **{k: v for k, v in _file_record(out).items() if k != "path"},
              "fetched_utc": datetime.now(UTC).isoformat(timespec="seconds"),
              "tiles": len(plan.tiles), "tiles_fetched": fetched, "tiles_resumed": resumed,
              "tiles_outside_region": plan.n_skipped, "retries": retries, "request_sha256": key,
              "tile_sha256": checksums}
    shutil.rmtree(tiles_dir)
    for parent in (tiles_dir.parent, tiles_dir.parent.parent):
        if parent.exists() and not any(parent.iterdir()):
            parent.rmdir()
    return record


def _file_record(path: Path) -> dict:
    from pipeline.outputs import file_record

    return file_record(path)


def _tile_ok(path: Path, shape: tuple[int, int]) -> bool:
    try:
        with rasterio.open(path) as src:
            return (src.height, src.width) == shape and src.count >= 1
    except rasterio.errors.RasterioError:
        return False


def _check_tile(data: bytes, shape: tuple[int, int], transform: Affine, *, what: str) -> None:
    """The response is a GeoTIFF of the requested size and position (else the tiles would not line up)."""
    try:
        with MemoryFile(data) as memfile, memfile.open() as src:
            got_shape, got_transform, count = (src.height, src.width), src.transform, src.count
    except rasterio.errors.RasterioError as exc:
        raise gee.EarthEngineError(f"{what}: Earth Engine's answer is not a GeoTIFF ({exc}); rerun to fetch it again") from None
    if got_shape != shape or count < 1 or not got_transform.almost_equals(transform, precision=1e-6 * abs(transform.a)):
        raise gee.EarthEngineError(f"{what}: Earth Engine returned {got_shape} px at {tuple(got_transform)[:6]} instead of "
                                   f"{shape} px at {tuple(transform)[:6]}; the tile would not line up with the grid")


def mosaic(tiles_dir: Path, plan: FetchPlan, out: Path, *, layer: FetchLayer, year: int) -> None:
    """Write the year's tiles into one tiled DEFLATE GeoTIFF (staged, then moved into place)."""
    product = layer.product
    part = out.with_name(f".{out.name}.part")
    out.parent.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "width": plan.shape[1], "height": plan.shape[0], "count": 1, "dtype": product.dtype,
               "crs": plan.grid.crs.to_wkt(), "transform": plan.transform, "nodata": product.nodata_value,
               "tiled": True, "blockxsize": BLOCK_PX, "blockysize": BLOCK_PX, "compress": "DEFLATE", "zlevel": 6,
               "BIGTIFF": "IF_SAFER"}
    try:
        with rasterio.open(part, "w", **profile) as dst:
            for row, col, height, width in plan.tiles:
                with rasterio.open(tiles_dir / f"r{row:06d}_c{col:06d}.tif") as src:
                    dst.write(src.read(1).astype(product.dtype, copy=False), 1, window=Window(col, row, width, height))
            dst.update_tags(product=product.product, product_config=layer.name, year=str(year), recipe=product.recipe,
                            assets=",".join(gee.product_assets(product, [year])), source="Google Earth Engine")
            colormap = _colormap(layer.legend_path)
            if colormap and product.dtype == "uint8":
                dst.write_colormap(1, colormap)
        os.replace(part, out)
    finally:
        part.unlink(missing_ok=True)


def _colormap(legend_path: Path) -> dict[int, tuple[int, int, int, int]]:
    """The legend's display colours as a GeoTIFF palette (QGIS shows the classes at once)."""
    legend = load_legend(legend_path)
    return {code: (int(c.color[1:3], 16), int(c.color[3:5], 16), int(c.color[5:7], 16), 255)
            for code, c in legend.classes.items() if c.color and code <= 255}


# -------------------------------------------------------------------------------------------- manifest
def _read_manifest(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}


def _write_json_atomic(data: dict, path: Path) -> None:
    part = path.with_name(f".{path.name}.part")
    part.write_text(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(part, path)


def fetch_record(config: LandscapeConfig, root: Path) -> dict | None:
    """The fetch manifest beside the land-cover rasters, for the run's manifest.json (None when absent)."""
    path = _resolve(root, config.landcover.path).parent / MANIFEST_NAME
    manifest = _read_manifest(path)
    return {"path": str(path), **manifest} if manifest else None


def missing_files(config_path: Path) -> list[Path]:
    """Land-cover files of an Earth Engine landscape that are not on disk (empty for a local source)."""
    config = load_landscape(config_path)
    if config.landcover.source != "earthengine":
        return []
    template = str(_resolve(project_root(config_path), config.landcover.path))
    return [p for p in (Path(template.replace("{year}", str(y))) for y in config.years) if not p.exists()]


def fetch_if_missing(config_path: Path, *, progress: bool = True, env: Mapping[str, str] | None = None) -> str | None:
    """Before a run: fetch missing Earth Engine land cover when credentials exist. Returns a note for the user
    when it cannot (no credentials), so the run goes on with what the shipped data allow."""
    missing = missing_files(config_path)
    if not missing:
        return None
    if gee.credentials_available(env) is None:
        return (f"{len(missing)} land-cover file(s) missing ({', '.join(str(p) for p in missing[:3])}"
                f"{', ...' if len(missing) > 3 else ''}) and no Earth Engine credentials: {gee.AUTH_HELP}; "
                f"then `make fetch landscape={load_landscape(config_path).name}`. Running with the shipped data only")
    try:
        fetch(config_path, progress=progress, env=env)
    except gee.EarthEngineError as exc:  # offline, refused credentials, quota: the run still computes what it can
        return f"the Earth Engine fetch did not complete ({exc}). Running with the data on disk only"
    return None
