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
BUFFER_QUAD_SEGS = 64  # segments per quarter circle in distance buffers: arcs within 0.03 % of true circles


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
        near = shapely.union_all(shapely.buffer(close, cfg.affected_distance_m, quad_segs=BUFFER_QUAD_SEGS))
        affected = shapely.intersection(river_lines, near)
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


