"""Benchmark case ``mining`` (issue 5): the alluvial mining footprint on both generated years, our side only.

- ``ours``: ``pipeline.indicators.mining.compute`` (the real entry point) with the legend's mining class
  (MapBiomas Amazonia code 30) as the only source, ``ctx.vectors["rivers"]`` = the generated ``rivers.gpkg``
  (main rivers, tributaries and creeks; in the grid CRS), riparian_buffer_m 500, affected_distance_m 100,
  min_persistence_years 1, no rights layers; the lazy class-index stack of both years, Context and scheduler
  as in bench/degradation.py. Timed end to end: graph building (riparian buffer union and its per-chunk
  rasterisation), the counts, the site labelling and polygons per year, distances to rivers and river km
  affected; nothing is written to disk. Before the timer, the same on the 512 px top-left window
  (``bench.common.warm_up``; its seconds are in the notes).

No peer; ``values`` holds the landscape totals per year (mining_ha, riparian_mining_ha, mining_sites,
river_km_affected, ...) to compare across commits. Mpx/s counts pixel-years: rows x cols x 2 years / wall.
"""

from __future__ import annotations

import time

from bench.common import (
    WARM_UP_CHUNK,
    WARM_UP_SHAPE,
    no_comparison,
    ours_only,
    timed_compute,
    two_year_context,
    warm_up,
)
from bench.generate import Dataset

NAME = "mining"
SIDES = ("ours",)
OPTIONAL_SIDES = ()
PEER = None
PIXEL_YEARS = 2
GOAL_MPX_PER_S = 50.0  # issue 5: >= 50 Mpx/s on 2 cores with <= 2 GB at >= 144 Mpx
SETTINGS = {"riparian_buffer_m": 500.0, "affected_distance_m": 100.0, "min_persistence_years": 1,
            "landcover_source": True}


def run_ours(ds: Dataset, *, chunk_px: int, workers: int, **_) -> dict:
    import geopandas as gpd

    from pipeline import blocks
    from pipeline.indicators import mining, mining_sites

    warm = warm_up(lambda: mining.compute(*two_year_context(
        ds, chunk_px=WARM_UP_CHUNK, workers=workers, indicators={"mining": SETTINGS}, shape=WARM_UP_SHAPE,
        vectors=lambda grid: {"rivers": gpd.read_file(ds.rivers).to_crs(grid.crs)})))
    stages: dict[str, float] = {}
    started = time.perf_counter()
    read: dict = {}

    def rivers_on(grid):
        read["rivers"] = gpd.read_file(ds.rivers).to_crs(grid.crs)
        stages["read_rivers"] = time.perf_counter() - started
        return {"rivers": read["rivers"]}

    stack, ctx = two_year_context(ds, chunk_px=chunk_px, workers=workers, indicators={"mining": SETTINGS},
                                  vectors=rivers_on)
    rivers = read["rivers"]
    # flags_counts: one pass computing the source flags, the counts and each year's site labels and outlines;
    # polygons joins the outlines; site_stats: river km affected (exact segment intervals), zone intersections
    # and geodesic lengths
    targets = [(mining, "_riparian_zone", "riparian_zone"), (mining, "_count", "flags_counts"),
               (mining_sites, "sites", "sites_other"), (blocks.Patches, "polygons", "polygons"),
               (mining_sites, "site_stats", "site_stats")]
    result = timed_compute(mining.compute, stack, ctx, workers=workers, stages=stages, targets=targets)
    seconds = time.perf_counter() - started
    table = result.table
    rows = table[(table["zone_layer"] == "landscape") & table["year"].notna()]
    values = {f"{int(r.year)}/{r.metric}": float(r.value) for r in rows.itertuples()}
    sites = result.features[mining.SITE_LAYER]
    stages["other"] = seconds - sum(stages.values())
    return {"seconds": seconds, "stages": stages, "values": values,
            "notes": f"landcover source (code 30), {len(rivers)} river lines, riparian 500 m, affected 100 m, no rights; "
                     f"site polygons included ({len(sites)} site-years); Mpx/s = px x 2 years / wall; "
                     f"chunk {chunk_px}, threads x{workers}; warm-up before the timer {warm:.2f} s"}


run_side = ours_only(run_ours)
compare = no_comparison
