"""Natural-ecosystem degradation between assessment years: land that stayed natural but got worse (DESIGN.md §4).

Inputs : class indices (year, y, x) on the LandscapeGrid; legend groups and condition ranks; zone face ids;
         for rule `external`, ctx.rasters["degradation:<name>"] (observed per year, lazy bool stack).
Outputs: degradation.csv per period, zone and ecosystem (of the earlier year): degraded_ha_<rule>,
         improved_ha_<rule>, stable_ha_<rule>, degraded_pct_<rule> (of the natural extent of the earlier year),
         degraded_ha_any / degraded_pct_any (union of the rules, each pixel once), natural_both_ha;
         degradation.gpkg layer `degraded_patches` (8-connected, >= min_patch_ha, with the rules that flagged
         them). The transition matrix used goes to the manifest.

Every rule looks only at pixels natural (and mapped) in both years: conversion is the conversion indicator's.
- transition: the legend's (from group, to group) meaning, -1 degraded / +1 improved (Trends.Earth default);
- condition: same ecosystem in both years and a lower (degraded) or higher (improved) condition rank;
- edge: within edge_depth_m (Euclidean, pixel centres) of mapped non-natural land in yb but not in ya;
- small_patch: in a natural patch smaller than small_patch_ha in yb but not in ya;
- isolation: farther than isolation_m from every natural patch larger than large_patch_ha in yb but not in ya;
- external: flagged by the external raster in yb and not in ya (ya unobserved: flagged in yb).
Improvement is each rule's reverse. Distances are exact up to their bound: each chunk is computed with a
halo of ceil(bound / pixel size) pixels (never a whole-landscape distance transform).
"""

from __future__ import annotations

import functools
import math

import dask
import dask.array as da
import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr

from pipeline import blocks, kernels
from pipeline.config import ECOSYSTEMS, GROUPS, DegradationConfig
from pipeline.errors import SourceError
from pipeline.indicators.base import ALL_NATURAL, Context, IndicatorResult, tidy
from pipeline.legend import FIRST_CLASS

NAME = "degradation"
NEEDS_LANDCOVER = True
PATCH_LAYER = "degraded_patches"
ZONE_METRICS = ("degraded_ha_any", "degraded_pct_any")
MIN_PATCH_HA = 0.5  # smallest degraded patch written to the GeoPackage (every pixel counts in the CSV)
BATCH_ROWS = 3  # rows of chunks computed together in the rule pass (_count)
SMALL, LARGE = 1, 2  # size bits of a natural patch (_patch_sizes): below small_patch_ha, above large_patch_ha


def rule_halos(cfg: DegradationConfig, resolution_m: float) -> tuple[int, int]:
    """Pixels of halo the distance rules need: (edge: around the land cover, isolation: around the patch sizes);
    0 for a rule not configured."""
    edge = math.ceil(cfg.edge_depth_m / resolution_m) if "edge" in cfg.rules else 0
    isolation = math.ceil(cfg.isolation_m / resolution_m) if "isolation" in cfg.rules else 0
    return edge, isolation


# ------------------------------------------------------------------------------------------ kernels
def _interior(a: np.ndarray, halo: tuple[int, int]) -> np.ndarray:
    return a[halo[0]:a.shape[0] - halo[0], halo[1]:a.shape[1] - halo[1]]


def pair_table(rules: tuple[str, ...], *, natural: np.ndarray, group: np.ndarray, condition: np.ndarray,
               ecosystem: np.ndarray, transitions: np.ndarray) -> np.ndarray:
    """uint16 (class a, class b) -> kernels.NATURAL_BOTH and the bits of the rules that depend on the class pair
    only (transition, condition): bit r degraded by rules[r], bit 8 + r improved; 0 unless both are natural."""
    both = natural[:, None] & natural[None, :]
    table = both.astype(np.uint16) * kernels.NATURAL_BOTH
    if "transition" in rules:
        ga, gb = group[:, None], group[None, :]
        change = np.where((ga >= 0) & (gb >= 0), transitions[np.maximum(ga, 0), np.maximum(gb, 0)], 0)
        table |= _change_bits(change < 0, change > 0, rules.index("transition"))
    if "condition" in rules:
        ra, rb = condition[:, None], condition[None, :]
        ranked = (ecosystem[:, None] == ecosystem[None, :]) & (ra >= 0) & (rb >= 0)
        table |= _change_bits(ranked & (rb < ra), ranked & (rb > ra), rules.index("condition"))
    return table * both


def _change_bits(worse: np.ndarray, better: np.ndarray, r: int) -> np.ndarray:
    return (worse.astype(np.uint16) << r) | (better.astype(np.uint16) << (8 + r))


def rule_flags(lc_a: np.ndarray, lc_b: np.ndarray, size_a: np.ndarray, size_b: np.ndarray, ext_a: np.ndarray | None,
               ext_b: np.ndarray | None, *, rules: tuple[str, ...], pairs: np.ndarray, natural: np.ndarray,
               edge_reach: np.ndarray, isolation_reach: np.ndarray, edge_halo: tuple[int, int],
               isolation_halo: tuple[int, int]) -> np.ndarray:
    """Per pixel of the block interior: kernels.NATURAL_BOTH | degraded bits (bit r for rules[r]) | improved
    bits << 8, for pixels natural in both years (0 elsewhere). ``lc_*`` (class indices) carry a halo of
    ``edge_halo`` (rows, columns) pixels, ``size_*`` (natural patch size bits SMALL | LARGE) one of
    ``isolation_halo``, ``ext_*`` none; ``pairs``: pair_table. ``edge_reach`` and ``isolation_reach``
    describe the distance bounds in pixels (``kernels.euclidean_reach``)."""
    flags = kernels.pair_flags(lc_a, lc_b, pairs, halo=edge_halo)
    if "edge" in rules:  # within the edge depth of mapped non-natural land
        near = [_interior(kernels.within(kernels.non_natural(lc, natural, first_class=FIRST_CLASS), edge_reach),
                          edge_halo) for lc in (lc_a, lc_b)]
        kernels.or_change(flags, *near, rules.index("edge"))
    if "small_patch" in rules:
        kernels.or_change(flags, _interior(size_a, isolation_halo), _interior(size_b, isolation_halo),
                          rules.index("small_patch"), mask=SMALL)
    if "isolation" in rules:  # degraded: no longer within the isolation distance of a large patch
        large_near = [_interior(kernels.within((size & LARGE) > 0, isolation_reach), isolation_halo)
                      for size in (size_a, size_b)]
        kernels.or_change(flags, *large_near, rules.index("isolation"), negate=True)
    if "external" in rules:  # year a unobserved: flagged in year b is degraded
        kernels.or_change(flags, ext_a if ext_a is not None else np.zeros_like(ext_b), ext_b, rules.index("external"))
    kernels.keep_natural_both(flags)
    return flags


def _period_block(lc_a: np.ndarray, lc_b: np.ndarray, size_a: np.ndarray, size_b: np.ndarray, *rest: np.ndarray,
                  has_external: tuple[bool, bool], n_faces: tuple, ecosystem: np.ndarray, pieces_min_px: int | None,
                  **flag_kw) -> tuple[list[np.ndarray], dict]:
    """One chunk: its rule flags (rule_flags; the inputs with their halos, then the external layers present,
    then the zone faces), per zone layer (n_faces, n_eco, 2 + 2 R) counts (natural both, any degraded,
    degraded per rule, improved per rule), and the chunk's degraded-patch summary (blocks.block_stats, pixels
    per rule as values) with the outlines of patches that may reach ``pieces_min_px`` pixels (None: no
    polygons)."""
    n_ext = sum(has_external)
    ext, faces = list(rest[:n_ext]), rest[n_ext:]
    ext_a = ext.pop(0) if has_external[0] else None
    ext_b = ext.pop(0) if has_external[1] else None
    flags = rule_flags(lc_a, lc_b, size_a, size_b, ext_a, ext_b, **flag_kw)
    n_rules = len(flag_kw["rules"])
    count = functools.partial(kernels.flag_counts, flags, _interior(lc_a, flag_kw["edge_halo"]),
                              eco_of_class=ecosystem, n_eco=len(ECOSYSTEMS), n_rules=n_rules)
    whole_chunk = None  # the counts of a chunk inside one face, shared by the layers where it is
    counts = []
    for face, nf in zip(faces, n_faces, strict=True):
        lo, hi = kernels.value_range(face) if face.size else (0, 0)
        if lo == hi and 0 <= lo < nf:
            whole_chunk = count(None, n_faces=1)[0] if whole_chunk is None else whole_chunk
            counts.append(np.zeros((nf, *whole_chunk.shape), np.int64))
            counts[-1][lo] = whole_chunk
        else:
            counts.append(count(face, n_faces=nf))
    degraded = (flags & 0x3F).astype(np.uint8)  # the degraded bits of at most 6 rules
    stats = blocks.block_stats(degraded, degraded, neighbourhood=8, n_values=n_rules, value_bits=True,
                               pieces_min_px=pieces_min_px)
    return counts, stats


# ------------------------------------------------------------------------------------------ compute
def _haloed(array: da.Array, halo: tuple[int, int]) -> da.Array:
    """The chunks of ``array`` with ``halo`` (rows, columns) pixels of their neighbours (zero beyond the grid)."""
    if not any(halo):
        return array
    return da.overlap.overlap(array, depth={0: halo[0], 1: halo[1]}, boundary=False if array.dtype == bool else 0)


def compute(stack: xr.DataArray, ctx: Context) -> IndicatorResult:
    """Degradation per rule, zone, ecosystem and period, their union, and the degraded patches."""
    cfg: DegradationConfig = ctx.config.indicators.degradation  # type: ignore[assignment]
    grid, legend, years = ctx.grid, ctx.legend, [int(y) for y in stack["year"].values]
    rules = tuple(cfg.rules)
    # a grid narrower than a halo needs no more halo than its own size (beyond it is outside the landscape)
    edge_px, isolation_px = rule_halos(cfg, grid.resolution_m)
    edge_halo, isolation_halo = (tuple(min(px, n) for n in grid.shape) for px in (edge_px, isolation_px))
    chunks = blocks.halo_chunks(grid.chunks, tuple(max(a, b) for a, b in zip(edge_halo, isolation_halo, strict=True)))
    lc = stack.data.rechunk((1, *chunks))  # one year per chunk: lc[i] reads year i only
    matrix = ctx.legend.config.transition_matrix()
    transitions = np.array([[matrix[a][b] for b in GROUPS] for a in GROUPS], dtype=np.int8)
    pairs = pair_table(rules, natural=legend.natural, group=legend.group, condition=legend.condition,
                       ecosystem=legend.ecosystem, transitions=transitions)
    patch_sizes = _patch_sizes(lc, years, cfg, ctx, stack.data.name) if {"small_patch", "isolation"} & set(rules) else {}
    external = ctx.rasters.get(f"degradation:{cfg.external.name}") if cfg.external else None
    edge_reach = kernels.euclidean_reach(cfg.edge_depth_m, grid.resolution_m)
    isolation_reach = kernels.euclidean_reach(cfg.isolation_m, grid.resolution_m)
    rows, frames = [], []
    periods = ctx.config.periods()
    for p, (year_from, year_to) in enumerate(periods):
        ia, ib = years.index(year_from), years.index(year_to)
        if "external" in rules and (external is None or not external[0][ib]):
            raise SourceError(f"the external degradation raster has no layer for {year_to}; add it or drop the rule")
        zeros = da.zeros(grid.shape, np.uint8, chunks=chunks)
        sizes = [patch_sizes.get(year, zeros).rechunk(chunks) for year in (year_from, year_to)]
        size_halo = isolation_halo if "isolation" in rules else (0, 0)
        inputs = [(lc[ia], edge_halo), (lc[ib], edge_halo), (sizes[0], size_halo), (sizes[1], size_halo)]
        has_external = (False, False)
        if "external" in rules:
            has_external = (bool(external[0][ia]), True)
            inputs += [(external[1][i].rechunk(chunks), (0, 0)) for i, keep in ((ia, has_external[0]), (ib, True)) if keep]
        haloed = [_haloed(a.rechunk(chunks), halo) for a, halo in inputs]  # each input with the halo its rule needs
        counts, patches = _count(haloed, chunks, ctx, has_external=has_external, rules=rules, pairs=pairs,
                                 natural=legend.natural, edge_reach=edge_reach, isolation_reach=isolation_reach,
                                 edge_halo=edge_halo, isolation_halo=size_halo)
        del haloed, sizes, inputs  # the patch polygons below come without the natural patches of years
        later = {year for period in periods[p + 1:] for year in period}  # that no later period needs
        patch_sizes = {year: sizes_of_year for year, sizes_of_year in patch_sizes.items() if year in later}
        rows += _rows(counts, ctx, rules, year_from, year_to)
        if ctx.features:  # the patch polygons feed no number of the table
            frames.append(_patches(patches, ctx, rules, year_from, year_to))
    table = tidy(rows, landscape=ctx.config.name, indicator=NAME)
    patches = (gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs=grid.crs) if frames
               else _no_patches(ctx))
    metadata = {"rules": list(rules), "transition_matrix": {a: dict(matrix[a]) for a in GROUPS},
                "transition_matrix_source": "legend" if legend.config.transitions else "Trends.Earth default"}
    return IndicatorResult(table=table, features={PATCH_LAYER: patches}, zone_metrics=ZONE_METRICS, metadata=metadata)


def _patch_sizes(lc: da.Array, years: list[int], cfg: DegradationConfig, ctx: Context, stack_name: str) -> dict:
    """year -> lazy uint8 size bits of each natural pixel's patch: SMALL (below small_patch_ha) | LARGE (above
    large_patch_ha); one labelling per year serves both rules, its kept runs painted per chunk (Patches.mapped).
    The labelling is connectivity's when it left one of the same stack (``stack_name``, its dask name) in
    ``ctx.natural_patches`` (taken out: used once)."""
    px = ctx.grid.pixel_area_ha
    out = {}
    for i, year in enumerate(years):
        patches = ctx.natural_patches.pop((stack_name, year, cfg.neighbourhood), None)
        if patches is None:
            natural = lc[i].map_blocks(blocks.lookup_block, table=ctx.legend.natural, dtype=bool)
            patches = blocks.label_patches(natural, neighbourhood=cfg.neighbourhood, keep_runs=True)
        size_ha = patches.pixel_count * px
        small = (size_ha < cfg.small_patch_ha) & (patches.pixel_count > 0)
        out[year] = patches.mapped((small * SMALL | (size_ha > cfg.large_patch_ha) * LARGE).astype(np.uint8))
    return out


def _count(haloed: list[da.Array], chunks: tuple, ctx: Context, **flag_kw) -> tuple[list[np.ndarray], blocks.Patches]:
    """Counts per zone layer (summed over chunks) and the degraded patches, from one pass of ``_period_block``
    over the haloed inputs (``chunks``: their chunks without the halos), each task making the flags it counts.
    Computed ``BATCH_ROWS`` rows of chunks at a time (the halo rows of a batch are read again by the next one;
    one compute over every chunk let dask hold the inputs of many chunks at once: 4 GB at 576 Mpx).

    With ``ctx.features``, the chunk summaries trace the outlines of the patches that may reach MIN_PATCH_HA,
    so the patch polygons do not recompute the flags."""
    in_blocks = [a.to_delayed().ravel() for a in haloed]
    nby, nbx = haloed[0].numblocks
    faces = [ctx.face_ids[z.name].rechunk(chunks).to_delayed().ravel() for z in ctx.zones]
    pieces_min_px = max(MIN_PATCH_HA / ctx.grid.pixel_area_ha, 1) if ctx.features else None
    parts = [dask.delayed(_period_block, pure=True, nout=2)(
        *(b[i] for b in in_blocks), *(f[i] for f in faces), n_faces=tuple(z.n_faces for z in ctx.zones),
        ecosystem=ctx.legend.ecosystem, pieces_min_px=pieces_min_px, **flag_kw) for i in range(nby * nbx)]
    counts, stats = None, []
    step = BATCH_ROWS * nbx  # a few rows of chunks per compute: memory stays bounded by the rows, not the landscape
    for start in range(0, len(parts), step):
        batch = parts[start:start + step]
        c, s = dask.compute(blocks.tree_sum([b[0] for b in batch]), [b[1] for b in batch])
        counts = c if counts is None else [x + y for x, y in zip(counts, c, strict=True)]
        stats += s
    grid_stats = np.empty((nby, nbx), object)
    for i, s in enumerate(stats):
        grid_stats.flat[i] = s
    return counts, blocks.patches_from_stats(grid_stats, chunks, neighbourhood=8)


def _rows(counts: list[np.ndarray], ctx: Context, rules: tuple[str, ...], year_from: int, year_to: int) -> list[dict]:
    px = ctx.grid.pixel_area_ha
    present = [e for e in range(len(ECOSYSTEMS)) if ctx.legend.ecosystem.tolist().count(e)]
    rows = []
    n = len(rules)
    for layer, face_counts in zip(ctx.zones, counts, strict=True):
        per_zone = layer.zone_counts(face_counts)  # (n_zones, n_eco, 2 + 2 R)
        for z, zone in enumerate(layer.zone_names):
            if per_zone[z, :, 0].sum() == 0:
                continue
            groups = [(ECOSYSTEMS[e], per_zone[z, e]) for e in present] + [(ALL_NATURAL, per_zone[z].sum(axis=0))]
            for eco, c in groups:
                base = {"zone_layer": layer.name, "zone": zone, "ecosystem": eco, "year_from": year_from,
                        "year_to": year_to}
                natural = c[0]
                rows.append({**base, "metric": "natural_both_ha", "unit": "ha", "value": natural * px})
                rows.append({**base, "metric": "degraded_ha_any", "unit": "ha", "value": c[1] * px})
                if natural:
                    rows.append({**base, "metric": "degraded_pct_any", "unit": "%", "value": 100 * c[1] / natural})
                for r, rule in enumerate(rules):
                    degraded, improved = c[2 + r], c[2 + n + r]
                    rows.append({**base, "metric": f"degraded_ha_{rule}", "unit": "ha", "value": degraded * px})
                    rows.append({**base, "metric": f"improved_ha_{rule}", "unit": "ha", "value": improved * px})
                    rows.append({**base, "metric": f"stable_ha_{rule}", "unit": "ha",
                                 "value": (natural - degraded - improved) * px})
                    if natural:
                        rows.append({**base, "metric": f"degraded_pct_{rule}", "unit": "%", "value": 100 * degraded / natural})
    return rows


def _no_patches(ctx: Context) -> gpd.GeoDataFrame:
    columns = ["patch_id", "period", "year_from", "year_to", "area_ha", "rules", *(z.name for z in ctx.zones)]
    return gpd.GeoDataFrame({c: [] for c in columns}, geometry=[], crs=ctx.grid.crs)


def _patches(patches: blocks.Patches, ctx: Context, rules: tuple[str, ...], year_from: int,
             year_to: int) -> gpd.GeoDataFrame:
    """Degraded patches (any rule) of at least MIN_PATCH_HA, with the rules that flagged their pixels."""
    px = ctx.grid.pixel_area_ha
    ids = np.flatnonzero(patches.pixel_count >= max(MIN_PATCH_HA / px, 1))
    if ids.size == 0:
        return _no_patches(ctx)
    shapes = patches.polygons(ids, ctx.grid.transform)
    flagged = patches.value_counts[ids] > 0  # (patch, rule): the rule flagged some of its pixels
    combination = flagged @ (1 << np.arange(len(rules)))  # the rules of each patch as bits: one name per combination
    names = np.array([", ".join(rule for r, rule in enumerate(rules) if bits >> r & 1) for bits in range(1 << len(rules))],
                     dtype=object)
    frame = gpd.GeoDataFrame({
        "patch_id": ids.astype(np.int64), "period": f"{year_from}-{year_to}", "year_from": year_from, "year_to": year_to,
        "area_ha": patches.pixel_count[ids] * px, "rules": names[combination],
    }, geometry=[shapes[int(i)] for i in ids], crs=ctx.grid.crs)
    for layer in ctx.zones:
        frame[layer.name] = blocks.zones_touched_many(frame.geometry.to_numpy(), layer, patches=True)
    return frame
