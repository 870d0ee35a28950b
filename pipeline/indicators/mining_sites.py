"""Mining sites and rivers: per-year site polygons with their attributes, site and river statistics per zone,
and the mined-area estimates of polygon sources (the vector half of the mining indicator, mining.py)."""

from __future__ import annotations

import math

import dask.array as da
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Geod, Transformer

from pipeline import blocks, kernels
from pipeline.config import MiningConfig
from pipeline.indicators.base import Context
from pipeline.zones import LANDSCAPE

CATEGORIES = ("I", "II", "III", "IV")
BUFFER_QUAD_SEGS = 64  # segments per quarter circle of the riparian buffer (mining.py): arcs within 0.03 % of true circles


def geodesic_km(geom: shapely.Geometry, crs) -> float:
    """Length of (multi)lines in km on the WGS84 ellipsoid, whatever the grid CRS."""
    if geom is None or geom.is_empty:
        return 0.0
    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lonlat = shapely.transform(geom, lambda xy: np.column_stack(to_lonlat.transform(xy[:, 0], xy[:, 1])))
    return Geod(ellps="WGS84").geometry_length(lonlat) / 1000


def site_values(flags: np.ndarray, lc0: np.ndarray | None, rights: np.ndarray, surface: np.ndarray, *,
                natural: np.ndarray, footprint_bits: int) -> np.ndarray:
    """Per pixel of one chunk (``kernels.site_values``): first-year index (1..n_years) * 8 + category (0..3) * 2
    + natural in the baseline year, on pixels of the footprint in any year; 0 elsewhere."""
    was_natural = natural[lc0] if lc0 is not None else np.zeros(rights.shape, bool)
    return kernels.site_values(flags, was_natural, rights, surface, footprint_bits=footprint_bits)


def sites(flags: da.Array, values: da.Array, ctx: Context, cfg: MiningConfig, *, footprint_bits: int,
          has_landcover: bool) -> tuple[list, dict]:
    """Sites (8-connected mining patches) per year: polygons with attributes, and per-zone site statistics.
    ``values`` are the per-pixel ``site_values``."""
    grid, years = ctx.grid, ctx.config.years
    rivers = ctx.vectors.get("rivers")
    river_lines = shapely.union_all(rivers.geometry.to_numpy()) if rivers is not None and len(rivers) else None
    n_values = (len(years) + 1) * 8
    frames, stats = [], {}
    for y, year in enumerate(years):
        patches = blocks.label_patches((flags[y] & footprint_bits) > 0, neighbourhood=8, values=values, n_values=n_values)
        ids = np.arange(1, patches.n_patches + 1)
        shapes = patches.polygons(ids, grid.transform) if ids.size else {}
        geoms = [shapes[int(i)] for i in ids]
        hist = patches.value_counts[ids].reshape(len(ids), len(years) + 1, 4, 2) if ids.size else np.zeros((0, len(years) + 1, 4, 2))
        first_seen = [years[int(np.flatnonzero(h.sum(axis=(1, 2))[1:])[0])] if h.sum() else year for h in hist]
        category = [CATEGORIES[int(h.sum(axis=(0, 2)).argmax())] for h in hist]
        natural_share = [float(h[:, :, 1].sum() / h.sum()) if h.sum() else math.nan for h in hist]
        distance = (shapely.distance(np.asarray(geoms, dtype=object), river_lines).tolist() if river_lines is not None
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
                frame[layer.name] = blocks.zones_touched_many(geoms, layer)
        frames.append(frame)
        stats.update(site_stats(frame, geoms, river_lines, year, ctx, cfg))
    return frames, stats


def site_stats(frame: gpd.GeoDataFrame, geoms: list, river_lines, year: int, ctx: Context, cfg: MiningConfig) -> dict:
    """(metric, layer, zone, year) -> value for mining_sites, median_distance_to_river_m, river_km_affected.

    A site counts in every zone it overlaps (a site across a zone border counts in both). River km affected
    in a zone is the river centre-line inside the zone within affected_distance_m of any site."""
    out = {}
    tree = shapely.STRtree(geoms) if geoms else None
    distances = frame["distance_to_river_m"].to_numpy()
    affected = None
    close = np.asarray(geoms, dtype=object)[distances <= cfg.affected_distance_m] if geoms else []
    if river_lines is not None and len(close):  # only sites within the distance can affect a river
        affected = lines_within(river_lines, list(close), cfg.affected_distance_m)
    for layer in ctx.zones:
        for zone, zone_geom in zip(layer.zone_names, layer.zone_geometries, strict=True):
            hits = tree.query(zone_geom, predicate="intersects") if tree is not None else []
            touching = sorted(i for i in hits if shapely.area(shapely.intersection(geoms[i], zone_geom)) > 0)
            out[("mining_sites", layer.name, zone, year)] = float(len(touching))
            if river_lines is not None:
                if touching:
                    out[("median_distance_to_river_m", layer.name, zone, year)] = float(np.median(distances[touching]))
                out[("river_km_affected", layer.name, zone, year)] = (
                    geodesic_km(shapely.intersection(affected, zone_geom), ctx.grid.crs) if affected is not None else 0.0)
    return out


def lines_within(lines: shapely.Geometry, polygons: list, distance_m: float) -> shapely.Geometry:
    """The parts of ``lines`` within ``distance_m`` of any of ``polygons``, exactly (no buffer polygon).

    A point is within the distance of a polygon when it lies inside it or within the distance of one of its
    edges, i.e. inside the capsule (rectangle and two discs) around that edge. A capsule is convex, so it cuts
    each line segment in one interval of the segment's parameter, found by solving the linear and quadratic
    inequalities of its three parts; the intervals are merged per segment, so no stretch of river counts twice.
    Units: the grid CRS (metres). Replaces a 64-segment buffer, which fell short of the true circle by ~2e-5."""
    segments = _segments(lines)
    union = shapely.union_all(polygons)
    edges = _segments(shapely.boundary(union))
    if not len(segments) or not len(edges):
        return shapely.MultiLineString()
    segment_lines = shapely.linestrings(segments.reshape(-1, 2, 2))
    tree = shapely.STRtree(shapely.linestrings(edges.reshape(-1, 2, 2)))
    seg_i, edge_i = tree.query(segment_lines, predicate="dwithin", distance=distance_m)
    lo, hi = capsule_intervals(segments[seg_i], edges[edge_i], distance_m)
    # inside a site the distance is 0 (this matters where a river runs deeper than the distance inside a site)
    site_i, inside_i = shapely.STRtree(segment_lines).query(shapely.get_parts(union), predicate="intersects")
    pieces = shapely.get_parts(shapely.intersection(segment_lines[inside_i], shapely.get_parts(union)[site_i]),
                               return_index=True)
    starts, index = shapely.get_coordinates(pieces[0][shapely.get_type_id(pieces[0]) == 1], return_index=True)
    if len(starts):
        owner = inside_i[pieces[1][shapely.get_type_id(pieces[0]) == 1]][index]
        t = np.einsum("ij,ij->i", starts - segments[owner, :2], segments[owner, 2:] - segments[owner, :2])
        t /= np.einsum("ij,ij->i", segments[owner, 2:] - segments[owner, :2], segments[owner, 2:] - segments[owner, :2])
        first = np.r_[True, index[1:] != index[:-1]]
        last = np.r_[index[1:] != index[:-1], True]
        in_lo = np.minimum.reduceat(t, np.flatnonzero(first))
        in_hi = np.maximum.reduceat(t, np.flatnonzero(first))
        seg_i = np.r_[seg_i, owner[last]]
        lo, hi = np.r_[lo, np.clip(in_lo, 0, 1)], np.r_[hi, np.clip(in_hi, 0, 1)]
    keep = lo < hi
    return _sub_segments(segments, seg_i[keep], lo[keep], hi[keep])


def _segments(geom: shapely.Geometry) -> np.ndarray:
    """(n, 4) array x0, y0, x1, y1 of every straight segment of a (multi)line or ring geometry."""
    coords, index = shapely.get_coordinates(shapely.get_parts(geom), return_index=True)
    same = index[1:] == index[:-1]
    out = np.hstack([coords[:-1], coords[1:]])[same]
    return out[(out[:, 0] != out[:, 2]) | (out[:, 1] != out[:, 3])]


def capsule_intervals(segments: np.ndarray, edges: np.ndarray, distance_m: float) -> tuple[np.ndarray, np.ndarray]:
    """For segment i, P(t) = P0 + t (P1 - P0), the interval [lo, hi] of t in [0, 1] where P(t) is within
    ``distance_m`` of edge i (lo >= hi: no such t). Pure numpy; one row per (segment, edge) pair."""
    p0, v = segments[:, :2], segments[:, 2:] - segments[:, :2]
    a, u = edges[:, :2], edges[:, 2:] - edges[:, :2]
    lo, hi = np.full(len(p0), np.inf), np.full(len(p0), -np.inf)
    vv = np.einsum("ij,ij->i", v, v)
    for centre in (a, edges[:, 2:]):  # the discs at both ends: |P0 + t v - C|^2 <= d^2
        w = p0 - centre
        b, c = 2 * np.einsum("ij,ij->i", v, w), np.einsum("ij,ij->i", w, w) - distance_m**2
        disc = b * b - 4 * vv * c
        root = np.sqrt(np.where(disc >= 0, disc, 0))
        hit = disc >= 0
        lo = np.where(hit, np.minimum(lo, (-b - root) / (2 * vv)), lo)
        hi = np.where(hit, np.maximum(hi, (-b + root) / (2 * vv)), hi)
    length = np.hypot(u[:, 0], u[:, 1])
    w = p0 - a
    # rectangle: along = (P - A).u / L in [0, L]; across = cross(u, P - A) / L in [-d, d]; both linear in t
    r_lo, r_hi = np.full(len(p0), -np.inf), np.full(len(p0), np.inf)
    for value0, slope, low, high in (
        (np.einsum("ij,ij->i", w, u) / length, np.einsum("ij,ij->i", v, u) / length, 0.0, length),
        ((u[:, 0] * w[:, 1] - u[:, 1] * w[:, 0]) / length, (u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]) / length,
         -distance_m, distance_m),
    ):
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = (low - value0) / slope, (high - value0) / slope
        flat = slope == 0
        inside_flat = (value0 >= low) & (value0 <= high)
        r_lo = np.maximum(r_lo, np.where(flat, np.where(inside_flat, -np.inf, np.inf), np.minimum(t1, t2)))
        r_hi = np.minimum(r_hi, np.where(flat, np.where(inside_flat, np.inf, -np.inf), np.maximum(t1, t2)))
    rect = r_lo < r_hi
    lo, hi = np.where(rect, np.minimum(lo, r_lo), lo), np.where(rect, np.maximum(hi, r_hi), hi)
    return np.clip(lo, 0, 1), np.clip(hi, 0, 1)


def _sub_segments(segments: np.ndarray, seg_i: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> shapely.Geometry:
    """Merged [lo, hi] intervals per segment as one MultiLineString of the covered sub-segments."""
    order = np.lexsort((lo, seg_i))
    seg_i, lo, hi = seg_i[order], lo[order], hi[order]
    pieces = []
    start = 0
    while start < len(seg_i):
        stop = start + np.searchsorted(seg_i[start:], seg_i[start], side="right")
        cur_lo, cur_hi = lo[start], hi[start]
        for t0, t1 in zip(lo[start + 1:stop], hi[start + 1:stop], strict=True):
            if t0 > cur_hi:
                pieces.append((seg_i[start], cur_lo, cur_hi))
                cur_lo, cur_hi = t0, t1
            else:
                cur_hi = max(cur_hi, t1)
        pieces.append((seg_i[start], cur_lo, cur_hi))
        start = stop
    if not pieces:
        return shapely.GeometryCollection()
    index, t0, t1 = (np.array(x) for x in zip(*pieces, strict=True))
    p0, v = segments[index, :2], segments[index, 2:] - segments[index, :2]
    ends = np.stack([p0 + t0[:, None] * v, p0 + t1[:, None] * v], axis=1)
    return shapely.multilinestrings(shapely.linestrings(ends))


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


def _concat(frames):
    return pd.concat(frames, ignore_index=True)


def empty_sites(ctx: Context) -> gpd.GeoDataFrame:
    columns = ["site_id", "year", "area_ha", "first_year_seen", "distance_to_river_m", "was_natural",
               "natural_before_pct", "category"]
    return gpd.GeoDataFrame({c: [] for c in columns}, geometry=[], crs=ctx.grid.crs)


