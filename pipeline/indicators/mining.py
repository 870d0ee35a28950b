"""Alluvial mining footprint: where mining is, what it replaced, how close to rivers, under which rights
(DESIGN.md §4).

Inputs : class indices (year, y, x) when land cover exists (else None); ctx.vectors: "mining:<name>" yearly
         polygons with a `year` column, "rivers", "mining_rights", "surface_rights"; zone face ids.
Outputs: mining.csv, per year: mining_ha (all sources together), mining_ha_source_<name>, agreement between
         sources (mining_in_all_sources_ha, mining_only_<name>_ha), riparian_mining_ha/_pct, mining_sites,
         median_distance_to_river_m, river_km_affected (km of river inside the zone within affected_distance_m
         of any site), mining_category_<I..IV>_ha (or with/without rights);
         per period: new_mining_ha, mining_on_natural_ha (by ecosystem of the earlier year); per zone, and
         for every zone layer also the zone "(outside all zones)" (e.g. mining outside any title).
         mining.gpkg layer `sites`: one polygon per 8-connected site and year.

Sources (at most 8). Legend classes flagged `mining` (land cover), each mining polygon layer, and each mining raster mask
(``mining_rasters``: a file per year or a band per year, aligned onto the grid like land cover; a year
without a file is not observed). A layer of yearly increments
(Amazon Mining Watch) gives the footprint of year Y as the union of its polygons of years <= Y; a layer only
observes years from its first year on (earlier years are "not observed", not zero). The footprint used for
every metric is the union of the sources observing that year.

Persistence. With min_persistence_years = k, a pixel counts as mining in year Y of a source only if Y lies in
a run of at least k consecutive observed years (the configured assessment years) in which that source maps
it as mining: one-year flicker is dropped, and mining seen only in the last year waits for confirmation.

Formalization (planetGOLD Peru): I = inside mining rights and surface rights, II = mining rights only,
III = surface rights only, IV = neither; with one rights layer only, that dimension alone. Areas are per
pixel; a site's category is the category of most of its pixels.
"""

from __future__ import annotations

import math

import dask
import dask.array as da
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import xarray as xr
from rasterio.features import rasterize

from pipeline import blocks, kernels
from pipeline.config import ECOSYSTEMS, MiningConfig
from pipeline.grid import LandscapeGrid, Tile
from pipeline.indicators import mining_sites
from pipeline.indicators.base import ALL_NATURAL, Context, IndicatorResult, tidy
from pipeline.zones import LANDSCAPE

NAME = "mining"
NEEDS_LANDCOVER = False
SITE_LAYER = "sites"
ZONE_METRICS = ("mining_ha", "new_mining_ha", "riparian_mining_pct", "mining_sites")
OUTSIDE_ZONES = "(outside all zones)"
CATEGORIES = mining_sites.CATEGORIES
BUFFER_QUAD_SEGS = mining_sites.BUFFER_QUAD_SEGS


# ------------------------------------------------------------------------------------------ kernels
def persistent(mining: np.ndarray, observed: np.ndarray, k: int) -> np.ndarray:
    """Keep mining pixels inside runs of >= k consecutive observed years. mining: bool (year, ...);
    observed: bool (year,) — unobserved years break nothing and never count."""
    if k <= 1:
        return mining & observed[:, None, None]
    idx = np.flatnonzero(observed)
    seq = mining[idx]
    forward = np.zeros(seq.shape, np.int32)
    backward = np.zeros(seq.shape, np.int32)
    for t in range(len(idx)):
        forward[t] = np.where(seq[t], (forward[t - 1] if t else 0) + 1, 0)
    for t in range(len(idx) - 1, -1, -1):
        backward[t] = np.where(seq[t], (backward[t + 1] if t + 1 < len(idx) else 0) + 1, 0)
    out = np.zeros(mining.shape, bool)
    out[idx] = seq & (forward + backward - 1 >= k)
    return out


def first_year_index(shapes: list[tuple[shapely.Geometry, int]], years: list[int], *, cumulative: bool,
                     transform, shape: tuple[int, int]) -> np.ndarray:
    """Per pixel, 1 + the index of the first configured year whose footprint covers it (0 = never), from
    (polygon, year) pairs of yearly increments (``cumulative``): a polygon of year L covers every configured
    year >= L. For layers of whole yearly footprints use ``year_bits``."""
    if not cumulative:
        raise ValueError("first_year_index describes increments only; use year_bits for yearly footprints")
    if not shapes:
        return np.zeros(shape, np.uint8)
    burn = []
    for geom, year in shapes:
        index = np.searchsorted(years, year)  # first configured year >= the polygon's year
        if index < len(years):
            burn.append((geom, int(index) + 1))
    if not burn:
        return np.zeros(shape, np.uint8)
    burn.sort(key=lambda item: -item[1])  # earliest year burnt last, so it wins
    return rasterize(burn, out_shape=shape, transform=transform, fill=0, dtype=np.uint8)


def year_bits(shapes: list[tuple[shapely.Geometry, int]], years: list[int], *, cumulative: bool, transform,
              shape: tuple[int, int]) -> np.ndarray:
    """Per pixel, bit t set (uint64) when the layer maps mining in configured year ``years[t]``.

    ``cumulative`` (yearly increments, e.g. Amazon Mining Watch): a polygon of year L counts in every year >= L.
    Otherwise each year's polygons are that year's whole footprint: a polygon counts in its own year only
    (and in no configured year when its year is not one of them)."""
    if cumulative:
        first = first_year_index(shapes, years, cumulative=True, transform=transform, shape=shape).astype(np.uint64)
        all_years = np.uint64((1 << len(years)) - 1)
        return np.where(first > 0, all_years & ~((np.uint64(1) << (first - np.uint64(1))) - np.uint64(1)), np.uint64(0))
    out = np.zeros(shape, np.uint64)
    for t, year in enumerate(years):
        geoms = [g for g, y in shapes if y == year]
        if geoms:
            hit = rasterize([(g, 1) for g in geoms], out_shape=shape, transform=transform, fill=0, dtype=np.uint8)
            out |= hit.astype(np.uint64) << np.uint64(t)
    return out


def _layer_block(shapes: tuple, grid: LandscapeGrid, tile: Tile, years: tuple[int, ...], cumulative: bool) -> np.ndarray:
    return year_bits(list(shapes), list(years), cumulative=cumulative, shape=(tile.height, tile.width),
                     transform=grid.tile_transform(tile.row_off, tile.col_off))


def _mask_block(shapes: tuple, grid: LandscapeGrid, tile: Tile,
                box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Bool mask of ``shapes`` over a chunk, or over the window ``box`` (first row, last row + 1, first column,
    last column + 1) of it."""
    r0, r1, c0, c1 = box if box is not None else (0, tile.height, 0, tile.width)
    shape = (r1 - r0, c1 - c0)
    if not shapes or 0 in shape:
        return np.zeros(shape, bool)
    if any(grid.covers_tile(g, tile) for g in shapes):
        return np.ones(shape, bool)
    return rasterize([(g, 1) for g in shapes], out_shape=shape, fill=0, dtype=np.uint8,
                     transform=grid.tile_transform(tile.row_off + r0, tile.col_off + c0)).astype(bool)


def per_chunk(grid: LandscapeGrid, geoms: list[shapely.Geometry], make, dtype, **kwargs) -> da.Array:
    """A lazy raster built per chunk by ``make(shapes, grid, tile, **kwargs)`` from the geometries (with any
    payload) that intersect the chunk; chunks that no geometry reaches cost nothing."""
    plain = [g[0] if isinstance(g, tuple) else g for g in geoms]
    tree = shapely.STRtree(plain) if plain else None
    rows = []
    for tile in grid.tiles():
        if tile.ix == 0:
            rows.append([])
        hits = sorted(tree.query(grid.tile_box(tile), predicate="intersects")) if tree is not None else []
        task = dask.delayed(make, pure=False)(tuple(geoms[i] for i in hits), grid, tile, **kwargs)  # no hashing of geometries
        rows[-1].append(da.from_delayed(task, shape=(tile.height, tile.width), dtype=dtype))
    return da.block(rows)


def source_flags(lc: np.ndarray | None, inside: np.ndarray, *others: np.ndarray, mining_table: np.ndarray | None,
                 observed: np.ndarray, k: int, n_layers: int | None = None) -> np.ndarray:
    """One chunk: bit s of each (year, y, x) value is set when source s maps mining there (after persistence).
    Sources: land cover first (when given), then the polygon layers (2-D year bits, see year_bits), then the
    raster masks ((year, y, x) booleans); ``n_layers`` tells them apart (default: all are layers)."""
    n_years = observed.shape[1]
    n_layers = len(others) if n_layers is None else n_layers
    flags = np.zeros((n_years, *inside.shape), np.uint8)
    sources = []
    if lc is not None and k <= 1:  # nothing to filter: one compiled pass (the common case)
        flags = kernels.class_bits(lc, mining_table, inside, observed[0])
        sources.append(None)
    elif lc is not None:
        sources.append(kernels.lookup(mining_table, lc))
    for bits in others[:n_layers]:
        shifts = np.arange(n_years, dtype=np.uint64)[:, None, None]
        sources.append(((bits[None] >> shifts) & np.uint64(1)).astype(bool))
    sources += [mask.astype(bool) for mask in others[n_layers:]]
    for s, mining in enumerate(sources):
        if mining is None:  # land cover, set above
            continue
        kept = persistent(mining & inside[None], observed[s], k)
        flags |= kept.astype(np.uint8) << s
    return flags


# ------------------------------------------------------------------------------------------ counts
def _flags_block(*arrays: np.ndarray, has_landcover: bool, mining_table: np.ndarray, observed: np.ndarray,
                 k: int, n_layers: int) -> np.ndarray:
    """map_blocks adapter: (land cover,) inside[None], layers[None]..., raster masks... -> source_flags."""
    lc = arrays[0] if has_landcover else None
    rest = arrays[1:] if has_landcover else arrays
    layers = [a[0] for a in rest[1:1 + n_layers]]
    return source_flags(lc, rest[0][0], *layers, *rest[1 + n_layers:], mining_table=mining_table, observed=observed,
                        k=k, n_layers=n_layers)


def _counts_block(flags: np.ndarray, lc: np.ndarray | None, riparian: np.ndarray, rights: np.ndarray,
                  surface: np.ndarray, *faces: np.ndarray, n_faces: tuple[int, ...], n_sources: int,
                  pairs: tuple, eco_of_class: np.ndarray | None, n_eco: int,
                  footprint_bits: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """One chunk, per zone layer: year counts (n_faces, n_years, cols) and period counts (n_faces, n_periods, cols).

    Year columns: footprint, each source, in all sources, riparian, categories I..IV.
    Period columns: new mining, then mining on natural land by ecosystem of the earlier year (n_eco).
    """
    return [kernels.mining_counts(flags, lc, riparian, rights, surface, face, n_faces=nf, n_sources=n_sources,
                                  pairs=pairs, eco_of_class=eco_of_class, n_eco=n_eco, footprint_bits=footprint_bits)
            for face, nf in zip(faces, n_faces, strict=True)]


# ------------------------------------------------------------------------------------------ compute
def compute(stack: xr.DataArray | None, ctx: Context) -> IndicatorResult:
    """Mining footprint metrics for every year, period and zone, and the mining sites layer."""
    cfg: MiningConfig = ctx.config.indicators.mining  # type: ignore[assignment]
    grid, legend, years = ctx.grid, ctx.legend, ctx.config.years
    periods = ctx.config.periods()
    pairs = tuple((years.index(a), years.index(b)) for a, b in periods)
    names, observed, layers, rasters, footprint_bits = _sources(stack, ctx, cfg)
    inside = ctx.face_ids[LANDSCAPE] > 0
    lc = stack.data.rechunk((len(years), *grid.chunks)) if stack is not None else None
    eco_of_class = legend.ecosystem.astype(np.int64) if lc is not None else None
    lc_is_source = "landcover" in names  # land cover on disk still tells what mining replaced when it is not
    arrays = [*([lc] if lc_is_source else []), inside[None], *(layer[None] for layer in layers),
              *(r.rechunk((len(years), *grid.chunks)) for r in rasters)]
    flags = da.map_blocks(_flags_block, *arrays, has_landcover=lc_is_source, n_layers=len(layers),
                          mining_table=legend.mining, observed=observed, k=cfg.min_persistence_years,
                          dtype=np.uint8, chunks=((len(years),), *grid.chunks))
    masks = [_tile_shapes(ctx, polygons) for polygons in (_riparian_zone(ctx, cfg), _dissolved(ctx, "mining_rights"),
                                                          _dissolved(ctx, "surface_rights"))]
    counts, site_summaries = _count(flags, lc, masks, ctx, n_sources=len(names), pairs=pairs,
                                    eco_of_class=eco_of_class, footprint_bits=footprint_bits)
    site_frames, site_values = mining_sites.sites(site_summaries, flags.chunks[1:], ctx, cfg,
                                                  has_landcover=lc is not None)
    rows = _rows(counts, site_values, names, observed, ctx, cfg, has_landcover=lc is not None)
    rows += mining_sites.mined_area_rows(ctx, observed, names)
    not_computed = () if lc is not None else (
        {"metric": "mining_on_natural_ha, sites.was_natural", "reason": "needs land cover, which is not on disk yet"},)
    if lc is None and cfg.landcover_source:
        not_computed += ({"metric": "mining_ha_source_landcover", "reason": "no land cover on disk yet"},)
    table = tidy(rows, landscape=ctx.config.name, indicator=NAME)
    sites = gpd.GeoDataFrame(pd.concat(site_frames, ignore_index=True), geometry="geometry", crs=grid.crs) if site_frames else mining_sites.empty_sites(ctx)
    return IndicatorResult(table=table, features={SITE_LAYER: sites}, zone_metrics=ZONE_METRICS,
                           not_computed=not_computed)


def _sources(stack, ctx: Context, cfg: MiningConfig) -> tuple[list[str], np.ndarray, list[da.Array], list[da.Array], int]:
    """Source names, observed[source, year], the first-year rasters of the polygon layers, the (year, y, x)
    raster masks, and the bit mask of the sources that make the footprint (mined-surface sources; all
    sources when there is none)."""
    years = ctx.config.years
    names, observed, layers, surface = [], [], [], []
    if stack is not None and cfg.landcover_source and ctx.legend.mining.any():
        names.append("landcover")
        observed.append(np.ones(len(years), bool))
        surface.append(True)
    for layer_cfg in ctx.config.mining_layers:
        frame = ctx.vectors.get(f"mining:{layer_cfg.name}")
        if frame is None:
            continue
        first = int(frame["year"].min()) if len(frame) else math.inf
        names.append(layer_cfg.name)
        if layer_cfg.cumulative_increments:  # increments observe every year from their first layer on
            observed.append(np.array([y >= first for y in years]))
        else:  # whole yearly footprints observe only the years they have a layer for
            observed.append(np.isin(years, frame["year"].unique()))
        surface.append(layer_cfg.footprint)
        shapes = [(g, int(y)) for g, y in zip(frame.geometry, frame["year"], strict=True)]
        layers.append(per_chunk(ctx.grid, shapes, _layer_block, np.uint64, years=tuple(years),
                                cumulative=layer_cfg.cumulative_increments))
    rasters = []
    for raster_cfg in ctx.config.mining_rasters:
        seen, mask = ctx.rasters[f"mining:{raster_cfg.name}"]
        names.append(raster_cfg.name)
        observed.append(np.asarray(seen, bool))
        surface.append(raster_cfg.footprint)
        rasters.append(mask)
    bits = sum(1 << s for s, is_surface in enumerate(surface) if is_surface) or (1 << len(names)) - 1
    return names, np.array(observed, bool).reshape(len(names), len(years)), layers, rasters, bits


def _riparian_zone(ctx: Context, cfg: MiningConfig) -> list[shapely.Geometry]:
    """The riparian zone as the buffer of each river line, not dissolved: rasterised together they burn the
    pixels their union would (a pixel centre inside any buffer), without a landscape-wide union (1.6 s at
    144 Mpx, one thread)."""
    rivers = ctx.vectors.get("rivers")
    if rivers is None or rivers.empty:
        return []
    return list(rivers.geometry.buffer(cfg.riparian_buffer_m, quad_segs=BUFFER_QUAD_SEGS).to_numpy())


def _dissolved(ctx: Context, key: str) -> list[shapely.Geometry]:
    """The polygons of a vector layer dissolved into one, as its parts."""
    frame = ctx.vectors.get(key)
    return list(shapely.get_parts(shapely.union_all(frame.geometry.to_numpy()))) if frame is not None and len(frame) else []


def _tile_shapes(ctx: Context, polygons: list[shapely.Geometry]) -> list[tuple[shapely.Geometry, ...]]:
    """Per chunk (row-major), the pieces of the polygons inside it (a riparian zone spans the landscape:
    ``LandscapeGrid.tile_pieces``), rasterised by _count_block where mining is."""
    parts = [p for p in polygons if not p.is_empty]
    return [tuple(piece for _, piece in pieces) for _, pieces in ctx.grid.tile_pieces(parts)]


def _count_block(flags: np.ndarray, lc: np.ndarray | None, riparian: tuple, rights: tuple, surface: tuple,
                 *faces: np.ndarray, grid: LandscapeGrid, tile: Tile, natural: np.ndarray, footprint_bits: int,
                 **kw) -> tuple[list, list[dict]]:
    """One chunk, one pass: the counts (_counts_block), and per year the chunk's site summary (blocks.block_stats
    of the footprint, 8-connected, with the site values of mining_sites.site_values as values and the sites'
    outlines traced), so the sites need no second pass over the chunk.

    Only the box around the pixels some source maps as mining in some year is read further, and the riparian
    zone and rights layers (polygon pieces in this chunk) are rasterised on that box alone: mining is sparse."""
    r0, r1, c0, c1 = box = kernels.nonzero_bounds(flags.max(axis=0))
    window = (slice(r0, r1), slice(c0, c1))
    mined = flags[:, r0:r1, c0:c1]
    lc_box = lc[:, r0:r1, c0:c1] if lc is not None else None
    riparian, rights, surface = (_mask_block(shapes, grid, tile, box) for shapes in (riparian, rights, surface))
    counts = _counts_block(mined, lc_box, riparian, rights, surface, *(face[window] for face in faces),
                           footprint_bits=footprint_bits, **kw)
    values = np.zeros(flags.shape[1:], np.int16)
    values[window] = mining_sites.site_values(mined, lc_box[0] if lc_box is not None else None, rights, surface,
                                              natural=natural, footprint_bits=footprint_bits)
    n_values = (flags.shape[0] + 1) * 8
    site_stats = []
    for year_flags in mined:
        footprint = np.zeros(flags.shape[1:], bool)
        footprint[window] = (year_flags & footprint_bits) > 0
        site_stats.append(blocks.block_stats(footprint, values, neighbourhood=8, n_values=n_values, pieces_min_px=1))
    return counts, site_stats


def _count(flags, lc, masks: list[list[tuple]], ctx: Context, *, n_sources, pairs, eco_of_class,
           footprint_bits) -> tuple[list, list[np.ndarray]]:
    """Per zone layer: (year counts, period counts) summed over chunks (see _counts_block); and per year the
    chunks' site summaries (an object array shaped like the chunk grid, for blocks.patches_from_stats).
    ``masks``: riparian zone, mining rights and surface rights, their pieces per chunk (_tile_shapes)."""
    flag_blocks = flags.to_delayed().ravel()
    lc_blocks = lc.to_delayed().ravel() if lc is not None else [None] * len(flag_blocks)
    faces = [ctx.face_ids[z.name].to_delayed().ravel() for z in ctx.zones]
    n_faces = tuple(z.n_faces for z in ctx.zones)
    parts = [dask.delayed(_count_block, pure=False, nout=2)(  # pure=True hashed every river piece: 0.4 s at 576 Mpx
        flag_blocks[i], lc_blocks[i], *(m[i] for m in masks), *(f[i] for f in faces), grid=ctx.grid, tile=tile,
        n_faces=n_faces, n_sources=n_sources, pairs=pairs, eco_of_class=eco_of_class, n_eco=len(ECOSYSTEMS),
        footprint_bits=footprint_bits, natural=ctx.legend.natural)
        for i, tile in enumerate(ctx.grid.tiles())]
    counts, stats = dask.compute(blocks.tree_sum([p[0] for p in parts]), [p[1] for p in parts])
    by_year = []
    for y in range(flags.shape[0]):
        grid_stats = np.empty(flags.numblocks[1:], object)
        for i, chunk_stats in enumerate(stats):
            grid_stats.flat[i] = chunk_stats[y]
        by_year.append(grid_stats)
    return counts, by_year


def _rows(counts, site_values: dict, names: list[str], observed: np.ndarray, ctx: Context, cfg: MiningConfig, *,
          has_landcover: bool) -> list[dict]:
    years, periods, px = ctx.config.years, ctx.config.periods(), ctx.grid.pixel_area_ha
    has_rights, has_surface = "mining_rights" in ctx.vectors, "surface_rights" in ctx.vectors
    rows: list[dict] = []
    n = len(names)
    for layer, (year_counts, period_counts) in zip(ctx.zones, counts, strict=True):
        zone_year = layer.zone_counts(year_counts)
        zone_period = layer.zone_counts(period_counts)
        zone_list = list(enumerate(layer.zone_names))
        if layer.name != LANDSCAPE:  # face 0 of a zone layer = inside the landscape but in no zone of it
            zone_list.append((None, OUTSIDE_ZONES))
        for z, zone in zone_list:
            yc = year_counts[0] if z is None else zone_year[z]
            pc = period_counts[0] if z is None else zone_period[z]
            base = {"zone_layer": layer.name, "zone": zone}
            for t, year in enumerate(years):
                if not observed[:, t].any():
                    continue
                def add(metric: str, unit: str, value: float, _base: dict = base, _year: int = year) -> None:
                    rows.append({**_base, "metric": metric, "unit": unit, "year": _year, "value": value})

                footprint = yc[t, 0]
                add("mining_ha", "ha", footprint * px)
                for s, name in enumerate(names):
                    if observed[s, t]:
                        add(f"mining_ha_source_{name}", "ha", yc[t, 1 + s] * px)
                if n > 1 and observed[:, t].all():
                    add("mining_in_all_sources_ha", "ha", yc[t, 1 + n] * px)
                    if n == 2:
                        for s, name in enumerate(names):
                            add(f"mining_only_{name}_ha", "ha", (yc[t, 1 + s] - yc[t, 1 + n]) * px)
                if "rivers" in ctx.vectors:
                    add("riparian_mining_ha", "ha", yc[t, 2 + n] * px)
                    if footprint:
                        add("riparian_mining_pct", "%", 100 * yc[t, 2 + n] / footprint)
                cats = yc[t, 3 + n:7 + n]
                if has_rights and has_surface:
                    for c, label in enumerate(CATEGORIES):
                        add(f"mining_category_{label}_ha", "ha", cats[c] * px)
                elif has_rights:
                    add("mining_with_mining_rights_ha", "ha", (cats[0] + cats[1]) * px)
                    add("mining_without_mining_rights_ha", "ha", (cats[2] + cats[3]) * px)
                elif has_surface:
                    add("mining_with_surface_rights_ha", "ha", (cats[0] + cats[2]) * px)
                    add("mining_without_surface_rights_ha", "ha", (cats[1] + cats[3]) * px)
                if z is not None:
                    for metric, unit in (("mining_sites", "count"), ("median_distance_to_river_m", "m"),
                                         ("river_km_affected", "km")):
                        value = site_values.get((metric, layer.name, zone, year))
                        if value is not None:
                            add(metric, unit, value)
            for p, (year_from, year_to) in enumerate(periods):
                ia, ib = years.index(year_from), years.index(year_to)
                if not (observed[:, ia].any() and observed[:, ib].any()):
                    continue
                period = {**base, "year_from": year_from, "year_to": year_to}
                rows.append({**period, "metric": "new_mining_ha", "unit": "ha", "value": pc[p, 0] * px})
                if has_landcover:
                    by_eco = pc[p, 1:]
                    for e, eco in enumerate(ECOSYSTEMS):
                        if by_eco[e]:
                            rows.append({**period, "metric": "mining_on_natural_ha", "unit": "ha", "ecosystem": eco,
                                         "value": by_eco[e] * px})
                    rows.append({**period, "metric": "mining_on_natural_ha", "unit": "ha", "ecosystem": ALL_NATURAL,
                                 "value": by_eco.sum() * px})
    return rows


