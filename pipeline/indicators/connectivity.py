"""Natural-ecosystem connectivity: FRAGSTATS class-level patch metrics, ECA and ProtConn (DESIGN.md §4).

Inputs : class indices (year, y, x) on the LandscapeGrid; legend tables; zone face ids; zone geometries.
Outputs: connectivity.csv, per year, per ecosystem type and ``all_natural``, per zone:
         patch_count, patch_density (per 100 ha), largest_patch_index (%), mean_patch_area_ha,
         area_weighted_mean_patch_ha, effective_mesh_size_ha, edge_density_m_per_ha, core_area_ha;
         for the landscape only: equivalent_connected_area_ha_<D>m and eca_pct_<D>m per dispersal distance D,
         protconn_pct_<D>m when a zone layer has ``protected: true``; <metric>_change and
         <metric>_change_pct per period. connectivity.gpkg layer ``patches`` (patches >= min_patch_ha).

Definitions (FRAGSTATS class level; pylandstats gives the same numbers, tests/indicators/test_connectivity_parity.py):
- a class is an ecosystem type (its edges are borders with any other mapped class) or all natural land
  (edges are borders with mapped non-natural land); outside the boundary and unmapped pixels are neither
  class nor edge, and the area A is the mapped area inside the boundary (or zone);
- patches are 4- or 8-connected components labelled over the whole landscape (blocks.label_patches);
- MESH = Σ a_i² / A (Jaeger 2000, cutting-out), LPI = 100 · max a_i / A, PD = 100 · n / A(ha),
  AREA_AM = Σ a_i² / Σ a_i, ED = edge length / A (m/ha), counted on pixel sides;
- core area: class pixels farther than ``edge_depth_m`` from other mapped classes, measured as FRAGSTATS and
  pylandstats do, by 4-neighbour (cityblock) erosion of depth round(edge_depth_m / pixel size) pixels. Unlike
  pylandstats, the landscape boundary and unmapped pixels do not erode core: the study-area edge is not a
  habitat edge (pylandstats erodes from the array border; the parity test pads with another class).

Per zone: a zone's numbers are those of the landscape's patches cut at the zone boundary (Jaeger's
cutting-out): a_i is the part of patch i inside the zone and A the zone's mapped area, so MESH, LPI,
AREA_MN/AM, PD and patch_count describe how fragmented the natural land inside the zone is, with patches
that continue outside kept whole in their connectivity (a patch that leaves and re-enters a zone counts
once). Edge and core pixels are counted where they lie. ECA is not given per zone: it is a property of the
whole network, and a zone's "share" of it has no agreed definition.
"""

from __future__ import annotations

import itertools
import math

import dask
import dask.array as da
import geopandas as gpd
import numpy as np
import xarray as xr
from scipy import sparse

from pipeline import blocks, graph, kernels
from pipeline.config import ECOSYSTEMS, ConnectivityConfig
from pipeline.indicators.base import ALL_NATURAL, Context, IndicatorResult, tidy
from pipeline.legend import FIRST_CLASS, Legend
from pipeline.zones import LANDSCAPE, ZoneLayer

NAME = "connectivity"
NEEDS_LANDCOVER = True
PATCH_LAYER = "patches"
ZONE_METRICS = ("patch_count", "largest_patch_index", "effective_mesh_size_ha", "edge_density_m_per_ha", "core_area_ha")
UNITS = {
    "patch_count": "count", "patch_density": "per 100 ha", "largest_patch_index": "%", "mean_patch_area_ha": "ha",
    "area_weighted_mean_patch_ha": "ha", "effective_mesh_size_ha": "ha", "edge_density_m_per_ha": "m/ha",
    "core_area_ha": "ha",
}


# ------------------------------------------------------------------------------------------ kernels
def class_groups(legend: Legend) -> list[tuple[str, np.ndarray, int]]:
    """(name, member table over class indices, code) for each ecosystem type in the legend, then all natural;
    code is 1 + the ecosystem index (0: all natural), as ``kernels.ecosystem_edges`` numbers them."""
    groups = [(eco, legend.ecosystem == i, i + 1) for i, eco in enumerate(ECOSYSTEMS) if (legend.ecosystem == i).any()]
    return [*groups, (ALL_NATURAL, legend.natural.copy(), 0)]


def core_depth_px(edge_depth_m: float, resolution_m: float) -> int:
    """Erosion depth in pixels: pixels whose centre lies within edge_depth_m of an edge (round half up)."""
    return int(math.floor(edge_depth_m / resolution_m + 0.5))


def _year_block(lc_halo: np.ndarray, *faces: np.ndarray, tables: np.ndarray, codes: np.ndarray,
                eco_of_class: np.ndarray, halo: int, depth: int, n_faces: tuple[int, ...],
                part_layers: tuple[int, ...], neighbourhood: int,
                keep_natural_runs: bool = False) -> tuple[list[np.ndarray], list[dict | None]]:
    """One chunk, every group at once: the counts of ``_year_counts`` and each group's patch summary
    (blocks.block_stats of the group's pixels, core flag as value 1, patch parts per face of the zone layers
    ``part_layers``; None where the group has no pixel; the ecosystem types from one labelling of their codes,
    blocks.split_by_code). ``codes``: per group, 1 + its ecosystem index, or 0 for all natural land.

    Core pixels are those of the group more than ``depth`` 4-neighbour steps from other mapped classes, as
    ``depth`` binary erosions with the 4-neighbour cross (FRAGSTATS, pylandstats): ``kernels.ecosystem_edges``,
    exact in the chunk interior as the halo is at least ``depth`` pixels.
    """
    h = halo
    lc = lc_halo[h:lc_halo.shape[0] - h, h:lc_halo.shape[1] - h]
    n_classes = tables.shape[1]
    by_class = [kernels.label_face_counts(lc, face, n_labels=n_classes - 1, n_faces=nf).T  # (face, class) pixels
                for face, nf in zip(faces, n_faces, strict=True)]
    present = by_class[0].sum(axis=0) > 0  # classes in the chunk (every layer's faces cover it)
    if present[eco_of_class >= 0].any():
        code, core, sides = kernels.ecosystem_edges(lc_halo, eco_of_class, first_class=FIRST_CLASS, depth=depth, halo=h)
    else:  # no natural pixel (a chunk outside the boundary): no patch, core or edge
        code = core = sides = np.zeros(lc.shape, np.uint8)
    edges = [kernels.ecosystem_edge_sums(face, code, core, sides, n_faces=nf, n_codes=len(ECOSYSTEMS))
             for face, nf in zip(faces, n_faces, strict=True)]
    part_faces = dict(faces=tuple(faces[k] for k in part_layers), n_faces=tuple(n_faces[k] for k in part_layers))
    by_code = blocks.split_by_code(blocks.block_stats(code, core & 1, neighbourhood=neighbourhood, n_values=2, codes=True,
                                                      **part_faces))  # every ecosystem type in one labelling
    group_stats = []
    for table, group_code in zip(tables, codes, strict=True):
        if not (table & present).any():
            group_stats.append(None)
        elif group_code:
            group_stats.append(by_code[group_code])
        else:
            group_stats.append(blocks.block_stats(code > 0, core >> 1, neighbourhood=neighbourhood, n_values=2,
                                                  keep_runs=keep_natural_runs, **part_faces))
    return _year_counts(by_class, edges, tables, codes), group_stats


def _year_counts(by_class: list[np.ndarray], edges: list[tuple[np.ndarray, np.ndarray]], tables: np.ndarray,
                 codes: np.ndarray) -> list[np.ndarray]:
    """Per zone layer, per face: [mapped px, then for each group: class px, edge sides, core px].

    Class pixels come from the layer's (face, class) pixel counts ``by_class`` (class 0, outside, not counted);
    edge sides and non-core pixels per group code from ``kernels.ecosystem_edge_sums`` (``edges``).
    """
    out = []
    for face_class, (edge, non_core) in zip(by_class, edges, strict=True):
        columns = [face_class[:, FIRST_CLASS:].sum(axis=1)]
        for table, group_code in zip(tables, codes, strict=True):
            class_px = face_class @ table.astype(np.int64)
            columns += [class_px, edge[:, group_code], class_px - non_core[:, group_code]]
        out.append(np.stack(columns, axis=1).astype(np.int64))
    return out


def class_metrics(parts_px: np.ndarray, *, area_px: int, edge_sides: int, core_px: int, pixel_ha: float,
                  resolution_m: float) -> dict[str, float]:
    """FRAGSTATS class-level metrics from patch (part) sizes in pixels and the zone's mapped area.

    Returns hectares, counts, % and m/ha as named; metrics undefined for no patch are NaN.
    """
    parts = np.asarray(parts_px, dtype=np.float64)
    parts = parts[parts > 0]
    area_ha = area_px * pixel_ha
    n = len(parts)
    total = parts.sum() * pixel_ha
    squares = float((parts * pixel_ha) @ (parts * pixel_ha)) if n else 0.0
    return {
        "patch_count": float(n),
        "patch_density": 100 * n / area_ha if area_ha else math.nan,
        "largest_patch_index": 100 * parts.max() * pixel_ha / area_ha if n and area_ha else (0.0 if area_ha else math.nan),
        "mean_patch_area_ha": total / n if n else math.nan,
        "area_weighted_mean_patch_ha": squares / total if n else math.nan,
        "effective_mesh_size_ha": squares / area_ha if area_ha else math.nan,
        "edge_density_m_per_ha": edge_sides * resolution_m / area_ha if area_ha else math.nan,
        "core_area_ha": core_px * pixel_ha,
    }


# ------------------------------------------------------------------------------------------ compute
def year_group_stats(lc: da.Array, ctx: Context, tables: np.ndarray, codes: np.ndarray, *, depth: int,
                     neighbourhood: int, keep_natural_runs: bool = False) -> tuple[list[np.ndarray], list[blocks.Patches | None]]:
    """One pass over the chunks of one year: per zone layer, (n_faces, 1 + 3 · n_groups) pixel counts, and
    per group its patches (None when the group has no pixel that year). ``tables``, ``codes``: class_groups;
    ``keep_natural_runs``: the patches of all natural land keep their runs (blocks.label_patches keep_runs)."""
    halo = max(depth, 1)
    chunks = blocks.halo_chunks(lc.chunks, (halo, halo))
    lc = lc.rechunk(chunks)
    haloed = da.overlap.overlap(lc, depth={0: halo, 1: halo}, boundary=0)
    faces = [ctx.face_ids[z.name].rechunk(chunks).to_delayed().ravel() for z in ctx.zones]
    n_faces = tuple(z.n_faces for z in ctx.zones)
    part_layers = tuple(k for k, z in enumerate(ctx.zones) if z.name != LANDSCAPE)  # patch parts per zone face
    parts = [dask.delayed(_year_block, pure=True, nout=2)(
        block, *(f[i] for f in faces), tables=tables, codes=codes, eco_of_class=ctx.legend.ecosystem, halo=halo,
        depth=depth, n_faces=n_faces, part_layers=part_layers, neighbourhood=neighbourhood,
        keep_natural_runs=keep_natural_runs) for i, block in enumerate(haloed.to_delayed().ravel())]
    counts, group_stats = dask.compute(blocks.tree_sum([p[0] for p in parts]), [p[1] for p in parts])
    patches = []
    for g, table in enumerate(tables):
        if all(s[g] is None for s in group_stats):
            patches.append(None)
            continue
        grid_stats = np.empty(lc.numblocks, object)
        for i, (s, shape) in enumerate(zip(group_stats, itertools.product(*lc.chunks), strict=True)):
            grid_stats.flat[i] = s[g] if s[g] is not None else blocks.empty_stats(
                shape, n_values=2, n_faces=tuple(n_faces[k] for k in part_layers),
                keep_runs=keep_natural_runs and not codes[g])  # all natural land (code 0): its runs are kept
        mask = lc.map_blocks(blocks.lookup_block, table=table, dtype=bool)
        patches.append(blocks.patches_from_stats(grid_stats, mask.chunks, mask=mask, neighbourhood=neighbourhood))
    return counts, patches


def _zone_parts(patches: blocks.Patches, ctx: Context) -> list[sparse.csr_array]:
    """Per zone layer, sparse (n_patches + 1, n_zones) pixel counts of each patch inside each zone."""
    layers = [z for z in ctx.zones if z.name != LANDSCAPE]
    result: dict[str, sparse.csr_array] = {}
    if layers:  # summarised with the patches in the year pass (year_group_stats)
        for layer, counts in zip(layers, patches.face_parts, strict=True):
            result[layer.name] = (counts @ sparse.csr_array(layer.member.astype(np.int64))).tocsr()
    out = []
    for z in ctx.zones:
        if z.name == LANDSCAPE:
            out.append(sparse.csr_array(patches.pixel_count.reshape(-1, 1)))
        else:
            out.append(result[z.name])
    return out


def compute(stack: xr.DataArray, ctx: Context) -> IndicatorResult:
    """Connectivity metrics for every year, class group and zone; ECA and ProtConn; patch polygons.

    Class groups absent from the landscape in every year are left out; a group absent in one year only
    gets zero patches that year (so its change is reported). When degradation will label the natural patches
    with the same neighbourhood, the labelling of all natural land is left in ``ctx.natural_patches`` for it.
    """
    cfg: ConnectivityConfig = ctx.config.indicators.connectivity  # type: ignore[assignment]
    depth = core_depth_px(cfg.edge_depth_m, ctx.grid.resolution_m)
    groups = class_groups(ctx.legend)
    tables, codes = np.stack([t for _, t, _ in groups]), np.array([c for _, _, c in groups])
    years = [int(y) for y in stack["year"].values]
    stats, year_patches = {}, {}
    share = _degradation_labels_natural(ctx, cfg.neighbourhood)
    for i, year in enumerate(years):
        stats[year], year_patches[year] = year_group_stats(stack.data[i], ctx, tables, codes, depth=depth,
                                                           neighbourhood=cfg.neighbourhood, keep_natural_runs=share)
        if share and year_patches[year][-1] is not None:  # the last group is all natural land (class_groups)
            ctx.natural_patches[(stack.data.name, year, cfg.neighbourhood)] = year_patches[year][-1]
    present = [g for g in range(len(groups)) if any(stats[y][0][:, 1 + 3 * g].sum() for y in years)]
    values: dict[tuple, float] = {}
    patch_frames = []
    for year in years:
        for g in present:
            group = groups[g][0]
            patches = year_patches[year][g]
            values.update(_zone_values(patches, stats[year], g, group, year, ctx))
            eca, frame = _network(patches, group, year, ctx, cfg)
            values.update(eca)
            if frame is not None:
                patch_frames.append(frame)
    rows = _year_rows(values) + _change_rows(values, ctx.config.periods()) + _protconn_rows(ctx, cfg)
    table = tidy(rows, landscape=ctx.config.name, indicator=NAME)
    columns = {"patch_id": [], "year": [], "ecosystem": [], "area_ha": [], "core_ha": []}
    patches_gdf = (gpd.GeoDataFrame(_concat(patch_frames), geometry="geometry", crs=ctx.grid.crs) if patch_frames
                   else gpd.GeoDataFrame(columns, geometry=[], crs=ctx.grid.crs))
    return IndicatorResult(table=table, features={PATCH_LAYER: patches_gdf}, zone_metrics=ZONE_METRICS)


def _degradation_labels_natural(ctx: Context, neighbourhood: int) -> bool:
    """Whether degradation will label the natural patches of every year with this neighbourhood (its small_patch
    and isolation rules): connectivity's labelling of all natural land is the same, so it is left to it."""
    cfg = ctx.config.indicators.degradation
    return cfg is not None and cfg.neighbourhood == neighbourhood and bool({"small_patch", "isolation"} & set(cfg.rules))


def _zone_values(patches: blocks.Patches | None, year_stats: list[np.ndarray], g: int, group: str, year: int,
                 ctx: Context) -> dict[tuple, float]:
    """Patch metrics of one group and year for every zone of every layer."""
    parts = _zone_parts(patches, ctx) if patches is not None else [None] * len(ctx.zones)
    out = {}
    for layer, layer_stats, layer_parts in zip(ctx.zones, year_stats, parts, strict=True):
        zone_stats = layer.zone_counts(layer_stats)  # (n_zones, 1 + 3 G)
        for z, zone in enumerate(layer.zone_names):
            if zone_stats[z, 0] == 0:
                continue
            part_px = layer_parts[:, [z]].toarray().ravel() if layer_parts is not None else np.array([])
            metrics = class_metrics(part_px, area_px=int(zone_stats[z, 0]), edge_sides=int(zone_stats[z, 2 + 3 * g]),
                                    core_px=int(zone_stats[z, 3 + 3 * g]), pixel_ha=ctx.grid.pixel_area_ha,
                                    resolution_m=ctx.grid.resolution_m)
            out.update({(metric, layer.name, zone, group, year): value for metric, value in metrics.items()})
    return out


def _network(patches: blocks.Patches | None, group: str, year: int, ctx: Context,
             cfg: ConnectivityConfig) -> tuple[dict[tuple, float], gpd.GeoDataFrame | None]:
    """ECA per dispersal distance over patches >= min_patch_ha, and those patches as polygons."""
    pixel_ha = ctx.grid.pixel_area_ha
    landscape = ctx.zones[0].zone_names[0]
    if patches is None:
        keep, shapes, natural_ha = np.array([], dtype=np.int64), {}, 0.0
    else:
        keep = np.flatnonzero(patches.pixel_count >= max(cfg.min_patch_ha / pixel_ha, 1))
        shapes = patches.polygons(keep, ctx.grid.transform) if keep.size else {}
        natural_ha = patches.pixel_count.sum() * pixel_ha
    areas = patches.pixel_count[keep] * pixel_ha if patches is not None else np.array([])
    geoms = [shapes[int(i)] for i in keep]
    eca = graph.equivalent_connected_area(areas, geoms, dispersal_m=cfg.dispersal_m, p_at_dispersal=cfg.p_at_dispersal,
                                          prune_probability=cfg.prune_probability)
    out = {}
    for dispersal, value in eca.items():
        tag = f"{dispersal:g}m"
        out[(f"equivalent_connected_area_ha_{tag}", LANDSCAPE, landscape, group, year)] = value
        out[(f"eca_pct_{tag}", LANDSCAPE, landscape, group, year)] = 100 * value / natural_ha if natural_ha else math.nan
    if not keep.size:
        return out, None
    frame = gpd.GeoDataFrame({"patch_id": keep.astype(np.int64), "year": year, "ecosystem": group, "area_ha": areas,
                              "core_ha": patches.value_counts[keep, 1] * pixel_ha}, geometry=geoms, crs=ctx.grid.crs)
    return out, frame


def _concat(frames: list[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


def _unit(metric: str) -> str:
    if metric.startswith("equivalent_connected_area_ha"):
        return "ha"
    if metric.startswith(("eca_pct", "protconn_pct")):
        return "%"
    return UNITS[metric]


def _year_rows(values: dict[tuple, float]) -> list[dict]:
    return [{"metric": metric, "unit": _unit(metric), "zone_layer": layer, "zone": zone, "ecosystem": group,
             "year": year, "value": value}
            for (metric, layer, zone, group, year), value in values.items() if not math.isnan(value)]


def _change_rows(values: dict[tuple, float], periods: list[tuple[int, int]]) -> list[dict]:
    """<metric>_change (absolute) and <metric>_change_pct (% of the earlier year) for every period."""
    rows = []
    for (metric, layer, zone, group, year), before in values.items():
        for year_from, year_to in periods:
            if year != year_from or (metric, layer, zone, group, year_to) not in values:
                continue
            after = values[(metric, layer, zone, group, year_to)]
            if math.isnan(before) or math.isnan(after):
                continue
            base = {"zone_layer": layer, "zone": zone, "ecosystem": group, "year_from": year_from, "year_to": year_to}
            rows.append({**base, "metric": f"{metric}_change", "unit": _unit(metric), "value": after - before})
            if before != 0:
                rows.append({**base, "metric": f"{metric}_change_pct", "unit": "%", "value": 100 * (after - before) / before})
    return rows


def _protconn_rows(ctx: Context, cfg: ConnectivityConfig) -> list[dict]:
    """ProtConn (Saura et al. 2017) per dispersal distance for each zone layer marked ``protected``."""
    rows = []
    landscape = ctx.zones[0]
    scale = ctx.grid.areal_scale  # polygon areas on the grid CRS -> true areas (1 on equal-area grids)
    area_ha = landscape.zone_geometries[0].area / 10_000 / scale
    for name, layer_cfg in ctx.config.zones.items():
        if not layer_cfg.protected:
            continue
        layer: ZoneLayer = next(z for z in ctx.zones if z.name == name)
        nodes = protected_nodes(layer)
        eca = graph.equivalent_connected_area(np.array([g.area / 10_000 / scale for g in nodes]), nodes,
                                              dispersal_m=cfg.dispersal_m, p_at_dispersal=cfg.p_at_dispersal,
                                              prune_probability=cfg.prune_probability)
        for dispersal, value in eca.items():
            rows.append({"metric": f"protconn_pct_{dispersal:g}m", "unit": "%", "zone_layer": name,
                         "zone": landscape.zone_names[0], "value": 100 * value / area_ha})
    return rows


def protected_nodes(layer: ZoneLayer) -> list:
    """Protected areas as ProtConn nodes: the layer dissolved (overlaps counted once) and split into parts."""
    import shapely

    merged = shapely.union_all(list(layer.zone_geometries))
    return [g for g in shapely.get_parts(merged) if g.area > 0]
