"""Vector features of the benchmark landscapes, in pixel coordinates (x = column, y = row): meandering rivers
(main rivers, tributaries, creeks), fishbone road networks, and mining sites as chains of pits along rivers.
Used by bench.generate; every draw comes from the generator passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import shapely

if TYPE_CHECKING:
    from bench.generate import Params


def _chaikin(pts: np.ndarray, rounds: int = 2) -> np.ndarray:
    for _ in range(rounds):
        q = 0.75 * pts[:-1] + 0.25 * pts[1:]
        r = 0.25 * pts[:-1] + 0.75 * pts[1:]
        pts = np.concatenate([pts[:1], np.stack([q, r], axis=1).reshape(-1, 2), pts[-1:]])
    return pts


def _meander(rng: np.random.Generator, start, heading: float, length_px: float, *, step_px: float = 15,
             sigma: float = 0.22, keep: float = 0.92) -> np.ndarray:
    """A meandering line (x = column, y = row): the heading's deviation is a mean-reverting random walk."""
    n = max(2, int(length_px / step_px))
    dev = np.empty(n)
    d = 0.0
    for i, kick in enumerate(rng.normal(0, sigma, n)):
        d = keep * d + kick
        dev[i] = d
    angle = heading + np.cumsum(rng.normal(0, 0.01, n)) + dev
    steps = step_px * np.column_stack([np.cos(angle), np.sin(angle)])
    return _chaikin(np.vstack([start, np.asarray(start, float) + np.cumsum(steps, axis=0)]))


@dataclass
class Vectors:
    rivers: list[tuple[shapely.LineString, float, int]]  # (line in px coords, width px, order 1 main .. 3 creek)
    roads: list[shapely.LineString]
    mining: dict[int, list[shapely.Polygon]]  # year -> pit polygons (px coords)


def make_vectors(p: Params, rng: np.random.Generator, *, mining_share: float) -> Vectors:
    h, w = p.rows, p.cols
    km = p.res_m / 1000  # km per px
    box = shapely.box(-50, -50, w + 50, h + 50)
    extent_km = max(h, w) * km

    def inside(line):
        part = line.intersection(box)
        return [g for g in shapely.get_parts(part) if g.length > 0]

    def random_point(line):
        for _ in range(50):
            pt = line.interpolate(rng.uniform(0, line.length))
            if 0 <= pt.x < w and 0 <= pt.y < h:
                return pt
        return None

    def direction(line, pt):
        d = line.project(pt)
        a, b = line.interpolate(max(d - 20, 0)), line.interpolate(min(d + 20, line.length))
        return math.atan2(b.y - a.y, b.x - a.x)

    rivers: list[tuple[shapely.LineString, float, int]] = []
    for i in range(max(1, round(extent_km / 60))):
        if i % 2 == 0:
            start, heading = (-0.1 * w, rng.uniform(0.2, 0.8) * h), rng.uniform(-0.3, 0.3)
        else:
            start, heading = (rng.uniform(0.2, 0.8) * w, -0.1 * h), math.pi / 2 + rng.uniform(-0.3, 0.3)
        main = shapely.LineString(_meander(rng, start, heading, 1.5 * max(h, w), step_px=20, sigma=0.2))
        rivers += [(g, 9.0, 1) for g in inside(main)]
    for order, (n_per_km, length_km, width) in ((2, (1 / 10, (0.1 * extent_km, 0.35 * extent_km), 4.0)),
                                                (3, (1 / 6, (2.0, 8.0), 2.0))):
        parents = [(line, wd) for line, wd, o in rivers if o == order - 1]
        for line, _ in parents:
            for _ in range(rng.poisson(line.length * km * n_per_km)):
                pt = random_point(line)
                if pt is None:
                    continue
                heading = direction(line, pt) + rng.choice([-1, 1]) * rng.uniform(0.9, 1.9)
                length = rng.uniform(*length_km) / km
                trib = shapely.LineString(_meander(rng, (pt.x, pt.y), heading, length, step_px=12, sigma=0.25))
                rivers += [(g, width, order) for g in inside(trib)]

    roads: list[shapely.LineString] = []
    for _ in range(max(1, round(extent_km / 50))):
        side = rng.integers(4)
        t = rng.uniform(0.15, 0.85)
        start, heading = [((t * w, -0.05 * h), math.pi / 2), ((1.05 * w, t * h), math.pi),
                          ((t * w, 1.05 * h), -math.pi / 2), ((-0.05 * w, t * h), 0.0)][side]
        road = shapely.LineString(_meander(rng, start, heading + rng.uniform(-0.5, 0.5), 1.4 * max(h, w),
                                           step_px=50, sigma=0.03, keep=0.9))
        roads.append(road)
        d, flip = rng.uniform(0, 3) / km, 1
        while d < road.length:
            pt = road.interpolate(d)
            if 0 <= pt.x < w and 0 <= pt.y < h:
                heading = direction(road, pt) + flip * (math.pi / 2 + rng.uniform(-0.2, 0.2))
                roads.append(shapely.LineString(_meander(rng, (pt.x, pt.y), heading, rng.uniform(2, 8) / km,
                                                         step_px=50, sigma=0.05, keep=0.8)))
                flip = -flip
            d += rng.uniform(2, 4) / km

    return Vectors(rivers, roads, _mining_sites(p, rng, rivers, mining_share))


def _site_pits(line: shapely.LineString, d0: float, n: int, seed: int, grow: float) -> np.ndarray:
    """The first ``n`` pits of a mining site: irregular blobs (radius 40-130 m, +-30 % around each blob)
    strung along ``line`` from distance d0, ~85 m apart. The same seed gives the same first pits, so a
    site only grows from one year to the next. Returns an array of polygons (px coordinates)."""
    if n == 0:
        return np.array([], dtype=object)
    rng = np.random.default_rng(seed)
    r = rng.uniform(4, 13, 64)[:n] * grow
    off = rng.normal(0, 0.6, 64)[:n]
    d = d0 + np.cumsum(rng.uniform(6, 11, 64))[:n]
    wobble = np.fft.ifft(np.fft.fft(rng.normal(0, 1, (64, 20)), axis=1) * (np.arange(20) < 4), axis=1).real[:n]
    radius = r[:, None] * (1 + 0.3 * wobble / (np.abs(wobble).max(axis=1, keepdims=True) + 1e-9))
    centre = shapely.get_coordinates(shapely.line_interpolate_point(line, d))
    ahead = shapely.get_coordinates(shapely.line_interpolate_point(line, d + 1))
    normal = np.column_stack([centre[:, 1] - ahead[:, 1], ahead[:, 0] - centre[:, 0]])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-9
    centre = centre + (off * r)[:, None] * normal
    a = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    ring = centre[:, None, :] + radius[..., None] * np.stack([np.cos(a), np.sin(a)], axis=-1)
    return shapely.polygons(ring)


def _mining_sites(p: Params, rng: np.random.Generator, rivers, mining_share: float) -> dict[int, np.ndarray]:
    """Mining pits per year: sites along rivers (mostly tributaries and creeks), clustered in districts of
    5 km radius; each site is a chain of 5-30 pits that lengthens by 10-70 % by the second year, and a
    quarter more sites open between the years."""
    target_px = mining_share * p.rows * p.cols
    frame = shapely.box(0, 0, p.cols, p.rows)
    lines = [line for line, _, _ in rivers]
    order_weight = np.array([{1: 0.2, 2: 1.0, 3: 1.5}[order] for _, _, order in rivers])
    tree = shapely.STRtree(lines)
    districts = []  # per district: stretches (line index, from, to distance) inside it and their weights
    while len(districts) < max(4, round(p.mpx / 2)):
        k = rng.choice(len(lines), p=(w := order_weight * shapely.length(lines)) / w.sum())
        centre = shapely.line_interpolate_point(lines[k], rng.uniform(0, lines[k].length))
        if not frame.contains(centre):
            continue
        disc = centre.buffer(500)
        stretches, weights = [], []
        for i in tree.query(disc, predicate="intersects"):
            for part in shapely.get_parts(lines[i].intersection(disc)):
                if part.length > 30:
                    ends = sorted(lines[i].project(shapely.Point(c)) for c in (part.coords[0], part.coords[-1]))
                    stretches.append((int(i), *ends))
                    weights.append(part.length * order_weight[i])
        if stretches:
            districts.append((stretches, np.array(weights) / sum(weights)))
    sites = []  # (line index, start distance, pits in year 0, pits in year 1, seed)

    def add_site(opens_later: bool) -> float:
        stretches, weights = districts[rng.integers(len(districts))]
        k, lo, hi = stretches[rng.choice(len(stretches), p=weights)]
        d0 = rng.uniform(lo, hi)
        n0 = int(rng.integers(5, 30))
        n1 = int(round(n0 * rng.uniform(1.1, 1.7)))
        seed = int(rng.integers(2**31))
        sites.append((k, d0, 0 if opens_later else n0, n0 if opens_later else n1, seed))
        return shapely.union_all(_site_pits(lines[k], d0, n0, seed, 1.0)).intersection(frame).area

    def pits(year_index: int) -> np.ndarray:
        return np.concatenate([_site_pits(lines[s[0]], s[1], s[2 + year_index], s[4], 1.0 + 0.1 * year_index)
                               for s in sites])

    # add sites until the sum of their areas reaches target x overlap allowance, then check the true union
    estimate, allowance = 0.0, 1.2
    while len(sites) < 100_000:
        while estimate < allowance * target_px:
            estimate += add_site(opens_later=False)
        actual = shapely.union_all(pits(0)).intersection(frame).area
        if actual >= target_px:
            break
        allowance *= 1.02 * target_px / actual
    for _ in range(max(1, len(sites) // 4)):  # sites that open between the years
        add_site(opens_later=True)
    return {y: list(pits(i)) for i, y in enumerate(p.years)}


# ------------------------------------------------------------------------------------------------ study area
def boundary_polygon(p: Params, rng: np.random.Generator, *, vertices: int = 4000, fill: float = 0.6) -> shapely.Polygon:
    """The study-area boundary (px coordinates): a star-shaped blob around the landscape centre whose radius
    varies with angle (a few broad lobes plus fine irregularity, as a watershed or district outline), with
    ``vertices`` vertices, inside the raster with a 2 % margin, covering about ``fill`` of its bounding box
    (so the chunks near the corners lie outside it)."""
    a = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    k = np.arange(1, 41)
    amp = rng.normal(0, 1, (2, k.size)) / k**1.3  # broad lobes dominate, fine detail decays
    r = 1 + 0.25 * (amp[0] @ np.cos(np.outer(k, a)) + amp[1] @ np.sin(np.outer(k, a))) / np.abs(amp).sum() * 4
    r = np.clip(r, 0.35, None) + rng.normal(0, 0.004, vertices)  # vertex-level jitter (digitised outline)
    x, y = np.cos(a) * r, np.sin(a) * r
    # scale the blob into the raster with a 2 % margin on its widest extent
    sx = 0.96 * p.cols / (x.max() - x.min())
    sy = 0.96 * p.rows / (y.max() - y.min())
    x = 0.02 * p.cols + (x - x.min()) * sx
    y = 0.02 * p.rows + (y - y.min()) * sy
    poly = shapely.make_valid(shapely.Polygon(np.column_stack([x, y])))
    poly = max(shapely.get_parts(poly), key=lambda g: g.area)  # one polygon even if the jitter pinched a loop
    box_area = (x.max() - x.min()) * (y.max() - y.min())
    if not 0.3 * fill < poly.area / box_area < 1.0:
        raise ValueError(f"boundary fills {poly.area / box_area:.0%} of its box")
    return poly


def district_polygons(p: Params, rng: np.random.Generator, *, n: int = 9) -> list[shapely.Polygon]:
    """Zone polygons (px coordinates): ``n`` districts, the Voronoi cells of random seeds clipped to the
    raster's extent (they tile it without overlap), with edges densified to 50 px."""
    frame = shapely.box(0, 0, p.cols, p.rows)
    seeds = shapely.multipoints(np.column_stack([rng.uniform(0, p.cols, n), rng.uniform(0, p.rows, n)]))
    cells = shapely.get_parts(shapely.voronoi_polygons(seeds, extend_to=frame))
    cells = [shapely.segmentize(shapely.intersection(c, frame), 50) for c in cells]
    return sorted(cells, key=lambda c: (c.centroid.y, c.centroid.x))
