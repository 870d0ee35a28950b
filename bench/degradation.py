"""Benchmark case ``degradation`` (issue 4): all five rules on both generated years, our side only.

- ``ours``: ``pipeline.indicators.degradation.compute`` (the real entry point) with rules transition,
  condition, edge, small_patch and isolation (edge_depth_m 100, isolation_m 1000, small_patch_ha 5,
  large_patch_ha 100, 8-neighbour) for the period between the two generated years, on a lazy class-index stack
  (year, y, x) read chunk by chunk from the GeoTIFFs (``pipeline.sources.local.lazy_raster`` + the legend
  lookup table, as ``pipeline/runner.py`` does), a Context from ``pipeline.testing.make_context``, chunks
  ``chunk_px``, threaded scheduler. Timed end to end: graph building, every compute, and the degraded-patch
  polygons (>= 0.5 ha, ``degraded_patches`` layer); nothing is written to disk. Before the timer, the same on
  the 512 px top-left window (``bench.common.warm_up``; its seconds are in the notes).

There is no peer (nothing else computes these rules), so nothing is compared; ``values`` holds the landscape
totals (degraded ha per rule and any, natural_both_ha, patch count) to compare across commits.
Mpx/s counts pixel-years: rows x cols x 2 years / wall (``PIXEL_YEARS``).
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

NAME = "degradation"
SIDES = ("ours",)
OPTIONAL_SIDES = ()
PEER = None
PIXEL_YEARS = 2  # both years are read and processed: Mpx/s = rows x cols x 2 / wall
GOAL_MPX_PER_S = 50.0  # issue 4: >= 50 Mpx/s on 2 cores with <= 2 GB at >= 144 Mpx
RULES = ["transition", "condition", "edge", "small_patch", "isolation"]
SETTINGS = {"rules": RULES, "neighbourhood": 8, "edge_depth_m": 100.0, "isolation_m": 1000.0,
            "small_patch_ha": 5.0, "large_patch_ha": 100.0}


def run_ours(ds: Dataset, *, chunk_px: int, workers: int, **_) -> dict:
    from pipeline import blocks
    from pipeline.indicators import degradation

    p = ds.params
    warm = warm_up(lambda: degradation.compute(*two_year_context(
        ds, chunk_px=WARM_UP_CHUNK, workers=workers, indicators={"degradation": SETTINGS}, shape=WARM_UP_SHAPE)))
    stages: dict[str, float] = {}
    started = time.perf_counter()
    stack, ctx = two_year_context(ds, chunk_px=chunk_px, workers=workers, indicators={"degradation": SETTINGS})
    # natural_patches: natural-land labels per year; flags_counts: one pass computing the rule flags, the counts
    # and the degraded-patch labels; degraded_patches: the patch attributes; polygons: the kept patches' shapes
    targets = [(degradation, "_patch_sizes", "natural_patches"), (degradation, "_count", "flags_counts"),
               (degradation, "_patches", "degraded_patches"), (blocks.Patches, "polygons", "polygons")]
    result = timed_compute(degradation.compute, stack, ctx, workers=workers, stages=stages, targets=targets)
    seconds = time.perf_counter() - started
    table = result.table
    rows = table[(table["zone_layer"] == "landscape") & (table["ecosystem"] == "all_natural") & (table["unit"] == "ha")]
    values = {r.metric: float(r.value) for r in rows.itertuples()}
    patches = result.features[degradation.PATCH_LAYER]
    values["degraded_patches"] = float(len(patches))
    stages["other"] = seconds - sum(stages.values())
    return {"seconds": seconds, "stages": stages, "values": values,
            "notes": f"rules {'+'.join(RULES)}, {p.years[0]}-{p.years[1]}; patch polygons included "
                     f"({len(patches)} >= {degradation.MIN_PATCH_HA} ha); Mpx/s = px x 2 years / wall; "
                     f"chunk {chunk_px}, threads x{workers}; warm-up before the timer {warm:.2f} s"}


run_side = ours_only(run_ours)
compare = no_comparison
