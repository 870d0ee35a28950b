"""Natural-ecosystem conversion between assessment years (DESIGN.md §4).

Inputs : class indices (year, y, x) on the LandscapeGrid (legend.py: 0 outside, 1 unmapped, 2.. classes);
         zone face ids per layer.
Outputs: conversion.csv metrics, per zone and ecosystem (hectares unless stated):
         natural_extent_ha, unmapped_ha (per year); converted_ha (+ by class_to), converted_pct, gain_ha
         (+ by class_from), net_change_ha, annual_rate_pct, stable_natural_ha, stable_non_natural_ha,
         unmapped_ha, transition_ha (class x class), converted_since_cutoff_ha/_pct (per period);
         conversion.gpkg layer `conversion_patches`.

Every number comes from one integer array per period: pixel counts per (zone face, class in ya, class in
yb), summed chunk by chunk (bit-identical for any chunking) and converted to hectares once at the end.
Period identity, per zone: stable_natural + converted + gain + stable_non_natural + unmapped = zone area.
"""

from __future__ import annotations

import dask
import dask.array as da
import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr

from pipeline import blocks, kernels
from pipeline.config import ECOSYSTEMS
from pipeline.indicators.base import ALL_NATURAL, Context, IndicatorResult, tidy
from pipeline.legend import FIRST_CLASS, UNMAPPED, Legend

NAME = "conversion"
NEEDS_LANDCOVER = True
ZONE_METRICS = ("natural_extent_ha", "converted_ha", "converted_pct", "gain_ha", "net_change_ha", "annual_rate_pct")
PATCH_LAYER = "conversion_patches"


# ------------------------------------------------------------------------------------------ kernels
def transition_counts(lc_from: np.ndarray, lc_to: np.ndarray, face: np.ndarray, *, n_classes: int, n_faces: int) -> np.ndarray:
    """Pixel counts per (face, class_from, class_to) for one block -> int64 (n_faces, K, K) (a compiled kernel).

    Pixels outside the boundary (class index 0) are counted in column/row 0 and dropped by the caller.
    """
    return kernels.transition_counts(lc_from, lc_to, face, n_classes=n_classes, n_faces=n_faces)


def _block_counts(lc: np.ndarray, *faces: np.ndarray, pairs: tuple, n_classes: int, n_faces: tuple) -> list[np.ndarray]:
    """Per zone layer: (n_periods, n_faces, K, K) counts for one chunk of the (year, y, x) stack."""
    return [
        np.stack([transition_counts(lc[a], lc[b], face, n_classes=n_classes, n_faces=nf) for a, b in pairs])
        for face, nf in zip(faces, n_faces, strict=True)
    ]


def period_counts(stack: da.Array, face_ids: list[da.Array], *, pairs: list[tuple[int, int]], n_classes: int,
                  n_faces: list[int]) -> list[np.ndarray]:
    """Counts per zone layer, (n_periods, n_faces, K, K) int64, for the whole landscape.

    Notes
    -----
    One task per chunk, then a pairwise tree of additions: memory is bounded by the chunk size and the
    size of the count arrays, never by the landscape.
    """
    lc_blocks = stack.rechunk({0: -1}).to_delayed()[0].ravel()  # every year of a chunk in one task
    face_blocks = [f.rechunk(stack.chunks[1:]).to_delayed().ravel() for f in face_ids]
    partial = [
        dask.delayed(_block_counts, pure=True)(lc, *(fb[i] for fb in face_blocks), pairs=tuple(pairs),
                                               n_classes=n_classes, n_faces=tuple(n_faces))
        for i, lc in enumerate(lc_blocks)
    ]
    (total,) = dask.compute(blocks.tree_sum(partial))
    return total


# ------------------------------------------------------------------------------------------- metrics
def annual_rate_pct(extent_from: float, extent_to: float, years: int) -> float:
    """Puyravaud (2003) annual rate of change, % per year: 100 · ln(extent_to / extent_from) / years."""
    if extent_from <= 0 or extent_to <= 0:
        return float("nan")
    return 100.0 * float(np.log(extent_to / extent_from)) / years


def _ecosystem_rows(legend: Legend) -> list[tuple[str, np.ndarray]]:
    """(ecosystem name, class-index mask) for every ecosystem in the legend, then all natural."""
    out = [(eco, legend.ecosystem == i) for i, eco in enumerate(ECOSYSTEMS) if (legend.ecosystem == i).any()]
    return [*out, (ALL_NATURAL, legend.natural.copy())]


def period_rows(counts: np.ndarray, legend: Legend, *, pixel_ha: float, year_from: int, year_to: int,
                zone_layer: str, zone: str, since_cutoff: bool = False) -> list[dict]:
    """Tidy rows of one period and one zone from its (K, K) pixel-count matrix."""
    ha = counts.astype(np.float64) * pixel_ha
    nat, K = legend.natural, legend.n_classes
    mapped = np.arange(K) >= FIRST_CLASS
    base = {"zone_layer": zone_layer, "zone": zone, "year_from": year_from, "year_to": year_to}
    rows: list[dict] = []

    def add(metric: str, unit: str, value: float, **extra: object) -> None:
        rows.append({**base, "metric": metric, "unit": unit, "value": value, **extra})

    if since_cutoff:
        for eco, sel in _ecosystem_rows(legend):
            converted = ha[np.ix_(sel, mapped & ~nat)].sum()
            extent = ha[sel, :].sum()
            add("converted_since_cutoff_ha", "ha", converted, ecosystem=eco)
            if extent > 0:
                add("converted_since_cutoff_pct", "%", 100 * converted / extent, ecosystem=eco)
        return rows
    for eco, sel in _ecosystem_rows(legend):
        extent_a, extent_b = ha[sel, :].sum(), ha[:, sel].sum()
        converted_by_to = ha[np.ix_(sel, mapped & ~nat)].sum(axis=0)
        gain_by_from = ha[np.ix_(mapped & ~nat, sel)].sum(axis=1)
        add("converted_ha", "ha", converted_by_to.sum(), ecosystem=eco)
        for idx in np.flatnonzero(converted_by_to):
            add("converted_ha", "ha", converted_by_to[idx], ecosystem=eco, class_to=legend.names[np.flatnonzero(mapped & ~nat)[idx]])
        if extent_a > 0:
            add("converted_pct", "%", 100 * converted_by_to.sum() / extent_a, ecosystem=eco)
        add("gain_ha", "ha", gain_by_from.sum(), ecosystem=eco)
        for idx in np.flatnonzero(gain_by_from):
            add("gain_ha", "ha", gain_by_from[idx], ecosystem=eco, class_from=legend.names[np.flatnonzero(mapped & ~nat)[idx]])
        add("net_change_ha", "ha", extent_b - extent_a, ecosystem=eco)
        rate = annual_rate_pct(extent_a, extent_b, year_to - year_from)
        if np.isfinite(rate):
            add("annual_rate_pct", "%/yr", rate, ecosystem=eco)
    add("stable_natural_ha", "ha", ha[np.ix_(nat, nat)].sum())
    add("stable_non_natural_ha", "ha", ha[np.ix_(mapped & ~nat, mapped & ~nat)].sum())
    add("unmapped_ha", "ha", ha[UNMAPPED, :].sum() + ha[:, UNMAPPED].sum() - ha[UNMAPPED, UNMAPPED])
    for i, j in zip(*np.nonzero(ha[FIRST_CLASS:, FIRST_CLASS:]), strict=True):
        add("transition_ha", "ha", ha[i + FIRST_CLASS, j + FIRST_CLASS],
            class_from=legend.names[i + FIRST_CLASS], class_to=legend.names[j + FIRST_CLASS])
    return rows


def year_rows(class_counts: np.ndarray, legend: Legend, *, pixel_ha: float, year: int, zone_layer: str, zone: str) -> list[dict]:
    """natural_extent_ha (per ecosystem and all natural) and unmapped_ha for one year and zone."""
    ha = class_counts.astype(np.float64) * pixel_ha
    base = {"zone_layer": zone_layer, "zone": zone, "year": year}
    rows = [{**base, "metric": "natural_extent_ha", "unit": "ha", "ecosystem": eco, "value": ha[sel].sum()}
            for eco, sel in _ecosystem_rows(legend)]
    rows.append({**base, "metric": "unmapped_ha", "unit": "ha", "value": ha[UNMAPPED]})
    return rows


# ------------------------------------------------------------------------------------------ patches
def conversion_patches(stack: da.Array, ctx: Context, *, ia: int, ib: int, year_from: int, year_to: int,
                       landscape_counts: np.ndarray) -> gpd.GeoDataFrame:
    """8-connected patches of natural pixels of year_from that are mapped, non-natural land in year_to.

    Only patches of at least ``min_mapping_unit_ha`` are vectorised; each has its dominant transition
    (class_from, class_to), a text of all its transitions with their areas, its area, and the zones it
    touches per zone layer (largest overlap first).

    Notes
    -----
    Per-patch transition histograms only have a column for the (from, to) pairs that occur in the
    landscape (read from ``landscape_counts``, the period's (K, K) pixel counts), so their memory is
    patches x (pairs present), not patches x K².
    """
    legend, pixel_ha = ctx.legend, ctx.grid.pixel_area_ha
    K = legend.n_classes
    converted = np.zeros((K, K), bool)
    converted[np.ix_(legend.natural, ~legend.natural & (np.arange(K) >= FIRST_CLASS))] = True
    pair_codes = np.flatnonzero(converted.ravel() & (landscape_counts.ravel() > 0))  # from * K + to
    pair_index = np.zeros(K * K, np.int32)
    pair_index[pair_codes] = np.arange(1, pair_codes.size + 1)
    lc_a, lc_b = stack[ia], stack[ib]
    values = da.map_blocks(kernels.pair_lookup, pair_index.reshape(K, K), lc_a, lc_b, dtype=np.int32)
    mask = values > 0  # every converted pixel's pair occurs in the landscape, so has an index
    mmu_px = ctx.config.indicators.conversion.min_mapping_unit_ha / pixel_ha  # type: ignore[union-attr]
    patches = blocks.label_patches(mask, neighbourhood=8, values=values, n_values=pair_codes.size + 1,
                                   pieces_min_px=max(mmu_px, 1))  # outlines traced in the labelling pass
    ids = np.flatnonzero(patches.pixel_count >= max(mmu_px, 1))  # index 0 (background) has count 0
    columns = ["patch_id", "period", "year_from", "year_to", "class_from", "class_to", "area_ha", "transitions",
               *(z.name for z in ctx.zones)]
    if ids.size == 0:
        return gpd.GeoDataFrame(columns=columns, geometry=[], crs=ctx.grid.crs)
    shapes = patches.polygons(ids, ctx.grid.transform)
    records = []
    for pid in ids:
        hist = patches.value_counts[pid, 1:]
        order = np.argsort(-hist, kind="stable")
        order = order[hist[order] > 0]
        codes = pair_codes[order]
        text = "; ".join(f"{legend.names[c // K]} -> {legend.names[c % K]}: {n * pixel_ha:.2f} ha"
                         for c, n in zip(codes, hist[order], strict=True))
        records.append({
            "patch_id": int(pid), "period": f"{year_from}-{year_to}", "year_from": year_from, "year_to": year_to,
            "class_from": legend.names[codes[0] // K], "class_to": legend.names[codes[0] % K],
            "area_ha": float(patches.pixel_count[pid] * pixel_ha), "transitions": text, "geometry": shapes[int(pid)],
        })
    frame = gpd.GeoDataFrame(records, geometry="geometry", crs=ctx.grid.crs)
    for layer in ctx.zones:
        frame[layer.name] = blocks.zones_touched_many(frame.geometry.to_numpy(), layer, patches=True)
    return frame[[*columns, "geometry"]]


# ------------------------------------------------------------------------------------------ compute
def compute(stack: xr.DataArray, ctx: Context) -> IndicatorResult:
    """Conversion metrics for every period and zone, and the conversion patches (DESIGN.md §4)."""
    config, legend, pixel_ha = ctx.config, ctx.legend, ctx.grid.pixel_area_ha
    years = [int(y) for y in stack["year"].values]
    periods = config.periods()
    pairs = [(years.index(a), years.index(b)) for a, b in periods]
    consecutive = list(zip(range(len(years) - 1), range(1, len(years)), strict=True))
    all_pairs = pairs + [p for p in consecutive if p not in pairs]
    counts = period_counts(stack.data, [ctx.face_ids[z.name] for z in ctx.zones], pairs=all_pairs,
                           n_classes=legend.n_classes, n_faces=[z.n_faces for z in ctx.zones])
    rows: list[dict] = []
    for layer, face_counts in zip(ctx.zones, counts, strict=True):
        per_zone = np.moveaxis(layer.zone_counts(np.moveaxis(face_counts, 1, 0)), 0, 1)  # (period, zone, K, K)
        for z, zone in enumerate(layer.zone_names):
            area_px = per_zone[0, z, UNMAPPED:, :].sum()  # every pixel inside the boundary
            if area_px == 0:
                continue
            rows.append({"metric": "landscape_area_ha", "unit": "ha", "zone_layer": layer.name, "zone": zone,
                         "value": float(area_px * pixel_ha)})
            for y_index, year in enumerate(years):
                pair = next(i for i, (a, b) in enumerate(all_pairs) if y_index in (a, b))
                a, b = all_pairs[pair]
                m = per_zone[pair, z]
                class_counts = m.sum(axis=1) if y_index == a else m.sum(axis=0)
                rows += year_rows(class_counts, legend, pixel_ha=pixel_ha, year=year, zone_layer=layer.name, zone=zone)
            for p, (year_from, year_to) in enumerate(periods):
                rows += period_rows(per_zone[p, z], legend, pixel_ha=pixel_ha, year_from=year_from, year_to=year_to,
                                    zone_layer=layer.name, zone=zone)
            if config.cutoff_year is not None:
                p = periods.index((config.cutoff_year, years[-1]))
                rows += period_rows(per_zone[p, z], legend, pixel_ha=pixel_ha, year_from=config.cutoff_year,
                                    year_to=years[-1], zone_layer=layer.name, zone=zone, since_cutoff=True)
    table = tidy(rows, landscape=config.name, indicator=NAME)
    landscape = counts[0].sum(axis=1)  # layer 0 is `landscape`; summing faces gives the whole landscape
    patches = [conversion_patches(stack.data, ctx, ia=a, ib=b, year_from=years[a], year_to=years[b],
                                  landscape_counts=landscape[p]) for p, (a, b) in enumerate(pairs)]
    features = {PATCH_LAYER: pd.concat(patches, ignore_index=True) if patches else gpd.GeoDataFrame()}
    features[PATCH_LAYER] = gpd.GeoDataFrame(features[PATCH_LAYER], geometry="geometry", crs=ctx.grid.crs)
    return IndicatorResult(table=table, features=features, zone_metrics=ZONE_METRICS)
