"""Graph connectivity of habitat patches: equivalent connected area and ProtConn (DESIGN.md §4).

Probability of connectivity (Saura & Pascual-Hortal 2007): PC_num = Σ_i Σ_j a_i a_j p*_ij, where p*_ij is the
maximum-product probability over all paths from i to j (p*_ii = 1), and a link's probability falls off as a
negative exponential of the edge-to-edge distance, p_ij = exp(-k d_ij), with k set so that p = p_at_dispersal
at the dispersal distance. ECA = sqrt(PC_num), in the unit of the areas (ha).

Because -ln p is proportional to distance, the maximum-product path is the shortest path through the stepping
stones (distances inside a patch count as zero), so one shortest-path search serves every dispersal distance.

Pruning: links longer than ``d_limit`` (where p falls below ``prune_probability`` at the longest dispersal
distance) are left out and paths beyond it stop. Each pair left out has p*_ij < prune_probability, so
PC_num is underestimated by at most prune_probability · ((Σa)² - Σa²): a relative error in ECA below
prune_probability / 2 · ((Σa)² - Σa²) / PC_num.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import shapely
from scipy import sparse
from scipy.sparse import csgraph

DIJKSTRA_BATCH = 256  # source patches per shortest-path batch: memory is batch x n_patches float64


def decay_rate(dispersal_m: float, p_at_dispersal: float) -> float:
    """k (1/m) of p(d) = exp(-k d) so that p(dispersal_m) = p_at_dispersal."""
    return math.log(1 / p_at_dispersal) / dispersal_m


def distance_limit(dispersal_m: Sequence[float], p_at_dispersal: float, prune_probability: float) -> float:
    """Distance (m) beyond which every link is less likely than prune_probability, for the longest dispersal."""
    return math.log(1 / prune_probability) / decay_rate(max(dispersal_m), p_at_dispersal)


def edge_distances(geoms: Sequence[shapely.Geometry], *, max_distance_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edge-to-edge distances (m) of every pair i < j of geometries closer than ``max_distance_m``."""
    geoms = np.asarray(geoms, dtype=object)
    if len(geoms) < 2:
        empty = np.array([], dtype=np.int64)
        return empty, empty, np.array([], dtype=float)
    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms, predicate="dwithin", distance=max_distance_m)
    keep = left < right
    left, right = left[keep], right[keep]
    return left, right, shapely.distance(geoms[left], geoms[right])


def pc_numerators(areas: np.ndarray, i: np.ndarray, j: np.ndarray, d: np.ndarray, *, rates: Sequence[float],
                  limit_m: float) -> np.ndarray:
    """Σ_i Σ_j a_i a_j exp(-k d*_ij) for each decay rate k, d* = shortest path distance (<= limit_m)."""
    n = len(areas)
    totals = np.zeros(len(rates))
    if n == 0:
        return totals
    # a stored zero would read as "no link": patches touching at a corner (4-neighbour rule) get 1 µm
    graph = sparse.coo_array((np.maximum(d, 1e-6), (i, j)), shape=(n, n)).tocsr()
    for start in range(0, n, DIJKSTRA_BATCH):
        sources = np.arange(start, min(n, start + DIJKSTRA_BATCH))
        dist = csgraph.dijkstra(graph, directed=False, indices=sources, limit=limit_m)
        weights = areas[sources, None] * areas[None, :]
        for r, k in enumerate(rates):
            totals[r] += float((weights * np.exp(-k * dist)).sum())
    return totals


def equivalent_connected_area(areas_ha: np.ndarray, geoms: Sequence[shapely.Geometry], *, dispersal_m: Sequence[float],
                              p_at_dispersal: float, prune_probability: float) -> dict[float, float]:
    """ECA (ha) for each dispersal distance over patches with areas ``areas_ha`` and shapes ``geoms``."""
    limit = distance_limit(dispersal_m, p_at_dispersal, prune_probability)
    i, j, d = edge_distances(geoms, max_distance_m=limit)
    rates = [decay_rate(D, p_at_dispersal) for D in dispersal_m]
    numerators = pc_numerators(np.asarray(areas_ha, float), i, j, d, rates=rates, limit_m=limit)
    return {float(D): float(math.sqrt(num)) for D, num in zip(dispersal_m, numerators, strict=True)}
