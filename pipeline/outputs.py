"""Output files (DESIGN.md §5): tidy CSV, GeoPackage, aligned COGs and manifest.json, all written atomically.

A run writes into a staging folder beside the output folder; only when every file is complete are they
moved into place with ``os.replace`` (atomic on one file system). A failed run removes the staging
folder, so it leaves no partial file and never replaces a good earlier result.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from importlib import metadata
from pathlib import Path
from types import TracebackType

import dask.array as da
import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.shutil
from rasterio.windows import Window

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
    """``da.store`` target: writes each block into an open rasterio dataset (the lock serialises GDAL)."""

    def __init__(self, dataset: rasterio.io.DatasetWriter) -> None:
        self.dataset = dataset

    def __setitem__(self, key: tuple[slice, slice], block: np.ndarray) -> None:
        rows, cols = key
        window = Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
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
    store = da.store([stack[i] for i in range(len(paths))], targets, lock=threading.Lock(), compute=False)
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


COG_OPTIONS = {"driver": "COG", "compress": "DEFLATE", "level": 1, "blocksize": 512, "overview_resampling": "MODE",
               "resampling": "NEAREST", "bigtiff": "IF_SAFER"}


def to_cog(source: Path, target: Path) -> None:
    """Copy a tiled GeoTIFF into a Cloud-Optimised GeoTIFF with mode overviews (classes stay classes).

    DEFLATE level 1: ~30 % less CPU than level 6 for ~15 % larger files (DESIGN.md §9)."""
    rasterio.shutil.copy(source, target, **COG_OPTIONS)


def to_cogs(pairs: list[tuple[Path, Path]], *, threads: int = 2) -> None:
    """``to_cog`` of every (source, target), ``threads`` files at a time (GDAL works without the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, threads)) as pool:
        list(pool.map(lambda pair: to_cog(*pair), pairs))
