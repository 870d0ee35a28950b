"""River km affected: the parts of river lines within a distance of mining sites, computed exactly."""

import numpy as np
import pytest
import shapely

from pipeline.indicators.mining_sites import lines_within
from pipeline.kernels import capsule_intervals

SITE = shapely.box(0, 0, 30, 30)  # one 30 m mining pixel


def length(lines):
    """Total length of an array of lines (m)."""
    return float(shapely.length(lines).sum())


def test_river_passing_beside_a_site_by_hand():
    """River 50 m above the top edge, distance 100 m: 30 m along the edge plus two circle chords of
    sqrt(100^2 - 50^2) m beyond the corners."""
    river = shapely.LineString([(-500, 80), (500, 80)])
    assert length(lines_within(river, [SITE], 100)) == pytest.approx(30 + 2 * np.sqrt(100**2 - 50**2), abs=1e-9)


def test_river_through_a_site_and_deep_inside_a_large_one():
    assert length(lines_within(shapely.LineString([(-500, 15), (500, 15)]), [SITE], 100)) == pytest.approx(230)
    big = shapely.box(0, 0, 1000, 1000)  # the middle of the river is more than 100 m from every edge
    river = shapely.LineString([(-500, 500), (200, 500), (1500, 500)])  # a vertex inside the site
    assert length(lines_within(river, [big], 100)) == pytest.approx(1200)
    # a whole segment (400..600) more than 100 m from every edge: no capsule reaches it, only its midpoint test
    river = shapely.LineString([(-500, 500), (400, 500), (600, 500), (1500, 500)])
    assert length(lines_within(river, [big], 100)) == pytest.approx(1200)
    # two overlapping sites: the edge of one inside the other adds nothing; the river is inside from -100 m to 1,100 m
    assert length(lines_within(river, [big, shapely.box(100, 400, 1000, 600)], 100)) == pytest.approx(1200)


def test_overlapping_reaches_count_once_and_far_rivers_not_at_all():
    sites = [SITE, shapely.box(60, 0, 90, 30)]  # two pixels 30 m apart: their 100 m zones overlap
    river = shapely.LineString([(-500, 80), (500, 80)])
    assert length(lines_within(river, sites, 100)) == pytest.approx(90 + 2 * np.sqrt(100**2 - 50**2), abs=1e-9)
    assert length(lines_within(shapely.LineString([(-500, 131), (500, 131)]), [SITE], 100)) == 0


def test_capsule_interval_of_a_segment_by_hand():
    """Segment from (-100, 50) to (100, 50) (t = 0..1) against the edge (0, 0)-(30, 0), distance 60:
    the rectangle gives x in [0, 30]; the end discs add sqrt(60^2 - 50^2) = 33.17 m on both sides."""
    lo, hi = capsule_intervals(np.array([[-100.0, 50, 100, 50]]), np.array([[0.0, 0, 30, 0]]), 60)
    reach = np.sqrt(60**2 - 50**2)
    assert lo[0] == pytest.approx((100 - reach) / 200) and hi[0] == pytest.approx((130 + reach) / 200)
    lo, hi = capsule_intervals(np.array([[-100.0, 61, 100, 61]]), np.array([[0.0, 0, 30, 0]]), 60)
    assert lo[0] >= hi[0]  # never within 60 m


def test_agrees_with_a_very_fine_buffer_on_random_sites():
    """A 1024-segment buffer is within ~1e-7 of the true circle; the exact answer must agree that closely
    (the 64-segment buffer used before fell ~2e-5 short)."""
    rng = np.random.default_rng(7)
    sites = [shapely.box(x, y, x + w, y + h) for x, y, w, h in rng.uniform([0, 0, 10, 10], [2000, 2000, 200, 200], (40, 4))]
    river = shapely.LineString(rng.uniform(0, 2000, (60, 2)))
    fine = shapely.intersection(river, shapely.union_all(shapely.buffer(sites, 100, quad_segs=1024))).length
    assert length(lines_within(river, sites, 100)) == pytest.approx(fine, rel=1e-6)
