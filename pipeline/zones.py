"""Zone layers rasterised onto the grid chunk by chunk (DESIGN.md §1, §4).

A zone layer becomes one integer raster of *faces* plus a membership table ``member[face, zone]``:

- polygons that share an ``id_field`` value form one zone;
- where polygons of a layer overlap (two mining titles on the same ground), the layer is cut into the
  faces of its overlay (shapely.polygonize of all ring lines) and each face records every zone that
  covers it. Indicators count pixels per face; ``zone_counts`` turns those into per-zone counts, so a
  pixel inside two titles counts fully in both titles' numbers (per-zone totals of such a layer can
  then exceed the landscape total, which is the truth for overlapping zones);
- face 0 is "in no zone of this layer"; its pixels count only for the landscape.

The ``landscape`` layer (one zone: the whole boundary) is always present.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dask
import dask.array as da
import geopandas as gpd
import numpy as np
import shapely
from rasterio.features import rasterize

from pipeline.grid import LandscapeGrid, Tile

LANDSCAPE = "landscape"


@dataclass(frozen=True, eq=False)
class ZoneLayer:
    """A zone layer on the grid: zone names, face geometries (grid CRS) and face -> zone membership."""

    name: str
    zone_names: tuple[str, ...]
    zone_geometries: tuple[shapely.Geometry, ...] = field(repr=False)  # per zone, clipped to the boundary
    faces: tuple[shapely.Geometry, ...] = field(repr=False)  # face i+1 is faces[i]
    member: np.ndarray = field(repr=False)  # bool (n_faces + 1, n_zones); row 0 = no zone

    @property
    def n_faces(self) -> int:
        return len(self.faces) + 1

    def face_ids(self, grid: LandscapeGrid) -> da.Array:
        """Lazy face id per pixel in the smallest unsigned dtype that holds n_faces, with the grid's chunks;
        rasterised per chunk (pixel-centre rule)."""
        dtype = np.min_scalar_type(self.n_faces)
        rows = []
        for tile, pieces in grid.tile_pieces(list(self.faces)):
            if tile.ix == 0:
                rows.append([])
            shapes = tuple((piece, i + 1) for i, piece in pieces)
            task = dask.delayed(_rasterize_faces, pure=False)(shapes, grid, tile, dtype)  # no hashing of geometries
            rows[-1].append(da.from_delayed(task, shape=(tile.height, tile.width), dtype=dtype))
        return da.block(rows)

    def zone_counts(self, face_counts: np.ndarray) -> np.ndarray:
        """Per-face counts (axis 0 = face) -> per-zone counts (axis 0 = zone). Integer arithmetic."""
        flat = face_counts.reshape(face_counts.shape[0], -1)
        return (self.member.T.astype(np.int64) @ flat).reshape((len(self.zone_names), *face_counts.shape[1:]))


def _rasterize_faces(shapes: tuple, grid: LandscapeGrid, tile: Tile, dtype: np.dtype) -> np.ndarray:
    if not shapes:
        return np.zeros((tile.height, tile.width), dtype=dtype)
    if len(shapes) == 1 and grid.covers_tile(shapes[0][0], tile):  # a chunk inside one face (most chunks)
        return np.full((tile.height, tile.width), shapes[0][1], dtype=dtype)
    return rasterize(
        shapes, out_shape=(tile.height, tile.width), transform=grid.tile_transform(tile.row_off, tile.col_off),
        fill=0, dtype=dtype,
    )


def landscape_layer(name: str, boundary: shapely.Geometry) -> ZoneLayer:
    """The whole-landscape zone layer (one zone, one face: the boundary)."""
    return ZoneLayer(LANDSCAPE, (name,), (boundary,), (boundary,), np.array([[False], [True]]))


def build_zone_layer(name: str, frame: gpd.GeoDataFrame, id_field: str, boundary: shapely.Geometry, grid_crs) -> ZoneLayer:
    """Zones of one layer clipped to the boundary, with its overlay faces when polygons overlap.

    Zones that do not reach inside the boundary are dropped. Invalid polygons are repaired (make_valid).
    """
    frame = frame.to_crs(grid_crs)
    geoms = shapely.make_valid(frame.geometry.to_numpy())
    ids = frame[id_field].astype(str).to_numpy()
    clipped = shapely.intersection(geoms, boundary)
    keep = ~shapely.is_empty(clipped) & (shapely.area(clipped) > 0)
    clipped, ids = clipped[keep], ids[keep]
    clipped = np.array([_polygonal(g) for g in clipped], dtype=object)
    zone_names = tuple(sorted(set(ids)))
    zone_geoms = tuple(shapely.union_all(clipped[ids == z]) for z in zone_names)
    if not _overlaps(list(zone_geoms)):
        member = np.zeros((len(zone_names) + 1, len(zone_names)), dtype=bool)
        member[np.arange(1, len(zone_names) + 1), np.arange(len(zone_names))] = True
        return ZoneLayer(name, zone_names, zone_geoms, zone_geoms, member)
    # Overlay: faces of all rings, each with the set of zones whose polygon contains it.
    faces = shapely.get_parts(shapely.polygonize(shapely.get_parts(shapely.union_all(shapely.boundary(list(zone_geoms))))))
    points = shapely.point_on_surface(faces)
    tree = shapely.STRtree(list(zone_geoms))
    face_idx, zone_idx = tree.query(points, predicate="within")
    covered = np.unique(face_idx)
    faces = faces[covered]
    remap = np.full(len(points), -1)
    remap[covered] = np.arange(len(covered))
    member = np.zeros((len(faces) + 1, len(zone_names)), dtype=bool)
    member[remap[face_idx] + 1, zone_idx] = True
    return ZoneLayer(name, zone_names, zone_geoms, tuple(faces), member)


def _polygonal(geom: shapely.Geometry) -> shapely.Geometry:
    """Polygonal part of a geometry (intersections can add lines or points)."""
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def _overlaps(geoms: list[shapely.Geometry]) -> bool:
    """True when two zones share area (touching edges do not count)."""
    if len(geoms) < 2:
        return False
    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms, predicate="intersects")
    pairs = left < right
    for i, j in zip(left[pairs], right[pairs], strict=True):
        if shapely.area(shapely.intersection(geoms[i], geoms[j])) > 1e-6 * min(geoms[i].area, geoms[j].area):
            return True
    return False
