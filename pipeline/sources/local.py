"""Local files: the only module that opens rasters and vectors (DESIGN.md §1).

Every failure becomes a SourceError that names the file, what is wrong and the fix. Rasters are read by
window inside dask tasks, reopening the file by path each time (safe under threads and processes).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.array as da
import geopandas as gpd
import numpy as np
import pyogrio
import rasterio
import shapely
from affine import Affine
from pyproj import CRS
from rasterio.errors import RasterioError
from rasterio.windows import Window

from pipeline.errors import SourceError


@dataclass(frozen=True, slots=True)
class RasterBand:
    """One year's land cover: a band of a raster file and the grid it lives on."""

    path: str
    band: int
    crs_wkt: str
    transform: Affine
    shape: tuple[int, int]
    dtype: str
    nodata: float | None

    @property
    def crs(self) -> CRS:
        return CRS.from_wkt(self.crs_wkt)


def raster_bands(path: Path, *, years: list[int], band_of: Callable[[int], int | None] | None, hint: str) -> dict[int, RasterBand]:
    """Describe the band holding each year: one multi-band file (``band_of(year)`` gives the 1-based band)
    or, when ``band_of`` is None, one file per year (``{year}`` in ``path``).

    ``hint`` is appended to "file not found" messages (how the file is obtained).
    """
    bands: dict[int, RasterBand] = {}
    for year in years:
        file = Path(str(path).replace("{year}", str(year)))
        band = 1 if band_of is None else band_of(year)
        if not file.exists():
            raise SourceError(f"{file}: land cover for {year} not found; {hint}")
        try:
            with rasterio.open(file) as src:
                if src.crs is None:
                    raise SourceError(
                        f"{file}: raster has no CRS; assign one (gdal_edit.py -a_srs EPSG:xxxx {file.name}) and rerun"
                    )
                if band is None or band > src.count:
                    where_ = "landcover.band_per_year lists no band for it" if band is None else f"it would be band {band}"
                    raise SourceError(
                        f"{file}: no band for year {year} ({where_}; the file has {src.count} bands); "
                        f"remove {year} from years or fix landcover.band_per_year"
                    )
                if not np.issubdtype(np.dtype(src.dtypes[band - 1]), np.unsignedinteger):
                    raise SourceError(
                        f"{file}: land cover must be an unsigned integer raster of class codes (got {src.dtypes[band - 1]})"
                    )
                bands[year] = RasterBand(
                    path=str(file),
                    band=band,
                    crs_wkt=src.crs.to_wkt(),
                    transform=src.transform,
                    shape=(src.height, src.width),
                    dtype=src.dtypes[band - 1],
                    nodata=src.nodatavals[band - 1],
                )
        except RasterioError as exc:
            raise SourceError(f"{file}: cannot open as a raster ({exc}); the file is corrupt or not a GeoTIFF") from None
    return bands


def band_count(path: Path) -> int:
    """Number of bands of a raster file (SourceError when it cannot be opened)."""
    try:
        with rasterio.open(path) as src:
            return src.count
    except RasterioError as exc:
        raise SourceError(f"{path}: cannot open as a raster ({exc}); the file is corrupt or not a GeoTIFF") from None


def read_window(path: str, bands: list[int], window: Window) -> np.ndarray:
    """Read ``bands`` (1-based) of ``window`` -> (len(bands), h, w). Errors name the file and window."""
    try:
        with rasterio.open(path) as src:
            return src.read(bands, window=window)
    except RasterioError as exc:
        raise SourceError(
            f"{path}: cannot read bands {bands} at rows {window.row_off}-{window.row_off + window.height}, "
            f"cols {window.col_off}-{window.col_off + window.width} ({exc}); the file is truncated or corrupt, copy it again"
        ) from None


def read_vector(path: Path, *, layer: str | None = None, where: str | None = None, what: str) -> gpd.GeoDataFrame:
    """Read a vector layer; ``what`` names its role (e.g. 'zones.municipalities') in error messages."""
    if not path.exists():
        raise SourceError(f"{path}: {what} file not found")
    try:
        frame = gpd.read_file(path, layer=layer, where=where, engine="pyogrio")
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        layers = ""
        try:
            layers = "; layers: " + ", ".join(str(name) for name, _ in pyogrio.list_layers(path))
        except Exception:  # noqa: BLE001 - only decorates the message
            pass
        raise SourceError(f"{path}: cannot read {what} ({exc}){layers}") from None
    except Exception as exc:  # GDAL/OGR raise several types for broken files
        raise SourceError(f"{path}: cannot read {what} ({exc})") from None
    if frame.crs is None:
        raise SourceError(f"{path}: {what} has no CRS; add a .prj file or set the layer's CRS in GIS, then rerun")
    if frame.empty:
        layer_hint = f" (layer {layer!r})" if layer else ""
        raise SourceError(f"{path}: {what}{layer_hint} has no features; give a layer with at least one polygon"
                          + (" or check the where filter" if where else ""))
    return frame


def read_boundary(path: Path, *, layer: str | None = None) -> tuple[shapely.Geometry, CRS, list[str]]:
    """The boundary dissolved into one geometry, its CRS, and notes on any repair made.

    An invalid geometry (self-intersection, ring crossing) is repaired with ``shapely.make_valid`` and a
    warning, because the area the analyst drew is still what the polygon encloses; the repair and the
    area before and after are reported. An empty or non-polygonal result is an error.
    """
    frame = read_vector(path, layer=layer, what="boundary")
    geoms = frame.geometry.to_numpy()
    notes: list[str] = []
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        reasons = "; ".join(shapely.is_valid_reason(geoms[invalid])[:3])
        geoms = geoms.copy()
        geoms[invalid] = shapely.make_valid(geoms[invalid])
        note = f"{path}: {int(invalid.sum())} invalid boundary polygon(s) repaired with make_valid ({reasons})"
        notes.append(note)
        warnings.warn(note, stacklevel=2)
    merged = shapely.union_all(geoms)
    polygons = shapely.get_parts(merged)
    polygons = polygons[shapely.get_type_id(polygons) == shapely.GeometryType.POLYGON]
    merged = shapely.multipolygons(polygons) if len(polygons) > 1 else (polygons[0] if len(polygons) else None)
    if merged is None or merged.is_empty or merged.area == 0:
        raise SourceError(f"{path}: the boundary has no polygon with area; give a polygon layer")
    return merged, CRS.from_user_input(frame.crs), notes


def lazy_raster(path: Path, *, shape: tuple[int, int], chunks: tuple[tuple[int, ...], tuple[int, ...]], dtype: str) -> da.Array:
    """A single-band raster as a lazy dask array; each chunk reads its own window when computed."""
    rows = []
    row_off = 0
    for height in chunks[0]:
        col_off, row = 0, []
        for width in chunks[1]:
            window = Window(col_off, row_off, width, height)
            task = dask.delayed(_read_band1, pure=True)(str(path), window)
            row.append(da.from_delayed(task, shape=(height, width), dtype=dtype))
            col_off += width
        rows.append(row)
        row_off += height
    if (row_off, sum(chunks[1])) != tuple(shape):
        raise ValueError(f"chunks {chunks} do not cover shape {shape}")
    return da.block(rows)


def _read_band1(path: str, window: Window) -> np.ndarray:
    return read_window(path, [1], window)[0]
