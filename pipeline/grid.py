"""The landscape grid (DESIGN.md §2): one projected, ideally equal-area grid per landscape.

Areas are hectares. On an equal-area CRS a pixel's area is |a·e| of the transform. On another projected CRS
(`native` on a UTM raster, say) the nominal pixel area is divided by the CRS's areal scale factor averaged
over the landscape (pyproj ``Proj.get_factors``); the residual spread of that factor is recorded so users
see how small it is. Geographic grids are refused: pixel counts in degrees are not areas.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Proj, Transformer

from pipeline.errors import GridError

EQUAL_AREA_TOLERANCE = 1e-7  # |areal scale - 1| below which a CRS counts as equal-area


@dataclass(frozen=True, slots=True)
class Tile:
    """One chunk of the grid: block indices, pixel offsets and size."""

    iy: int
    ix: int
    row_off: int
    col_off: int
    height: int
    width: int


@dataclass(frozen=True, slots=True)
class LandscapeGrid:
    """Frozen value object: CRS, transform, shape and chunking of the landscape grid.

    ``areal_scale`` is the mean areal scale factor of the CRS over the landscape (1 for equal-area CRSs);
    ``areal_scale_spread`` its max - min over the landscape.
    """

    crs: CRS
    transform: Affine
    shape: tuple[int, int]
    chunk_px: int
    areal_scale: float = 1.0
    areal_scale_spread: float = 0.0

    def __post_init__(self) -> None:
        if self.crs.is_geographic:
            raise GridError(
                f"grid CRS {self.crs.to_string()} is geographic, so pixel counts are not areas; "
                "use grid.crs: auto (Lambert azimuthal equal-area) or a projected CRS"
            )
        if self.transform.b != 0 or self.transform.d != 0:
            raise GridError("rotated grids are not supported; use a north-up grid")

    @property
    def resolution_m(self) -> float:
        return abs(self.transform.a)

    @property
    def pixel_area_ha(self) -> float:
        """True area of one pixel in hectares (nominal area / areal scale)."""
        return abs(self.transform.a * self.transform.e) / 10_000 / self.areal_scale

    @property
    def chunks(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Dask chunks along (y, x)."""
        return tuple(_split(n, self.chunk_px) for n in self.shape)  # type: ignore[return-value]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in grid CRS units."""
        left, top = self.transform.c, self.transform.f
        right = left + self.transform.a * self.shape[1]
        bottom = top + self.transform.e * self.shape[0]
        return (left, bottom, right, top)

    def tile_transform(self, row_off: int, col_off: int) -> Affine:
        return self.transform @ Affine.translation(col_off, row_off)

    def tiles(self) -> Iterator[Tile]:
        """Every chunk in row-major order."""
        row_off = 0
        for iy, height in enumerate(self.chunks[0]):
            col_off = 0
            for ix, width in enumerate(self.chunks[1]):
                yield Tile(iy, ix, row_off, col_off, height, width)
                col_off += width
            row_off += height

    def tile_box(self, tile: Tile) -> shapely.Polygon:
        t = self.tile_transform(tile.row_off, tile.col_off)
        return shapely.box(t.c, t.f + t.e * tile.height, t.c + t.a * tile.width, t.f)

    def covers_tile(self, geom: shapely.Geometry, tile: Tile) -> bool:
        """True when every pixel centre of the tile lies inside ``geom``, off its boundary: rasterising ``geom``
        (pixel-centre rule) burns the whole tile, so a constant array can stand in for it."""
        t = self.tile_transform(tile.row_off, tile.col_off)
        xs = (t.c + t.a / 2, t.c + t.a * (tile.width - 0.5))
        ys = (t.f + t.e / 2, t.f + t.e * (tile.height - 0.5))
        centres = shapely.box(min(xs), min(ys), max(xs), max(ys))
        return bool(shapely.contains_properly(geom, centres))

    def tile_pieces(self, polygons: list[shapely.Geometry]) -> Iterator[tuple[Tile, list[tuple[int, shapely.Geometry]]]]:
        """Every chunk with the pieces of ``polygons`` inside it: (index into ``polygons``, polygonal part of the
        polygon inside the chunk).

        GDAL's rasteriser walks every edge of a shape on every row it burns, so rasterising a landscape-wide
        polygon (a dissolved riparian zone, a district) in every chunk costs vertices x chunks. Cutting first
        to the row of chunks, then to the chunk, keeps each chunk's pieces local. The cut lines lie on pixel
        edges, so which pixel centres fall inside does not change. (``shapely.clip_by_rect`` is faster but
        can fail on valid input with a 3-point ring, so the cut is an intersection.)"""
        polygons = list(polygons)
        tree = shapely.STRtree(polygons) if polygons else None
        left, _, right, _ = self.bounds
        row_off = 0
        for iy, height in enumerate(self.chunks[0]):
            top = self.transform.f + self.transform.e * row_off
            bottom = top + self.transform.e * height
            row_box = shapely.box(left, bottom, right, top)
            hits = np.sort(tree.query(row_box, predicate="intersects")) if tree else np.array([], int)
            strip = _polygonal_cut(np.asarray([polygons[i] for i in hits], dtype=object), row_box)
            strip_bounds = shapely.bounds(strip) if len(hits) else np.zeros((0, 4))
            col_off = 0
            for ix, width in enumerate(self.chunks[1]):
                tile = Tile(iy, ix, row_off, col_off, height, width)
                x0 = self.transform.c + self.transform.a * col_off
                x1 = x0 + self.transform.a * width
                near = np.flatnonzero((strip_bounds[:, 0] <= x1) & (strip_bounds[:, 2] >= x0))
                pieces = _polygonal_cut(strip[near], shapely.box(x0, bottom, x1, top)) if near.size else []
                yield tile, [(int(hits[k]), g) for k, g in zip(near, pieces, strict=True) if not g.is_empty]
                col_off += width
            row_off += height

    def with_chunks(self, chunk_px: int) -> LandscapeGrid:
        return LandscapeGrid(self.crs, self.transform, self.shape, chunk_px, self.areal_scale, self.areal_scale_spread)

    def describe(self) -> dict:
        """JSON-ready description for the manifest."""
        return {
            "crs_wkt": self.crs.to_wkt(),
            "crs": self.crs.to_string(),
            "transform": list(self.transform)[:6],
            "shape": list(self.shape),
            "resolution_m": self.resolution_m,
            "pixel_area_ha": self.pixel_area_ha,
            "areal_scale": self.areal_scale,
            "areal_scale_spread": self.areal_scale_spread,
            "chunk_px": self.chunk_px,
        }


def _split(n: int, size: int) -> tuple[int, ...]:
    full, rest = divmod(n, size)
    return (size,) * full + ((rest,) if rest else ())


def laea_crs(lon: float, lat: float) -> CRS:
    """Lambert azimuthal equal-area on WGS84 centred on (lon, lat), rounded to 0.01° for stable reruns."""
    return CRS.from_proj4(f"+proj=laea +lat_0={round(lat, 2)} +lon_0={round(lon, 2)} +x_0=0 +y_0=0 +datum=WGS84 +units=m +no_defs")


def areal_scale(crs: CRS, boundary: shapely.Geometry, *, samples: int = 21) -> tuple[float, float]:
    """Mean and spread (max - min) of the CRS's areal scale factor over the boundary's bounding box."""
    left, bottom, right, top = boundary.bounds
    xs, ys = np.meshgrid(np.linspace(left, right, samples), np.linspace(bottom, top, samples))
    to_lonlat = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    lon, lat = to_lonlat.transform(xs.ravel(), ys.ravel())
    factors = Proj(crs).get_factors(lon, lat)
    scale = np.asarray(factors.areal_scale, dtype=float)
    return float(scale.mean()), float(scale.max() - scale.min())


def build_grid(
    boundary: shapely.Geometry,
    boundary_crs: CRS,
    *,
    crs_setting: str,
    resolution_m: float | None,
    chunk_px: int,
    source_crs: CRS | None,
    source_transform: Affine | None,
    source_shape: tuple[int, int] | None,
) -> LandscapeGrid:
    """The landscape grid for a boundary and a land-cover source (DESIGN.md §2).

    ``auto``: LAEA on the boundary's centroid, origin aligned to multiples of the resolution.
    ``native``: the source raster's own grid, cut to the window that covers the boundary.
    Anything else is parsed as a CRS (EPSG code, ESRI code, WKT, PROJ string).
    Without a land-cover source (not fetched yet), ``native`` is impossible and ``resolution_m`` is required.
    """
    if source_crs is None and (crs_setting == "native" or resolution_m is None):
        raise GridError("there is no land cover to take the grid from: set grid.crs (auto or a CRS) and grid.resolution_m")
    if crs_setting == "native":
        if source_crs.is_geographic:
            raise GridError(
                f"grid.crs: native keeps the land cover's CRS {source_crs.to_string()}, which is geographic; "
                "use grid.crs: auto so areas are true"
            )
        to_source = Transformer.from_crs(boundary_crs, source_crs, always_xy=True)
        left, bottom, right, top = shapely.transform(boundary, lambda xy: np.column_stack(to_source.transform(*xy.T))).bounds
        inv = ~source_transform
        cols, rows = zip(*(inv @ (x, y) for x, y in ((left, top), (right, bottom))), strict=True)
        col0, row0 = max(0, math.floor(min(cols))), max(0, math.floor(min(rows)))
        col1, row1 = min(source_shape[1], math.ceil(max(cols))), min(source_shape[0], math.ceil(max(rows)))
        if col1 <= col0 or row1 <= row0:
            raise GridError("the boundary does not overlap the land-cover raster (grid.crs: native)")
        crs, transform, shape = source_crs, source_transform @ Affine.translation(col0, row0), (row1 - row0, col1 - col0)
        projected = shapely.transform(boundary, lambda xy: np.column_stack(to_source.transform(*xy.T)))
    else:
        if crs_setting == "auto":
            lonlat = Transformer.from_crs(boundary_crs, "EPSG:4326", always_xy=True)
            geographic = shapely.transform(boundary, lambda xy: np.column_stack(lonlat.transform(*xy.T)))
            centre = geographic.centroid
            crs = laea_crs(centre.x, centre.y)
        else:
            try:
                crs = CRS.from_user_input(crs_setting)
            except Exception as exc:  # pyproj raises CRSError with a long message
                raise GridError(f"grid.crs: {crs_setting!r} is not a CRS pyproj understands ({exc})") from None
            if crs.is_geographic:
                raise GridError(
                    f"grid.crs: {crs_setting} is geographic, so pixel counts are not areas; use grid.crs: auto"
                )
        resolution = resolution_m or _source_resolution_m(source_crs, source_transform, boundary, boundary_crs)
        to_grid = Transformer.from_crs(boundary_crs, crs, always_xy=True)
        projected = shapely.transform(boundary, lambda xy: np.column_stack(to_grid.transform(*xy.T)))
        left, bottom, right, top = projected.bounds
        x0 = math.floor(left / resolution) * resolution
        y1 = math.ceil(top / resolution) * resolution
        width = math.ceil((right - x0) / resolution)
        height = math.ceil((y1 - bottom) / resolution)
        transform = Affine(resolution, 0, x0, 0, -resolution, y1)
        shape = (height, width)
    scale, spread = areal_scale(crs, projected)
    if abs(scale - 1) > EQUAL_AREA_TOLERANCE or spread > EQUAL_AREA_TOLERANCE:
        warnings.warn(
            f"grid CRS {crs.to_string()[:60]} is not equal-area: pixel areas are corrected by its mean areal "
            f"scale {scale:.6f} (spread {spread:.2e} over the landscape); grid.crs: auto avoids this",
            stacklevel=2,
        )
    else:
        scale, spread = 1.0, 0.0
    return LandscapeGrid(crs, transform, shape, chunk_px, scale, spread)


def _source_resolution_m(source_crs: CRS, transform: Affine, boundary: shapely.Geometry, boundary_crs: CRS) -> float:
    """The land cover's pixel size in metres (degrees converted at the boundary's centroid)."""
    if not source_crs.is_geographic:
        return float(round(abs(transform.a), 6))
    lonlat = Transformer.from_crs(boundary_crs, "EPSG:4326", always_xy=True)
    lat = lonlat.transform(boundary.centroid.x, boundary.centroid.y)[1]
    return float(round(abs(transform.a) * 111_320 * math.cos(math.radians(lat)), 3))


def _polygonal_cut(polygons: np.ndarray, box: shapely.Polygon) -> np.ndarray:
    """Each polygon intersected with ``box``, keeping only the polygonal part (a shared edge or corner would
    otherwise come back as a line or point, which a rasteriser burns as pixels)."""
    cut = shapely.intersection(polygons, box)
    for i in np.flatnonzero(~np.isin(shapely.get_type_id(cut), (3, 6))):  # not a (multi)polygon
        parts = [p for p in shapely.get_parts(cut[i]) if shapely.get_type_id(p) in (3, 6)]
        cut[i] = shapely.union_all(parts) if parts else shapely.Polygon()
    return cut
