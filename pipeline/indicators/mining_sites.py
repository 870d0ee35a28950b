"""Mining sites and rivers: per-year site polygons with their attributes, site and river statistics per zone,
and the mined-area estimates of polygon sources (the vector half of the mining indicator, mining.py)."""

from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely
from pyproj import Geod, Transformer

from pipeline import blocks, kernels
from pipeline.config import MiningConfig
from pipeline.indicators.base import Context
from pipeline.zones import LANDSCAPE

CATEGORIES = ("I", "II", "III", "IV")
BUFFER_QUAD_SEGS = 64  # segments per quarter circle of the riparian buffer (mining.py): arcs within 0.03 % of true circles


def geodesic_km(lines: shapely.Geometry | np.ndarray, crs) -> float:
    """Length of (multi)lines, or of an array of them, in km on the WGS84 ellipsoid, whatever the grid CRS: the
    geodesic length of each straight segment between its transformed ends, summed (as
    ``pyproj.Geod.geometry_length``, in one call). Points among them add nothing."""
    if lines is None:
        return 0.0
    segments = _segments(lines)
    if not len(segments):
        return 0.0
    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lon0, lat0 = to_lonlat.transform(segments[:, 0], segments[:, 1])
    lon1, lat1 = to_lonlat.transform(segments[:, 2], segments[:, 3])
    return float(np.sum(Geod(ellps="WGS84").inv(lon0, lat0, lon1, lat1)[2])) / 1000


def site_values(flags: np.ndarray, lc0: np.ndarray | None, rights: np.ndarray, surface: np.ndarray, *,
                natural: np.ndarray, footprint_bits: int) -> np.ndarray:
    """Per pixel of one chunk (``kernels.site_values``): first-year index (1..n_years) * 8 + category (0..3) * 2
    + natural in the baseline year, on pixels of the footprint in any year; 0 elsewhere."""
    was_natural = natural[lc0] if lc0 is not None else np.zeros(rights.shape, bool)
    return kernels.site_values(flags, was_natural, rights, surface, footprint_bits=footprint_bits)


def sites(summaries: list[np.ndarray], chunks: tuple[tuple[int, ...], tuple[int, ...]], ctx: Context,
          cfg: MiningConfig, *, has_landcover: bool) -> tuple[list, dict]:
    """Sites (8-connected mining patches) per year: polygons with attributes, and per-zone site statistics.
    ``summaries``: per year, the chunks' blocks.block_stats of the footprint with the per-pixel ``site_values``
    as values and the outlines traced (mining._count_block)."""
    years = ctx.config.years
    rivers = ctx.vectors.get("rivers")
    # the river segments, then each year's site statistics (vector work without dask) are made in two helper
    # threads while this one makes the next year's polygons (a year's statistics need not wait for the year
    # before's). At 576 Mpx x 2 years two helpers took the mining stage from 15.6-16.0 s to 14.3-14.9 s for
    # 120-160 MB more peak memory (1.71-1.77 GB, under the 2 GB goal); a thread per whole year kept ~500 MB more
    with ThreadPoolExecutor(2) as helper:
        segments = helper.submit(_river_segments, rivers)
        frames, stats_done = [], []
        for year, summary in zip(years, summaries, strict=True):
            frame, geoms = _year_sites(year, summary, chunks, segments, ctx, has_landcover=has_landcover)
            frames.append(frame)
            stats_done.append(helper.submit(site_stats, frame, geoms, segments.result(), year, ctx, cfg))
        stats: dict = {}
        for done in stats_done:
            stats.update(done.result())
    return frames, stats


def _river_segments(rivers: gpd.GeoDataFrame | None) -> Segments | None:
    if rivers is None or not len(rivers):
        return None
    return Segments.of(shapely.union_all(rivers.geometry.to_numpy()))


def _year_sites(year: int, summary: np.ndarray, chunks: tuple, segments: Future, ctx: Context, *,
                has_landcover: bool) -> tuple[gpd.GeoDataFrame, list]:
    """One year's sites (see ``sites``) and their polygons; ``segments``: the river Segments to come (or None)."""
    grid, years = ctx.grid, ctx.config.years
    patches = blocks.patches_from_stats(summary, chunks, neighbourhood=8)
    ids = np.arange(1, patches.n_patches + 1)
    shapes = patches.polygons(ids, grid.transform) if ids.size else {}
    geoms = [shapes[int(i)] for i in ids]
    hist = patches.value_counts[ids].reshape(len(ids), len(years) + 1, 4, 2) if ids.size else np.zeros((0, len(years) + 1, 4, 2))
    first_seen = [years[int(np.flatnonzero(h.sum(axis=(1, 2))[1:])[0])] if h.sum() else year for h in hist]
    category = [CATEGORIES[int(h.sum(axis=(0, 2)).argmax())] for h in hist]
    natural_share = [float(h[:, :, 1].sum() / h.sum()) if h.sum() else math.nan for h in hist]
    river_segments = segments.result()
    distance = (river_segments.distance(geoms).tolist() if river_segments is not None
                else [math.nan] * len(geoms))
    frame = gpd.GeoDataFrame({
        "site_id": ids.astype(np.int64), "year": year, "area_ha": patches.pixel_count[ids] * grid.pixel_area_ha,
        "first_year_seen": first_seen, "distance_to_river_m": distance,
        "was_natural": [s >= 0.5 if has_landcover and not math.isnan(s) else None for s in natural_share],
        "natural_before_pct": [100 * s if has_landcover else math.nan for s in natural_share],
        "category": category,
    }, geometry=geoms, crs=grid.crs)
    for layer in ctx.zones:
        if layer.name != LANDSCAPE:
            frame[layer.name] = blocks.zones_touched_many(geoms, layer, patches=True)
    return frame, geoms


def site_stats(frame: gpd.GeoDataFrame, geoms: list, rivers: Segments | None, year: int, ctx: Context,
               cfg: MiningConfig) -> dict:
    """(metric, layer, zone, year) -> value for mining_sites, median_distance_to_river_m, river_km_affected.

    A site counts in every zone it overlaps (a site across a zone border counts in both). River km affected
    in a zone is the river centre-line inside the zone within affected_distance_m of any site."""
    out = {}
    tree = shapely.STRtree(geoms) if geoms else None
    distances = frame["distance_to_river_m"].to_numpy()
    affected = np.empty(0, dtype=object)  # the affected river pieces
    close = np.asarray(geoms, dtype=object)[distances <= cfg.affected_distance_m] if geoms else []
    if rivers is not None and len(close):  # only sites within the distance can affect a river
        affected = lines_within(rivers, list(close), cfg.affected_distance_m)
    affected_tree = shapely.STRtree(affected)
    for layer in ctx.zones:
        for zone, zone_geom in zip(layer.zone_names, layer.zone_geometries, strict=True):
            hits = tree.query(zone_geom, predicate="intersects") if tree is not None else []
            inside = set(tree.query(zone_geom, predicate="contains").tolist()) if tree is not None else set()
            touching = sorted(i for i in hits if i in inside or shapely.area(shapely.intersection(geoms[i], zone_geom)) > 0)
            out[("mining_sites", layer.name, zone, year)] = float(len(touching))
            if rivers is not None:
                if touching:
                    out[("median_distance_to_river_m", layer.name, zone, year)] = float(np.median(distances[touching]))
                out[("river_km_affected", layer.name, zone, year)] = geodesic_km(
                    _clipped(affected, affected_tree, zone_geom), ctx.grid.crs)
    return out


def _clipped(lines: np.ndarray, tree: shapely.STRtree, polygon: shapely.Geometry) -> np.ndarray:
    """The parts of ``lines`` inside ``polygon``: lines it contains whole, the others intersected with it."""
    inside = tree.query(polygon, predicate="contains")
    crossing = np.setdiff1d(tree.query(polygon, predicate="intersects"), inside)
    return np.concatenate([lines[inside], shapely.intersection(lines[crossing], polygon)])


def lines_within(lines: shapely.Geometry | Segments, polygons: list, distance_m: float) -> np.ndarray:
    """The parts of ``lines`` within ``distance_m`` of any of ``polygons``, exactly (no buffer polygon), as an
    array of straight LineStrings that do not overlap.

    A point is within the distance of a polygon when it lies inside it or within the distance of one of its
    edges, i.e. inside the capsule (rectangle and two discs) around that edge. A capsule is convex, so it cuts
    each line segment in one interval of the segment's parameter, found by solving the linear and quadratic
    inequalities of its three parts; the intervals are merged per segment, so no stretch of river counts twice.
    A gap between those intervals is farther than the distance from every edge, so it crosses no polygon
    boundary: it is inside a polygon (a river deeper inside a site than the distance) exactly when its
    midpoint is. No union of the polygons is needed: an edge of one polygon inside another is in the union too.
    Units: the grid CRS (metres). Replaces a 64-segment buffer, which fell short of the true circle by ~2e-5."""
    lines = lines if isinstance(lines, Segments) else Segments.of(lines)
    segments = lines.coords
    parts = shapely.get_parts(np.asarray(polygons, dtype=object))
    if not len(segments) or not len(parts):
        return np.empty(0, dtype=object)
    edges, edge_start = _edges_by_part(parts)
    reach = shapely.box(*(shapely.bounds(parts) + [-distance_m, -distance_m, distance_m, distance_m]).T)
    part_i, seg_i = lines.tree.query(reach)  # boxes within the distance; near_intervals tests each edge
    seg_i, lo, hi = _merged(*kernels.near_intervals(segments, edges, edge_start, part_i, seg_i, distance_m))
    near = np.unique(lines.tree.query(parts)[1])  # segments whose box meets a site's box
    sites = shapely.STRtree(parts)
    g_seg, g_lo, g_hi = _gaps(seg_i, lo, hi, near)
    midpoints = segments[g_seg, :2] + ((g_lo + g_hi) / 2)[:, None] * (segments[g_seg, 2:] - segments[g_seg, :2])
    inside = np.unique(sites.query(shapely.points(midpoints), predicate="within")[0])
    return _sub_segments(segments, *_merged(np.r_[seg_i, g_seg[inside]], np.r_[lo, g_lo[inside]],
                                            np.r_[hi, g_hi[inside]]))


@dataclass(frozen=True)
class Segments:
    """Every straight segment of a (multi)line geometry, prepared once for many queries (one per year):
    coordinates (n, 4) x0, y0, x1, y1, the segments as LineStrings, and an STRtree of them."""

    coords: np.ndarray
    lines: np.ndarray
    tree: shapely.STRtree

    @classmethod
    def of(cls, geom: shapely.Geometry) -> Segments:
        coords = _segments(geom)
        lines = shapely.linestrings(coords.reshape(-1, 2, 2)) if len(coords) else np.empty(0, dtype=object)
        return cls(coords, lines, shapely.STRtree(lines))

    def distance(self, geoms: list) -> np.ndarray:
        """Distance from each geometry to the nearest segment, i.e. to the lines (map units; NaN without lines)."""
        out = np.full(len(geoms), np.nan)
        if len(geoms) and len(self.lines):
            (index, _), dist = self.tree.query_nearest(np.asarray(geoms, dtype=object), return_distance=True,
                                                       all_matches=False)
            out[index] = dist
        return out


def _merged(seg_i: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Overlapping or touching [lo, hi] intervals of the same segment merged; sorted by segment, then lo."""
    order = np.lexsort((lo, seg_i))
    return kernels.merge_intervals(seg_i[order].astype(np.int64), lo[order].astype(np.float64),
                                   hi[order].astype(np.float64))


def _gaps(seg_i: np.ndarray, lo: np.ndarray, hi: np.ndarray, segments: np.ndarray) -> tuple[np.ndarray, ...]:
    """The parts of [0, 1] outside the merged intervals (see _merged) of each of ``segments``."""
    first = np.r_[True, seg_i[1:] != seg_i[:-1]] if len(seg_i) else np.zeros(0, bool)
    last = np.r_[seg_i[1:] != seg_i[:-1], True] if len(seg_i) else np.zeros(0, bool)
    bare = np.setdiff1d(segments, seg_i)
    g_seg = np.r_[seg_i, seg_i[last], bare]
    g_lo = np.r_[np.where(first, 0.0, np.r_[0.0, hi[:-1]]), hi[last], np.zeros(len(bare))]
    g_hi = np.r_[lo, np.ones(int(last.sum())), np.ones(len(bare))]
    keep = (g_lo < g_hi) & np.isin(g_seg, segments)
    return g_seg[keep], g_lo[keep], g_hi[keep]


def _segments(geom: shapely.Geometry) -> np.ndarray:
    """(n, 4) array x0, y0, x1, y1 of every straight segment of a (multi)line or ring geometry."""
    coords, index = shapely.get_coordinates(shapely.get_parts(geom), return_index=True)
    same = index[1:] == index[:-1]
    out = np.hstack([coords[:-1], coords[1:]])[same]
    return out[(out[:, 0] != out[:, 2]) | (out[:, 1] != out[:, 3])]


def _edges_by_part(parts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every boundary edge of polygons ``parts`` ((n, 4) x0, y0, x1, y1, part by part) and where each part's
    edges start (int64 (len(parts) + 1,))."""
    rings, ring_part = shapely.get_parts(shapely.boundary(parts), return_index=True)
    coords, index = shapely.get_coordinates(rings, return_index=True)
    same = index[1:] == index[:-1]
    edges = np.hstack([coords[:-1], coords[1:]])[same]
    edge_part = ring_part[index[:-1][same]]
    real = (edges[:, 0] != edges[:, 2]) | (edges[:, 1] != edges[:, 3])
    return edges[real], np.searchsorted(edge_part[real], np.arange(len(parts) + 1))


def _sub_segments(segments: np.ndarray, seg_i: np.ndarray, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
    """Merged [t0, t1] intervals (see _merged) of segments as an array of the covered sub-segments (LineStrings)."""
    if not len(seg_i):
        return np.empty(0, dtype=object)
    p0, v = segments[seg_i, :2], segments[seg_i, 2:] - segments[seg_i, :2]
    return shapely.linestrings(np.stack([p0 + t0[:, None] * v, p0 + t1[:, None] * v], axis=1))


def mined_area_rows(ctx: Context, observed: np.ndarray, names: list[str]) -> list[dict]:
    """mined_area_ha_source_<name>: a layer's own mined-area attribute summed up to each year, each polygon
    shared among zones by the share of its area inside them (as Amazon Mining Watch's own zone totals)."""
    rows = []
    years = ctx.config.years
    for layer_cfg in ctx.config.mining_layers:
        frame = ctx.vectors.get(f"mining:{layer_cfg.name}")
        if frame is None or "mined_area_ha" not in frame.columns:
            continue
        s = names.index(layer_cfg.name)
        area = frame.geometry.area.to_numpy()
        for layer in ctx.zones:
            for zone, zone_geom in zip(layer.zone_names, layer.zone_geometries, strict=True):
                share = shapely.area(shapely.intersection(frame.geometry.to_numpy(), zone_geom)) / np.where(area > 0, area, 1)
                for t, year in enumerate(years):
                    if observed[s, t]:
                        value = float((frame["mined_area_ha"].to_numpy() * share)[frame["year"].to_numpy() <= year].sum())
                        rows.append({"metric": f"mined_area_ha_source_{layer_cfg.name}", "unit": "ha", "year": year,
                                     "zone_layer": layer.name, "zone": zone, "value": value})
    return rows


def empty_sites(ctx: Context) -> gpd.GeoDataFrame:
    columns = ["site_id", "year", "area_ha", "first_year_seen", "distance_to_river_m", "was_natural",
               "natural_before_pct", "category"]
    return gpd.GeoDataFrame({c: [] for c in columns}, geometry=[], crs=ctx.grid.crs)


