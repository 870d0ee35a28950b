"""Output files (DESIGN.md §5): tidy CSV, GeoPackage, aligned COGs and manifest.json, all written atomically.

A run writes into a staging folder beside the output folder; only when every file is complete are they
moved into place with ``os.replace`` (atomic on one file system). A failed run removes the staging
folder, so it leaves no partial file and never replaces a good earlier result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path
from types import TracebackType
from xml.etree import ElementTree

import dask.array as da
import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.windows import Window

from pipeline import kernels
from pipeline.grid import LandscapeGrid

CSV_ENCODING = "utf-8-sig"  # the byte-order mark makes Excel read accents (Calçoene) correctly
VALUE_DECIMALS = 6
PACKAGES = ("numpy", "pandas", "scipy", "rasterio", "pyproj", "shapely", "geopandas", "pyogrio", "xarray", "dask", "pydantic")


class Staging:
    """Context manager: a temporary folder whose files replace those of ``final_dir`` on success."""

    def __init__(self, final_dir: Path) -> None:
        self.final_dir = final_dir
        self.dir = final_dir.parent / f".{final_dir.name}.staging-{os.getpid()}-{time.time_ns()}"

    def __enter__(self) -> Staging:
        self.dir.mkdir(parents=True)
        return self

    def path(self, name: str) -> Path:
        return self.dir / name

    def commit(self, names: list[str]) -> list[Path]:
        """Move ``names`` into the final folder (each move atomic) and return their final paths."""
        self.final_dir.mkdir(parents=True, exist_ok=True)
        moved = []
        for name in names:
            os.replace(self.dir / name, self.final_dir / name)
            moved.append(self.final_dir / name)
        return moved

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def sha256_file(path: Path, *, block_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block_size):
            digest.update(chunk)
    return digest.hexdigest()


def file_record(path: Path, *, role: str | None = None) -> dict:
    """Path, size and SHA-256 of a file for the manifest."""
    record = {"path": str(path), "size_bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return {"role": role, **record} if role else record


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["gdal"] = rasterio.__gdal_version__
    return versions


def write_csv(table: pd.DataFrame, path: Path) -> None:
    """Tidy CSV: UTF-8 with BOM (Excel), values rounded to 6 decimals, empty cells where not applicable."""
    out = table.copy()
    for column in out.select_dtypes("float").columns:
        out[column] = out[column].round(VALUE_DECIMALS)
    out.to_csv(path, index=False, encoding=CSV_ENCODING, lineterminator="\n")


def write_json(data: dict, path: Path) -> None:
    path.write_text(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n", encoding="utf-8")


def write_gpkg(layers: dict[str, gpd.GeoDataFrame], path: Path) -> None:
    """Write layers to one GeoPackage; polygons are promoted to MultiPolygon so QGIS sees one type a layer."""
    for name, frame in layers.items():
        if frame.empty:
            gpd.GeoDataFrame(frame.drop(columns="geometry", errors="ignore"), geometry=[], crs=frame.crs).to_file(
                path, layer=name, driver="GPKG", engine="pyogrio", geometry_type="MultiPolygon")
        else:
            frame.to_file(path, layer=name, driver="GPKG", engine="pyogrio", promote_to_multi=True)


def zones_layer(table: pd.DataFrame, zone_geoms: dict[tuple[str, str], object], metrics: tuple[str, ...], crs) -> gpd.GeoDataFrame:
    """One row per zone with its headline metrics as columns: <metric>_<year> or <metric>_<from>_<to>.

    Headline = all natural land (or no ecosystem), no class breakdown.
    """
    rows = table[table["metric"].isin(metrics) & table["class_from"].isna() & table["class_to"].isna()
                 & (table["ecosystem"].isna() | (table["ecosystem"] == "all_natural"))]
    suffix = np.where(rows["year"].notna(), rows["year"].astype("string").fillna(""),
                      rows["year_from"].astype("string").fillna("") + "_" + rows["year_to"].astype("string").fillna(""))
    wide = rows.assign(column=rows["metric"] + "_" + suffix).pivot_table(
        index=["zone_layer", "zone"], columns="column", values="value", aggfunc="first", sort=False)
    wide = wide.reset_index()
    area = table[table["metric"] == "landscape_area_ha"].set_index(["zone_layer", "zone"])["value"]
    wide.insert(2, "area_ha", [area.get((a, b), np.nan) for a, b in zip(wide["zone_layer"], wide["zone"], strict=True)])
    geometry = [zone_geoms[(a, b)] for a, b in zip(wide["zone_layer"], wide["zone"], strict=True)]
    wide.columns.name = None
    return gpd.GeoDataFrame(wide, geometry=geometry, crs=crs)


# ------------------------------------------------------------------------------------------------ rasters
# Two ways to write a lazy (n, y, x) stack into n tiled GeoTIFFs, with the same bytes of pixel data:
# - store_rasters (dask's local threads / synchronous schedulers): each task writes its block into the open
#   datasets itself, one writer at a time (threading.Lock); nothing is copied;
# - write_gathered (dask's process pool, dask.distributed): an open dataset and a threading.Lock cannot be
#   pickled to another process, and a cluster's workers may not even see this machine's disk; so the workers
#   compute the blocks, and this process receives them (a few at a time) and writes them.
TIFF_PROFILE = {"driver": "GTiff", "count": 1, "tiled": True, "blockxsize": 512, "blockysize": 512,
                "compress": "ZSTD", "zstd_level": 1, "BIGTIFF": "IF_SAFER"}


class _WindowWriter:
    """``da.store`` target: writes each block into an open rasterio dataset. A GDAL dataset takes one writer at
    a time; different datasets are written (and their tiles compressed) in parallel."""

    def __init__(self, dataset: rasterio.io.DatasetWriter) -> None:
        self.dataset = dataset
        self.lock = threading.Lock()

    def __setitem__(self, key: tuple[slice, slice], block: np.ndarray) -> None:
        rows, cols = key
        window = Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
        with self.lock:
            self.dataset.write(block, 1, window=window)


def open_rasters(paths: list[Path], grid: LandscapeGrid, *, dtype: str, nodata: int | None,
                 colormap: dict[int, tuple[int, int, int, int]] | None = None) -> list:
    """One tiled (512 px, ZSTD level 1) single-band GeoTIFF per path on the grid, open for writing."""
    profile = {**TIFF_PROFILE, "dtype": dtype, "width": grid.shape[1], "height": grid.shape[0],
               "crs": grid.crs.to_wkt(), "transform": grid.transform, "nodata": nodata}
    datasets = [rasterio.open(path, "w", **profile) for path in paths]
    if colormap:
        for dataset in datasets:
            dataset.write_colormap(1, colormap)
    return datasets


def store_rasters(stack: da.Array, paths: list[Path], grid: LandscapeGrid, *, nodata: int | None,
                  colormap: dict[int, tuple[int, int, int, int]] | None):
    """Open one tiled GeoTIFF per layer of ``stack`` and return (delayed store, datasets to close after computing).

    For dask's threaded and synchronous schedulers only (see write_gathered)."""
    datasets = open_rasters(paths, grid, dtype=stack.dtype.name, nodata=nodata, colormap=colormap)
    targets = [_WindowWriter(d) for d in datasets]
    store = da.store([stack[i] for i in range(len(paths))], targets, lock=False, compute=False)  # each target locks
    return store, datasets


def write_gathered(stack: da.Array, datasets: list, *, count_codes: int | None = None, in_flight: int = 4) -> np.ndarray | None:
    """Compute ``stack`` (n, y, x; one chunk along n) on the active scheduler, ``in_flight`` blocks at a time, and
    write layer i of each block into ``datasets[i]`` here, in the calling process.

    Works with every scheduler; this process holds at most ``in_flight`` blocks. With ``count_codes=size`` it also
    returns the pixel count per code and layer, (n, size) int64, counted as the blocks arrive."""
    import dask

    if stack.numblocks[0] != 1:
        stack = stack.rechunk({0: -1})
    blocks = stack.to_delayed()[0]
    row_offs = np.cumsum((0, *stack.chunks[1]))
    col_offs = np.cumsum((0, *stack.chunks[2]))
    order = [(iy, ix) for iy in range(blocks.shape[0]) for ix in range(blocks.shape[1])]
    counts = np.zeros((stack.shape[0], count_codes), np.int64) if count_codes else None
    for start in range(0, len(order), in_flight):
        batch = order[start:start + in_flight]
        arrays = dask.compute(*[blocks[iy, ix] for iy, ix in batch])
        for (iy, ix), block in zip(batch, arrays, strict=True):
            window = Window(int(col_offs[ix]), int(row_offs[iy]), block.shape[2], block.shape[1])
            for i, dataset in enumerate(datasets):
                dataset.write(block[i], 1, window=window)
                if counts is not None:
                    counts[i] += np.bincount(block[i].ravel(), minlength=count_codes)
    return counts


COG_BLOCK_PX = 512
COG_OPTIONS = {"driver": "COG", "compress": "DEFLATE", "level": 1, "blocksize": COG_BLOCK_PX,
               "overviews": "FORCE_USE_EXISTING", "resampling": "NEAREST", "bigtiff": "IF_SAFER"}
OVERVIEW_WINDOW_PX = 2048  # source pixels read at a time by write_mode_overviews (rounded to 2 ** levels)


def to_cog(source: Path, target: Path) -> None:
    """Copy a tiled GeoTIFF of class codes into a Cloud-Optimised GeoTIFF with mode overviews (classes stay classes).

    The overviews are made here (``write_mode_overviews``) and given to GDAL's COG driver through a VRT that lists
    them: GDAL's own MODE overviews took ~80 % of the copy (8.5 of 10.6 s for 576 Mpx). Codes other than uint8 or
    uint16 keep GDAL's MODE. DEFLATE level 1: ~30 % less CPU than level 6 for ~15 % larger files (DESIGN.md §9)."""
    with rasterio.open(source) as src:
        own_overviews = src.dtypes[0] in ("uint8", "uint16")
    if not own_overviews:
        rasterio.shutil.copy(source, target, **{**COG_OPTIONS, "overviews": "AUTO", "overview_resampling": "MODE"})
        return
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as folder:
        vrt = Path(folder) / "source.vrt"
        rasterio.shutil.copy(source, vrt, driver="VRT")
        tree = ElementTree.parse(vrt)
        band = tree.getroot().find("VRTRasterBand")
        for path in write_mode_overviews(source, Path(folder)):
            overview = ElementTree.SubElement(band, "Overview")
            ElementTree.SubElement(overview, "SourceFilename", relativeToVRT="1").text = path.name
            ElementTree.SubElement(overview, "SourceBand").text = "1"
        tree.write(vrt)
        rasterio.shutil.copy(vrt, target, **COG_OPTIONS)


def overview_shapes(height: int, width: int, *, block_px: int = COG_BLOCK_PX) -> list[tuple[int, int]]:
    """(rows, columns) of each overview level: half the level before, rounded up, until the larger side fits
    in one block."""
    shapes: list[tuple[int, int]] = []
    while max(height, width) > block_px:
        height, width = (height + 1) // 2, (width + 1) // 2
        shapes.append((height, width))
    return shapes


def write_mode_overviews(source: Path, folder: Path) -> list[Path]:
    """The mode overviews of a single-band GeoTIFF of uint8/uint16 codes, one tiled GeoTIFF per level in
    ``folder`` (factor 2, 4, ...): level k is ``kernels.mode_2x2`` of level k - 1 (level 0: the source), nodata
    left out. Made window by window (OVERVIEW_WINDOW_PX source pixels, a multiple of 2 ** levels, so windows
    halve exactly): memory is a few windows, whatever the raster."""
    with rasterio.open(source) as src:
        shapes = overview_shapes(src.height, src.width)
        levels = len(shapes)
        window = max(OVERVIEW_WINDOW_PX >> levels, 1) << levels
        profile = {**TIFF_PROFILE, "dtype": src.dtypes[0], "nodata": src.nodata, "crs": src.crs}
        paths = [folder / f"overview_{2 ** (k + 1)}.tif" for k in range(levels)]
        with contextlib.ExitStack() as opened:
            outs = [opened.enter_context(rasterio.open(
                path, "w", **profile, height=h, width=w, transform=src.transform @ Affine.scale(src.width / w, src.height / h)))
                for path, (h, w) in zip(paths, shapes, strict=True)]
            for row in range(0, src.height, window):
                for col in range(0, src.width, window):
                    block = src.read(1, window=Window(col, row, min(window, src.width - col), min(window, src.height - row)))
                    for k, out in enumerate(outs):
                        block = kernels.mode_2x2(block, None if src.nodata is None else int(src.nodata))
                        out.write(block, 1, window=Window(col >> (k + 1), row >> (k + 1), block.shape[1], block.shape[0]))
    return paths


def to_cogs(pairs: list[tuple[Path, Path]], *, threads: int = 2) -> None:
    """``to_cog`` of every (source, target), ``threads`` files at a time (GDAL works without the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, threads)) as pool:
        list(pool.map(lambda pair: to_cog(*pair), pairs))
