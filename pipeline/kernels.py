"""Compiled per-chunk kernels (numba) for the patch and distance steps of the indicators (DESIGN.md §6, §9).

Every kernel is pure: numpy arrays in, numpy arrays out, no I/O and no global state. Units are pixels unless a
name says otherwise; callers convert metres to pixels (``euclidean_reach``).

- ``label``: connected components of a 2-D mask (4- or 8-neighbour), numbered 1..n in the row-major order of
  each component's first pixel: the numbering ``scipy.ndimage.label`` gives, with pixel counts per label;
  ``label_codes``: the same for every code of an integer array at once (pixels join only their own code);
  ``component_runs``: the same as runs, without a label image (``run_edges``, ``run_histogram``, ``paint_runs``
  and ``runs_image`` read them).
- ``within``: pixels within a bounded distance of a source mask (exact; any reach table), by linear passes
  instead of a distance transform (row doubling and a banded OR up to 16 px; beyond, cells first, then four
  sweeps where the cells do not decide); memory is two chunk-sized arrays.
- ``ecosystem_edges`` / ``ecosystem_edge_sums`` (connectivity), ``pair_flags`` / ``or_change`` / ``flag_counts``
  (degradation), ``site_values`` / ``mining_counts`` (mining): a few vectorised loops over a chunk instead of many
  numpy temporaries.
- ``label_face_counts``: pixels per (chunk-local patch label or class index, zone face): patch parts and class areas
  per zone; ``value_counts``: pixels per value (``np.bincount`` without its int64 copy).
- ``transition_counts``: pixels per (zone face, class from, class to) (conversion).
- ``lookup``: a table indexed by every pixel (product codes to class indices).
- ``merge_intervals``: sorted intervals merged per owner (river km affected, mining_sites.lines_within).
- ``mode_2x2``: the most frequent code of each 2x2 block (one level of the land-cover COGs' overviews).
"""

from __future__ import annotations

import math

import numba
import numpy as np

_JIT = dict(nogil=True, cache=True)  # nogil: dask's threads run kernels in parallel


@numba.njit(**_JIT)
def _find(parent: np.ndarray, x: int) -> int:
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:  # path compression
        parent[x], x = root, parent[x]
    return root


@numba.njit(**_JIT)
def _union(parent: np.ndarray, a: int, b: int) -> int:
    ra, rb = _find(parent, a), _find(parent, b)
    if ra < rb:
        parent[rb] = ra
        return ra
    parent[ra] = rb
    return rb


@numba.njit(**_JIT)
def _label_runs(code, diagonal, cap):
    """Run-based union-find: each row's runs of one code are joined to the runs of the same code they touch in
    the row above (overlapping columns; one column further with ``diagonal``), then numbered in the row-major
    order of their first run. Room for ``cap`` runs: n = -1 when there are more (growing the arrays inside the
    loop kept the compiler from optimising it, 6x slower)."""
    rows, cols = code.shape
    reach = 1 if diagonal else 0
    start = np.empty(cap, np.int32)
    end = np.empty(cap, np.int32)
    run_code = np.empty(cap, code.dtype)
    parent = np.empty(cap, np.int32)
    row_first = np.empty(rows + 1, np.int64)
    n_runs = 0
    prev_lo = 0
    for i in range(rows):
        row_first[i] = n_runs
        row = code[i]
        k = prev_lo  # first run of the previous row that may still touch a run of this row
        prev_hi = n_runs
        j = 0
        while j < cols:
            c = row[j]
            if not c:
                j += 1
                continue
            s = j
            j += 1
            while j < cols and row[j] == c:
                j += 1
            if n_runs == cap:
                none = np.zeros(0, np.int32)
                return -1, np.zeros(0, np.int64), np.zeros(0, np.int64), row_first, none, none, none
            start[n_runs], end[n_runs], run_code[n_runs], parent[n_runs] = s, j, c, n_runs
            while k < prev_hi and end[k] + reach <= s:
                k += 1
            m = k
            while m < prev_hi and start[m] < j + reach:
                if run_code[m] == c:
                    _union(parent, m, n_runs)
                m += 1
            n_runs += 1
        prev_lo = row_first[i]
    row_first[rows] = n_runs
    final = np.zeros(n_runs, np.int32)
    count = np.zeros(n_runs + 1, np.int64)
    first = np.empty(n_runs, np.int64)
    run_label = np.empty(n_runs, np.int32)
    n_final = 0
    for i in range(rows):
        for r in range(row_first[i], row_first[i + 1]):
            root = parent[r]
            while parent[root] != root:
                root = parent[root]
            parent[r] = root
            f = final[root]
            if f == 0:
                n_final += 1
                f = n_final
                final[root] = f
                first[f - 1] = i * cols + start[r]
            count[f] += end[r] - start[r]
            run_label[r] = f
    return n_final, count[:n_final + 1].copy(), first[:n_final].copy(), row_first, start[:n_runs].copy(), end[:n_runs].copy(), run_label


def component_runs(code: np.ndarray, neighbourhood: int, *, codes: bool = False) -> tuple[int, np.ndarray, np.ndarray, tuple]:
    """Connected components of a 2-D array as runs, without writing a label image.

    Components are those of ``label`` (nonzero pixels), or with ``codes`` those of ``label_codes`` (pixels
    join only their own code). Returns (n, count int64 (n + 1,) pixels per label with count[0] = 0, first int64
    (n,) row-major index of each label's first pixel, runs): runs = (row_first int32 (rows + 1,), start, end
    (columns; uint16 when they fit), label int32), row i's runs at row_first[i]:row_first[i + 1]. ``runs_image``,
    ``run_edges``, ``run_histogram`` and ``paint_runs`` read them. Memory: 12-16 bytes per run.
    """
    if neighbourhood not in (4, 8):
        raise ValueError(f"neighbourhood must be 4 or 8; got {neighbourhood!r}")
    code = np.ascontiguousarray(code if codes or code.dtype == bool else code != 0)
    rows, cols = code.shape
    out = _label_runs(code, neighbourhood == 8, rows * ((cols + 1) // 2) + 1)  # room for a binary mask's runs
    if out[0] < 0:  # codes side by side: up to a run per pixel
        out = _label_runs(code, neighbourhood == 8, rows * cols + 1)
    n, count, first, row_first, start, end, run_label = out
    column = np.uint16 if cols < 2**16 else np.int32
    return int(n), count, first, (row_first.astype(np.int32), start.astype(column), end.astype(column), run_label)


@numba.njit(**_JIT)
def _run_regions(row_first, start, end, run_label, keep):
    n_runs = start.size
    parent = np.arange(n_runs).astype(np.int32)
    for i in range(1, row_first.size - 1):
        k = row_first[i - 1]
        for r in range(row_first[i], row_first[i + 1]):
            if not keep[run_label[r]]:
                continue
            while k < row_first[i] and end[k] <= start[r]:
                k += 1
            m = k
            while m < row_first[i] and start[m] < end[r]:  # runs of the row above sharing a column
                if keep[run_label[m]]:
                    _union(parent, m, r)
                m += 1
    region = np.zeros(n_runs, np.int32)
    first_run = np.empty(n_runs, np.int64)
    n = 0
    for r in range(n_runs):
        if keep[run_label[r]]:
            root = _find(parent, r)
            if region[root] == 0:
                n += 1
                region[root] = n
                first_run[n - 1] = r
            region[r] = region[root]
    return n, region, first_run[:n].copy()


def run_regions(runs: tuple, keep: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """The 4-connected regions of the runs whose label ``keep`` selects (bool, indexed by label), joined run to
    run: (n, region of each run int32 (0: not kept), first run of each region int64 (n,)); numbered in the
    row-major order of their first pixel, as ``label(keep[image], 4)`` numbers them."""
    return _run_regions(*runs, np.ascontiguousarray(keep, dtype=np.bool_))


def runs_image(shape: tuple[int, int], runs: tuple) -> np.ndarray:
    """The int32 label image of ``component_runs`` runs (0 = background)."""
    lab = np.zeros(shape, np.int32)
    _paint_runs(lab, 0, 0, *runs, np.arange(runs[3].max(initial=0) + 1, dtype=np.int32))
    return lab


def label_codes(code: np.ndarray, neighbourhood: int) -> tuple[np.ndarray, int, np.ndarray]:
    """Connected components of each nonzero code of a 2-D integer array at once: pixels join only pixels of
    their own code, so the components of code c are those ``label(code == c)`` finds. Numbered 1..n by first
    pixel in row-major order over all codes (the components of one code keep their relative order); returns
    (labels int32, n, pixels per label) as ``label``. One pass instead of one per code."""
    n, count, _, runs = component_runs(code, neighbourhood, codes=True)
    return runs_image(code.shape, runs), n, count


@numba.njit(**_JIT)
def _paint_runs(out, row0, col0, row_first, start, end, run_label, values):
    for i in range(row_first.size - 1):
        row = out[row0 + i]
        for r in range(row_first[i], row_first[i + 1]):
            v = values[run_label[r]]
            for j in range(col0 + start[r], col0 + end[r]):
                row[j] = v


def paint_runs(out: np.ndarray, origin: tuple[int, int], runs: tuple, values: np.ndarray) -> None:
    """Write ``values[label]`` over every run of ``component_runs`` into ``out``, the runs' row 0 and column 0
    at ``origin`` (row, column) of ``out``; pixels outside the runs keep their value."""
    _paint_runs(out, int(origin[0]), int(origin[1]), *runs, values)


@numba.njit(**_JIT)
def _run_edges(rows, cols, row_first, start, end, run_label):
    top, bottom = np.zeros(cols, np.int32), np.zeros(cols, np.int32)
    left, right = np.zeros(rows, np.int32), np.zeros(rows, np.int32)
    for line, i in ((top, 0), (bottom, rows - 1)):
        for r in range(row_first[i], row_first[i + 1]):
            line[start[r]:end[r]] = run_label[r]
    for i in range(rows):
        lo, hi = row_first[i], row_first[i + 1]
        if lo < hi:
            if start[lo] == 0:
                left[i] = run_label[lo]
            if end[hi - 1] == cols:
                right[i] = run_label[hi - 1]
    return top, bottom, left, right


def run_edges(shape: tuple[int, int], runs: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The labels on the top, bottom, left and right lines of the image of ``component_runs`` runs (int32)."""
    return _run_edges(shape[0], shape[1], *runs)


@numba.njit(**_JIT)
def _run_histogram(values, row_first, start, end, run_label, n, n_values, bits):
    out = np.zeros((n + 1, n_values), np.int64)
    bad = -1
    for i in range(row_first.size - 1):
        row = values[i]
        for r in range(row_first[i], row_first[i + 1]):
            f, s, e = run_label[r], start[r], end[r]
            if bits:  # pixels with bit b set: one vectorised sum per bit
                for b in range(n_values):
                    set_b = 0
                    for j in range(s, e):
                        set_b += (np.int64(row[j]) >> b) & 1
                    out[f, b] += set_b
            elif n_values == 2:  # values 0 and 1: their sum counts the ones
                ones, high = 0, 0
                for j in range(s, e):
                    v = np.int64(row[j])
                    ones += v
                    high |= v
                if high < 0 or high > 1:
                    bad = i
                out[f, 1] += ones
                out[f, 0] += e - s - ones
            else:
                for j in range(s, e):
                    v = np.int64(row[j])
                    if v < 0 or v >= n_values:
                        bad = i
                    else:
                        out[f, v] += 1
    return out, bad


def run_histogram(runs: tuple, values: np.ndarray, n: int, n_values: int, *, bits: bool = False) -> np.ndarray:
    """Pixels of each value per label of ``component_runs`` runs over ``values`` (same shape as their image):
    int64 (n + 1, n_values), row 0 zero; with ``bits``, pixels of each label whose value has bit b set, for
    b < n_values. As a histogram of the label image, without reading one.

    Raises ValueError when a labelled pixel has a value outside [0, n_values) (not checked with ``bits``)."""
    values = np.ascontiguousarray(values)
    out, bad = _run_histogram(values, *runs, n, n_values, bits)
    if bad >= 0:
        row_first, start, end, _ = runs
        row = values[bad]
        on_runs = np.concatenate([row[s:e] for s, e in zip(start[row_first[bad]:row_first[bad + 1]],
                                                            end[row_first[bad]:row_first[bad + 1]], strict=True)])
        wrong = np.unique(on_runs[(on_runs < 0) | (on_runs >= n_values)])
        raise ValueError(f"values on patch pixels must be in [0, {n_values}); got {wrong[:10].tolist()}")
    return out


def label(mask: np.ndarray, neighbourhood: int) -> tuple[np.ndarray, int, np.ndarray]:
    """Connected components of a 2-D mask.

    Parameters
    ----------
    mask : numpy.ndarray
        2-D; nonzero pixels belong to components.
    neighbourhood : {8, 4}
        8: pixels sharing an edge or a corner are connected; 4: an edge only.

    Returns
    -------
    labels : numpy.ndarray
        int32, same shape, 0 = background, 1..n numbered by first pixel in row-major order (as scipy.ndimage.label).
    n : int
        Number of components.
    count : numpy.ndarray
        int64 (n + 1,): pixels per label; count[0] is 0.

    Notes
    -----
    Union-find over runs of pixels (``component_runs``): one pass finding each row's runs and joining those
    that touch the row above, then the labels written run by run; about 1-2 ns/px on clustered masks.
    Memory: the int32 labels plus 13 bytes per run.
    """
    n, count, _, runs = component_runs(mask, neighbourhood)
    return runs_image(mask.shape, runs), n, count


# ------------------------------------------------------------------------------------------ bounded distances
def euclidean_reach(bound_m: float, resolution_m: float) -> np.ndarray:
    """Reach table of a Euclidean distance bound: reach[g] = the largest vertical offset (px) allowed at a
    horizontal offset of g px, for pixel centres within ``bound_m`` (m) of each other (1e-9 m tolerance, as
    ``distance_transform_edt(...) <= bound_m + 1e-9``)."""
    limit = bound_m + 1e-9
    radius = int(limit // resolution_m) + 1
    reach = np.full(radius + 1, -1, np.int64)
    for g in range(radius + 1):
        for h in range(radius, -1, -1):
            if math.sqrt(g * g + h * h) * resolution_m <= limit:
                reach[g] = h
                break
    return reach[: int(np.flatnonzero(reach >= 0).max()) + 1] if (reach >= 0).any() else reach[:0]


@numba.njit(**_JIT)
def _within(source: np.ndarray, reach: np.ndarray) -> np.ndarray:
    rows, cols = source.shape
    radius = reach.size - 1
    far = radius + 1
    # row pass: horizontal distance (px) to the nearest source pixel in the same row, capped at radius + 1
    g = np.empty((rows, cols), np.uint16)
    for i in range(rows):
        d = far
        src, gi = source[i], g[i]
        for j in range(cols):
            d = 0 if src[j] else min(d + 1, far)
            gi[j] = d
        d = far
        for j in range(cols - 1, -1, -1):
            d = 0 if src[j] else min(d + 1, far)
            gi[j] = min(gi[j], d)
    # column pass: pixel (i, j) is within when some row i2 has |i - i2| <= reach[g[i2, j]]; sweep down with
    # the furthest row reached from above, then up with the furthest reached from below (branch-free rows:
    # a horizontal distance beyond the radius reaches no row)
    span = np.full(far + 1, -(rows + 1), np.int64)
    span[:far] = reach
    out = np.zeros((rows, cols), np.bool_)
    down = np.full(cols, -1, np.int64)
    for i in range(rows):
        gi, oi = g[i], out[i]
        for j in range(cols):
            down[j] = max(down[j], i + span[gi[j]])
            oi[j] = down[j] >= i
    up = np.full(cols, 2 * rows + 1, np.int64)
    for i in range(rows - 1, -1, -1):
        gi, oi = g[i], out[i]
        for j in range(cols):
            up[j] = min(up[j], i - span[gi[j]])
            oi[j] = oi[j] | (up[j] <= i)
    return out


def within(source: np.ndarray, reach: np.ndarray) -> np.ndarray:
    """True where a ``source`` pixel lies within the bound described by ``reach`` (``euclidean_reach``; a
    taxicab bound d is reach[g] = d - g); exact, and equal to a distance transform thresholded at the bound.

    Parameters
    ----------
    source : numpy.ndarray
        2-D bool.
    reach : numpy.ndarray
        int64, non-increasing: reach[g] is the vertical offset (px) allowed at a horizontal offset of g px.

    Notes
    -----
    Exact for pixels at least len(reach) - 1 pixels from the array border or when the array is the whole
    landscape (the halo rule of DESIGN.md §9). The passes run on the box around the sources grown by the
    radius, and not at all without a source (chunks outside the boundary). Up to a radius of 16 px,
    ``_within_near`` (~1.5 ns/px); beyond, four linear sweeps (``_within``: two along rows, two down and up the
    columns, ~3-4 ns/px whatever the bound; memory a uint16 and a bool array of the source's size), after a look
    at cells of a quarter of the radius (``_within_by_cells``): where sources are dense (large natural patches),
    most cells are within for sure and the sweeps run only around the others.
    """
    if reach.size == 0:
        return np.zeros(source.shape, bool)
    if reach.size >= np.iinfo(np.uint16).max:
        raise ValueError(f"a bound of {reach.size - 1} px is beyond the 65,534 px this kernel handles")
    source = np.ascontiguousarray(source, dtype=bool)
    reach = np.ascontiguousarray(reach, dtype=np.int64)
    rows, cols = source.shape
    r0, r1, c0, c1 = nonzero_bounds(source)
    if r1 == 0:
        return np.zeros(source.shape, bool)
    radius = reach.size - 1
    r0, r1, c0, c1 = max(r0 - radius, 0), min(r1 + radius, rows), max(c0 - radius, 0), min(c1 + radius, cols)
    if (r0, r1, c0, c1) == (0, rows, 0, cols):
        return _within_window(source, reach)
    out = np.zeros(source.shape, bool)
    out[r0:r1, c0:c1] = _within_window(np.ascontiguousarray(source[r0:r1, c0:c1]), reach)
    return out


def _within_window(source: np.ndarray, reach: np.ndarray) -> np.ndarray:
    if reach.size <= 17:
        return _within_near(source, reach)
    by_cells = _within_by_cells(source, reach)
    return by_cells if by_cells is not None else _within(source, reach)


@numba.njit(**_JIT)
def _within_near(source: np.ndarray, reach: np.ndarray) -> np.ndarray:
    """``within`` for a radius of at most 16 px: horizontal distances by doubling along each row (uint8), then
    each output row ORs the rows within the vertical reach, each compared with its horizontal allowance."""
    rows, cols = source.shape
    far = reach.size  # horizontal distance cap, <= 128 so uint8 sums do not wrap
    vertical = reach[0]
    across = np.zeros(vertical + 1, np.uint8)  # vertical offset -> largest horizontal offset within the bound
    g = 0
    for h in range(vertical, -1, -1):
        while g + 1 < reach.size and reach[g + 1] >= h:
            g += 1
        across[h] = g
    dist = np.empty((rows, cols), np.uint8)
    a = np.empty(cols, np.uint8)
    b = np.empty(cols, np.uint8)
    for i in range(rows):
        src = source[i]
        for j in range(cols):
            a[j] = 0 if src[j] else far
        step = 1
        while step < far:
            n = max(cols - step, 0)
            b_low, a_high, b_high, a_low = b[:n], a[step:step + n], b[step:step + n], a[:n]
            s8 = np.uint8(step)
            for j in range(cols):
                b[j] = a[j]
            for j in range(n):
                b_low[j] = min(b_low[j], a_high[j] + s8)
            for j in range(n):
                b_high[j] = min(b_high[j], a_low[j] + s8)
            a, b = b, a
            step *= 2
        d = dist[i]
        for j in range(cols):
            d[j] = a[j]
    out = np.zeros((rows, cols), np.bool_)
    for i in range(rows):
        o = out[i]
        for dy in range(-vertical, vertical + 1):
            r = i + dy
            if r < 0 or r >= rows:
                continue
            lim = across[abs(dy)]
            row = dist[r]
            for j in range(cols):
                o[j] |= row[j] <= lim
    return out


@numba.njit(**_JIT)
def _occupied(source: np.ndarray, cell: int) -> np.ndarray:
    rows, cols = source.shape
    out = np.zeros(((rows + cell - 1) // cell, (cols + cell - 1) // cell), np.bool_)
    for i in range(rows):
        row, cells = source[i], out[i // cell]
        for c in range(cells.size):
            if not cells[c]:
                cells[c] = _row_any(row[c * cell:(c + 1) * cell])
    return out


def _cell_reach(reach: np.ndarray, cell: int) -> np.ndarray:
    """A reach table over cells of ``cell`` px that holds for every pixel pair of the two cells: pixel offsets
    between cells (gi, gj) apart are at most ((gi + 1) cell - 1, (gj + 1) cell - 1) px."""
    out = []
    for gj in range(reach.size):
        dx = (gj + 1) * cell - 1
        gi = (int(reach[dx]) + 1) // cell - 1 if dx < reach.size else -1
        if gi < 0:
            break
        out.append(gi)
    return np.array(out, np.int64)


def _within_by_cells(source: np.ndarray, reach: np.ndarray, max_unsure: float = 0.25) -> np.ndarray | None:
    """``within`` from cells of reach.size // 4 px: a cell is within for sure when a cell holding a source pixel
    is close enough for every pixel pair of the two (``_cell_reach``); the other cells get the exact sweeps on
    a window of each group of them grown by the radius (exact there: every source that can reach them is in
    the window, or beyond the array as for the whole array). None when over ``max_unsure`` of the cells are
    unsure (the sweeps over the whole array are then cheaper)."""
    rows, cols = source.shape
    cell = reach.size // 4
    cell_reach = _cell_reach(reach, cell)
    if not cell_reach.size:
        return None
    unsure = ~_within(_occupied(source, cell), cell_reach)
    if unsure.mean() > max_unsure:
        return None
    out = np.repeat(np.repeat(~unsure, cell, axis=0), cell, axis=1)[:rows, :cols]
    if not unsure.any():
        return out
    groups, n, _ = label(unsure, 8)
    radius = reach.size - 1
    cell_rows, cell_cols = np.nonzero(groups)
    order = np.argsort(groups[cell_rows, cell_cols], kind="stable")
    bounds = np.searchsorted(groups[cell_rows, cell_cols][order], np.arange(1, n + 2))
    for k in range(n):
        members = order[bounds[k]:bounds[k + 1]]
        g0, g1 = cell_rows[members].min(), cell_rows[members].max() + 1
        h0, h1 = cell_cols[members].min(), cell_cols[members].max() + 1
        r0, r1, c0, c1 = g0 * cell, min(g1 * cell, rows), h0 * cell, min(h1 * cell, cols)
        w0, w1, v0, v1 = max(r0 - radius, 0), min(r1 + radius, rows), max(c0 - radius, 0), min(c1 + radius, cols)
        exact = _within(source[w0:w1, v0:v1], reach)[r0 - w0:r1 - w0, c0 - v0:c1 - v0]
        mine = np.repeat(np.repeat(groups[g0:g1, h0:h1] == k + 1, cell, axis=0), cell, axis=1)[:r1 - r0, :c1 - c0]
        out[r0:r1, c0:c1][mine] = exact[mine]
    return out


# ------------------------------------------------------------------------------------------ degradation
NATURAL_BOTH = 1 << 15  # degradation flag bit: natural (and mapped) in both years; bits r / 8 + r: rule r worse / better
_KEY_BITS = 12  # flag_counts key: 6 degraded bits, 6 improved bits (at most 6 rules), under the ecosystem


@numba.njit(**_JIT)
def _non_natural(lc: np.ndarray, natural: np.ndarray, first_class: int) -> np.ndarray:
    out = np.zeros(lc.shape, np.bool_)
    for i in range(lc.shape[0]):
        for j in range(lc.shape[1]):
            c = lc[i, j]
            out[i, j] = c >= first_class and not natural[c]
    return out


def non_natural(lc: np.ndarray, natural: np.ndarray, *, first_class: int) -> np.ndarray:
    """Mapped (class index >= first_class) pixels that are not natural: the edge rule's sources."""
    return _non_natural(np.ascontiguousarray(lc), natural, first_class)


@numba.njit(**_JIT)
def _pair_flags(lc_a, lc_b, table, h0, h1):
    rows, cols = lc_a.shape[0] - 2 * h0, lc_a.shape[1] - 2 * h1
    out = np.empty((rows, cols), np.uint16)
    for i in range(rows):
        row_a, row_b, res = lc_a[i + h0, h1:h1 + cols], lc_b[i + h0, h1:h1 + cols], out[i]
        for j in range(cols):
            res[j] = table[row_a[j], row_b[j]]
    return out


def pair_flags(lc_a: np.ndarray, lc_b: np.ndarray, table: np.ndarray, *, halo: tuple[int, int]) -> np.ndarray:
    """uint16 ``table[class a, class b]`` of each pixel of the interior of two class-index arrays with a halo of
    ``halo`` (rows, columns) pixels: the rule bits that depend on the class pair only (degradation)."""
    _check_below(lc_a, table.shape[0], "class index")
    _check_below(lc_b, table.shape[1], "class index")
    return _pair_flags(lc_a, lc_b, np.ascontiguousarray(table, np.uint16), halo[0], halo[1])


@numba.njit(**_JIT)
def _or_change(flags, before, after, bit, mask_before, mask_after):
    rows, cols = flags.shape
    for i in range(rows):
        out, a, b = flags[i], before[i], after[i]
        for j in range(cols):
            was, now = np.uint16((a[j] & mask_before) != 0), np.uint16((b[j] & mask_after) != 0)
            out[j] |= ((now & ~was & 1) << bit) | ((was & ~now & 1) << (bit + 8))


def or_change(flags: np.ndarray, before: np.ndarray, after: np.ndarray, bit: int, *, mask: int = 1,
              negate: bool = False) -> None:
    """Set bit ``bit`` of ``flags`` where a pixel property turned on between the years and bit ``bit + 8`` where
    it turned off, in place. The property is ``(x & mask) != 0`` of the uint8 or bool arrays ``before`` and
    ``after`` (same shape as flags; views are fine); with ``negate``, its absence."""
    before, after = (np.asarray(x).view(np.uint8) if np.asarray(x).dtype == bool else x for x in (before, after))
    if negate:  # absence turned on = presence turned off
        before, after = after, before
    _or_change(flags, before, after, bit, mask, mask)


@numba.njit(**_JIT)
def _keep_natural_both(flags):
    rows, cols = flags.shape
    for i in range(rows):
        row = flags[i]
        for j in range(cols):
            row[j] = row[j] if row[j] & NATURAL_BOTH else 0


def keep_natural_both(flags: np.ndarray) -> None:
    """Clear the flags of pixels without the NATURAL_BOTH bit, in place."""
    _keep_natural_both(flags)


@numba.njit(**_JIT)
def _flag_histogram(flags, lc_a, eco_of_class, face, face_lo, n_face_range, n_eco):
    n_keys = n_eco << _KEY_BITS
    hist = np.zeros(n_face_range * n_keys + 1, np.int64)  # the last bin: pixels not counted
    dump = n_face_range * n_keys
    rows, cols = flags.shape
    for i in range(rows):
        row, row_a = flags[i], lc_a[i]
        row_face = face[i] if face.shape[0] > 1 else face[0]
        for j in range(cols):
            fl = row[j]
            f = (row_face[j] - face_lo) if face.shape[0] > 1 else 0
            key = ((f * n_eco + eco_of_class[row_a[j]]) << _KEY_BITS) | (((fl >> 8) & 63) << 6) | (fl & 63)
            inside = (fl & NATURAL_BOTH) != 0 and 0 <= f < n_face_range
            hist[key if inside else dump] += 1
    return hist[:dump]


def flag_counts(flags: np.ndarray, lc_a: np.ndarray, face: np.ndarray | None, *, eco_of_class: np.ndarray,
                n_faces: int, n_eco: int, n_rules: int) -> np.ndarray:
    """Pixel counts (n_faces, n_eco, 2 + 2 R) of one chunk: natural in both years, degraded by any rule,
    degraded per rule, improved per rule.

    ``flags``: uint16 with NATURAL_BOTH, bit r = degraded by rule r, bit 8 + r = improved (R <= 6); ``lc_a``:
    class indices of the earlier year (its ecosystem, ``eco_of_class`` >= 0 on natural classes, keys the
    count); ``face``: zone face ids in [0, n_faces), or None: every pixel in face 0. One pass counting
    (face, ecosystem, degraded bits, improved bits) keys, decoded after (a pass per 4 Mi keys of faces)."""
    if n_rules > 6:
        raise ValueError(f"at most 6 degradation rules fit the count keys; got {n_rules}")
    table = np.ascontiguousarray(np.maximum(eco_of_class, 0), np.int64)
    _check_below(lc_a, table.size, "class index")
    out = np.zeros((n_faces, n_eco, 2 + 2 * n_rules), np.int64)
    if face is None:
        lo, hi, face = 0, 0, np.zeros((1, 1), np.int32)
    else:
        lo, hi = _check_below(face, n_faces, "face id")
    window = max(1, (1 << 22) // (n_eco << _KEY_BITS))
    bits = (np.arange(64)[:, None] >> np.arange(n_rules)) & 1  # (6-bit field value, rule)
    for start in range(lo, hi + 1, window):
        n_range = min(window, hi + 1 - start)
        hist = _flag_histogram(flags, lc_a, table, face, start, n_range, n_eco).reshape(n_range, n_eco, 64, 64)
        part = out[start:start + n_range]
        part[..., 0] = hist.sum(axis=(2, 3))
        part[..., 1] = hist[..., 1:].sum(axis=(2, 3))
        part[..., 2:2 + n_rules] = hist.sum(axis=2) @ bits
        part[..., 2 + n_rules:] = hist.sum(axis=3) @ bits
    return out


# ------------------------------------------------------------------------------------------ connectivity
_NON_NATURAL, _UNMAPPED = 254, 255  # ecosystem_edges codes beside 1 + ecosystem index
_NON_NATURAL_BIT = 0x80  # ecosystem_edges presence bits: 1 << ecosystem index, this bit for mapped non-natural land


@numba.njit(**_JIT)
def _or_pair(src: np.ndarray, dst: np.ndarray, di0: int, dj0: int, di1: int, dj1: int) -> None:
    """dst[i, j] = src[i + di0, j + dj0] | src[i + di1, j + dj1] where both lie in the array, else 0."""
    rows, cols = src.shape
    i_lo, i_hi = max(0, -di0, -di1), min(rows, rows - di0, rows - di1)
    j_lo, j_hi = max(0, -dj0, -dj1), min(cols, cols - dj0, cols - dj1)
    dst[:] = 0
    n = j_hi - j_lo
    for i in range(i_lo, i_hi):  # row slices: a loop from 0 that LLVM vectorises
        a, b, out = src[i + di0, j_lo + dj0:j_hi + dj0], src[i + di1, j_lo + dj1:j_hi + dj1], dst[i, j_lo:j_hi]
        for j in range(n):
            out[j] = a[j] | b[j]


@numba.njit(**_JIT)
def _or_cross(src: np.ndarray, dst: np.ndarray) -> None:
    """dst = OR of each pixel and its 4 neighbours; the outermost rows and columns are set to 0."""
    rows, cols = src.shape
    dst[:] = 0
    for i in range(1, rows - 1):
        row, up, down, out = src[i], src[i - 1], src[i + 1], dst[i]
        for j in range(1, cols - 1):
            out[j] = row[j] | up[j] | down[j] | row[j - 1] | row[j + 1]


@numba.njit(**_JIT)
def _or_diamond(bits: np.ndarray, depth: int) -> np.ndarray:
    """OR of ``bits`` over the diamond |di| + |dj| <= depth of each pixel, exact where the diamond lies in the
    array (0 elsewhere near the border). The diamond is two diagonal segments of 2m + 1 pixels (each by
    doubling: a window of P = 2^k pixels, then two overlapping windows) and one or two crosses."""
    a, b = bits.copy(), np.empty_like(bits)
    n_cross = 1 if depth % 2 else 2
    m = (depth - n_cross) // 2
    if depth == 0:
        return a
    for si, sj in ((1, 1), (1, -1)):  # the two diagonals
        if m == 0:
            continue
        length, width = 2 * m + 1, 1
        while 2 * width <= length:
            _or_pair(a, b, 0, 0, width * si, width * sj)
            a, b = b, a
            width *= 2
        rest = length - width
        _or_pair(a, b, -m * si, -m * sj, (rest - m) * si, (rest - m) * sj)
        a, b = b, a
    for _ in range(n_cross):
        _or_cross(a, b)
        a, b = b, a
    return a


@numba.njit(**_JIT)
def _ecosystem_edges(lc: np.ndarray, eco_of_class: np.ndarray, first_class: int, depth: int,
                     halo: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, cols = lc.shape
    table = np.full(eco_of_class.size, _UNMAPPED, np.uint8)  # class -> 1 + ecosystem, _NON_NATURAL, _UNMAPPED
    bit_of = np.zeros(eco_of_class.size, np.uint8)  # class -> presence bit, 0 unmapped
    for c in range(first_class, eco_of_class.size):
        table[c] = eco_of_class[c] + 1 if eco_of_class[c] >= 0 else _NON_NATURAL
        bit_of[c] = 1 << eco_of_class[c] if eco_of_class[c] >= 0 else _NON_NATURAL_BIT
    code = np.empty((rows, cols), np.uint8)
    bits = np.empty((rows, cols), np.uint8)
    for i in range(rows):
        for j in range(cols):
            code[i, j] = table[lc[i, j]]
            bits[i, j] = bit_of[lc[i, j]]
    near = _or_diamond(bits, depth)  # the groups mapped within `depth` 4-neighbour steps
    h, w = rows - 2 * halo, cols - 2 * halo
    out_code = np.empty((h, w), np.uint8)
    core = np.empty((h, w), np.uint8)
    sides = np.empty((h, w), np.uint8)
    for i in range(h):  # branch-free over row slices, so that LLVM vectorises it
        ii = i + halo
        row, up, down = code[ii, halo:halo + w], code[ii - 1, halo:halo + w], code[ii + 1, halo:halo + w]
        left, right = code[ii, halo - 1:halo - 1 + w], code[ii, halo + 1:halo + 1 + w]
        own, groups = bits[ii, halo:halo + w], near[ii, halo:halo + w]
        for j in range(w):
            c = row[j]
            natural = np.uint8(c < _NON_NATURAL)
            eco_sides = (np.uint8((up[j] != _UNMAPPED) & (up[j] != c)) + np.uint8((down[j] != _UNMAPPED) & (down[j] != c))
                         + np.uint8((left[j] != _UNMAPPED) & (left[j] != c))
                         + np.uint8((right[j] != _UNMAPPED) & (right[j] != c)))
            natural_sides = (np.uint8(up[j] == _NON_NATURAL) + np.uint8(down[j] == _NON_NATURAL)
                             + np.uint8(left[j] == _NON_NATURAL) + np.uint8(right[j] == _NON_NATURAL))
            out_code[i, j] = c * natural
            sides[i, j] = (eco_sides | (natural_sides << 4)) * natural
            core[i, j] = (np.uint8(groups[j] == own[j]) | (np.uint8((groups[j] & _NON_NATURAL_BIT) == 0) << 1)) * natural
    return out_code, core, sides


def ecosystem_edges(lc: np.ndarray, eco_of_class: np.ndarray, *, first_class: int, depth: int,
                    halo: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ecosystem types and all natural land of one chunk with a halo, in one pass: which natural pixels are
    core and how many of their sides are edges, for the chunk interior.

    Parameters
    ----------
    lc : numpy.ndarray
        Class indices with a halo of ``halo`` >= ``depth`` pixels; classes below ``first_class`` are
        unmapped (neither class nor edge).
    eco_of_class : numpy.ndarray
        int8 ecosystem index per class index, -1 for non-natural classes; at most 7 ecosystem types (0-6).
    depth : int
        Core depth (px): a core pixel has no pixel of another mapped class group within ``depth``
        4-neighbour steps (``depth`` erosions with the 4-neighbour cross, as FRAGSTATS).

    Returns
    -------
    code : uint8 (interior): 1 + ecosystem index on natural pixels, 0 elsewhere.
    core : uint8 (interior): bit 0 core of its ecosystem type (no other mapped ecosystem or non-natural pixel
        within the depth), bit 1 core of all natural land (no mapped non-natural pixel within it).
    sides : uint8 (interior): low 4 bits, sides facing another mapped ecosystem or non-natural pixel; high 4
        bits, sides facing a mapped non-natural pixel.

    Notes
    -----
    One OR of presence bits (a bit per ecosystem type, one for non-natural land) over the diamond of radius
    ``depth`` (``_or_diamond``: about 2·log2(depth) + 2 passes, not ``depth`` cross steps) decides both kinds
    of core at once, instead of one distance pass per class group.
    """
    if eco_of_class.max(initial=-1) >= 7:
        raise ValueError(f"at most 7 ecosystem types fit the presence bits; got index {eco_of_class.max()}")
    if halo < max(depth, 1) or min(lc.shape) <= 2 * halo:
        raise ValueError(f"the halo ({halo} px) must be >= max(depth, 1) = {max(depth, 1)} and leave an interior")
    _check_below(lc, eco_of_class.size, "class index")
    return _ecosystem_edges(np.ascontiguousarray(lc), np.asarray(eco_of_class, np.int8), first_class, depth, halo)


@numba.njit(**_JIT)
def _ecosystem_edge_sums(face, code, core, sides, n_faces, n_codes):
    edge = np.zeros((n_faces, n_codes + 1), np.int64)
    non_core = np.zeros((n_faces, n_codes + 1), np.int64)
    rows, cols = face.shape
    for i in range(rows):
        for j in range(cols):
            c = code[i, j]
            if c:
                f = face[i, j]
                edge[f, c] += sides[i, j] & 15
                edge[f, 0] += sides[i, j] >> 4
                non_core[f, c] += 1 - (core[i, j] & 1)
                non_core[f, 0] += 1 - (core[i, j] >> 1)
    return edge, non_core


@numba.njit(**_JIT)
def _one_face_edge_sums(code, core, sides, n_codes):
    """_ecosystem_edge_sums of a chunk inside one face: per row, one vectorised sum per code present in it
    (int32 sums: a row has at most 4 sides per pixel)."""
    edge = np.zeros(n_codes + 1, np.int64)
    non_core = np.zeros(n_codes + 1, np.int64)
    rows, cols = code.shape
    for i in range(rows):
        row_code, row_core, row_sides = code[i], core[i], sides[i]
        natural_edge, natural_core, natural, hi = np.int32(0), np.int32(0), np.int32(0), np.uint8(0)
        for j in range(cols):
            natural_edge += np.int32(row_sides[j] >> 4)
            natural_core += np.int32(row_core[j] >> 1)
            natural += np.int32(row_code[j] > 0)
            hi = max(hi, row_code[j])
        edge[0] += natural_edge
        non_core[0] += natural - natural_core
        for c in range(1, hi + 1):
            sides_c, core_c, pixels_c = np.int32(0), np.int32(0), np.int32(0)
            for j in range(cols):
                is_c = np.int32(row_code[j] == c)
                sides_c += is_c * np.int32(row_sides[j] & 15)
                core_c += is_c * np.int32(row_core[j] & 1)
                pixels_c += is_c
            edge[c] += sides_c
            non_core[c] += pixels_c - core_c
    return edge, non_core


def ecosystem_edge_sums(face: np.ndarray, code: np.ndarray, core: np.ndarray, sides: np.ndarray, *, n_faces: int,
                        n_codes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per zone face, from ``ecosystem_edges``: edge sides and non-core pixels, int64 (n_faces, 1 + n_codes):
    column 1 + e for ecosystem e, column 0 for all natural land."""
    lo, hi = _check_below(face, n_faces, "face id")
    _check_below(code, n_codes + 1, "ecosystem code")
    if lo != hi:
        return _ecosystem_edge_sums(np.ascontiguousarray(face), code, core, sides, n_faces, n_codes)
    edge, non_core = np.zeros((2, n_faces, n_codes + 1), np.int64)  # the chunk lies in one face (most chunks)
    if code.size:
        edge[lo], non_core[lo] = _one_face_edge_sums(code, core, sides, n_codes)
    return edge, non_core


# ------------------------------------------------------------------------------------------ mining
@numba.njit(**_JIT)
def _site_values(flags, natural_before, rights, surface, footprint_bits):
    n_years, rows, cols = flags.shape
    out = np.zeros((rows, cols), np.int16)
    for i in range(rows):
        for j in range(cols):
            for t in range(n_years):
                if flags[t, i, j] & footprint_bits:
                    category = 3 - 2 * np.int64(rights[i, j]) - np.int64(surface[i, j])
                    out[i, j] = (t + 1) * 8 + category * 2 + np.int64(natural_before[i, j])
                    break
    return out


def site_values(flags: np.ndarray, natural_before: np.ndarray, rights: np.ndarray, surface: np.ndarray, *,
                footprint_bits: int) -> np.ndarray:
    """Per pixel of one chunk, int16: first-year index (1..n_years) * 8 + category (0..3) * 2 + natural in the
    baseline year, on pixels of the mining footprint in any year (``flags`` (year, y, x) & footprint_bits);
    0 elsewhere. Category: 0 = I (mining and surface rights), 1 = II (mining only), 2 = III, 3 = IV (neither)."""
    if (flags.shape[0] + 1) * 8 > np.iinfo(np.int16).max:
        raise ValueError(f"too many years for int16 site values: {flags.shape[0]}")
    return _site_values(np.ascontiguousarray(flags), np.ascontiguousarray(natural_before, dtype=np.bool_),
                        np.ascontiguousarray(rights, dtype=np.bool_), np.ascontiguousarray(surface, dtype=np.bool_),
                        footprint_bits)


@numba.njit(**_JIT)
def _class_bits(lc, table, inside, observed):
    n_years, rows, cols = lc.shape
    out = np.zeros((n_years, rows, cols), np.uint8)
    for t in range(n_years):
        if observed[t]:
            for i in range(rows):
                for j in range(cols):
                    out[t, i, j] = table[lc[t, i, j]] & inside[i, j]
    return out


def class_bits(lc: np.ndarray, table: np.ndarray, inside: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """uint8 (year, y, x): 1 where ``table`` (bool per class index) flags the class of that year, inside the
    landscape (``inside``, 2-D) and in an observed year (``observed``, bool per year); 0 elsewhere."""
    _check_below(lc, table.size, "class index")
    return _class_bits(np.ascontiguousarray(lc), np.asarray(table, np.bool_), np.ascontiguousarray(inside, np.bool_),
                       np.asarray(observed, np.bool_))


@numba.njit(**_JIT)
def _mining_counts(flags, lc, has_lc, eco_of_class, riparian, rights, surface, face, n_faces, n_sources, pair_a,
                   pair_b, n_eco, footprint_bits):
    n_years, rows, cols = flags.shape
    n = n_sources
    all_bits = (1 << n_sources) - 1
    year = np.zeros((n_faces, n_years, 7 + n), np.int64)
    period = np.zeros((n_faces, pair_a.size, 1 + n_eco), np.int64)
    for i in range(rows):
        for j in range(cols):
            seen = 0
            for t in range(n_years):
                seen |= flags[t, i, j]
            if seen == 0:  # no source maps mining here in any year: nothing to count (most pixels)
                continue
            f = face[i, j]
            category = 3 - 2 * np.int64(rights[i, j]) - np.int64(surface[i, j])
            for t in range(n_years):
                fl = np.int64(flags[t, i, j])
                if fl & footprint_bits:
                    year[f, t, 0] += 1
                    if riparian[i, j]:
                        year[f, t, 2 + n] += 1
                    year[f, t, 3 + n + category] += 1
                for s in range(n):
                    year[f, t, 1 + s] += (fl >> s) & 1
                if fl == all_bits:
                    year[f, t, 1 + n] += 1
            for p in range(pair_a.size):
                a, b = pair_a[p], pair_b[p]
                if flags[b, i, j] & footprint_bits:
                    if not flags[a, i, j] & footprint_bits:
                        period[f, p, 0] += 1
                    if has_lc:
                        e = eco_of_class[lc[a, i, j]]
                        if e >= 0:
                            period[f, p, 1 + e] += 1
    return year, period


def mining_counts(flags: np.ndarray, lc: np.ndarray | None, riparian: np.ndarray, rights: np.ndarray,
                  surface: np.ndarray, face: np.ndarray, *, n_faces: int, n_sources: int, pairs: tuple,
                  eco_of_class: np.ndarray | None, n_eco: int, footprint_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel counts of one chunk and zone layer: per year (n_faces, n_years, 7 + S): footprint, each source,
    in all sources, riparian, categories I..IV; per period (n_faces, n_periods, 1 + n_eco): new mining, then
    mining in the later year on land natural in the earlier one, by its ecosystem index (needs ``lc``).

    ``flags``: uint8 (year, y, x), bit s = source s maps mining; ``pairs``: (earlier, later) year indices."""
    has_lc = lc is not None
    lc_arr = np.ascontiguousarray(lc) if has_lc else np.zeros((1, 1, 1), np.uint8)
    eco = np.asarray(eco_of_class, np.int64) if has_lc else np.zeros(1, np.int64)
    pair_a = np.array([a for a, _ in pairs], np.int64)
    pair_b = np.array([b for _, b in pairs], np.int64)
    return _mining_counts(np.ascontiguousarray(flags), lc_arr, has_lc, eco, np.ascontiguousarray(riparian, np.bool_),
                          np.ascontiguousarray(rights, np.bool_), np.ascontiguousarray(surface, np.bool_),
                          np.ascontiguousarray(face), n_faces, n_sources, pair_a, pair_b, n_eco, footprint_bits)


@numba.njit(**_JIT)
def _merge_intervals(seg: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out_seg, out_lo, out_hi = np.empty_like(seg), np.empty_like(lo), np.empty_like(hi)
    k = -1
    for i in range(len(seg)):
        if k >= 0 and seg[i] == out_seg[k] and lo[i] <= out_hi[k]:
            out_hi[k] = max(out_hi[k], hi[i])
        else:
            k += 1
            out_seg[k], out_lo[k], out_hi[k] = seg[i], lo[i], hi[i]
    return out_seg[: k + 1], out_lo[: k + 1], out_hi[: k + 1]


def merge_intervals(seg: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intervals [lo, hi] of owners ``seg`` (int64; sorted by seg, then lo) with overlapping or touching ones of
    the same owner merged: (seg, lo, hi) of the merged intervals, in the same order."""
    return _merge_intervals(seg, lo, hi)


@numba.njit(**_JIT)
def _label_face_counts(lab: np.ndarray, face: np.ndarray, n_labels: int, n_faces: int) -> np.ndarray:
    out = np.zeros((n_labels + 1, n_faces), np.int64)
    rows, cols = lab.shape
    for i in range(rows):
        for j in range(cols):
            if lab[i, j]:
                out[lab[i, j], face[i, j]] += 1
    return out


@numba.njit(**_JIT)
def _value_counts(values: np.ndarray, n: int) -> np.ndarray:
    """Pixels of each value in [0, n): four tables for four pixels in a row, so that no add waits on the last."""
    banks = np.zeros((4, n), np.int64)
    flat = values.ravel()
    whole = flat.size // 4 * 4
    for k in range(0, whole, 4):
        banks[0, flat[k]] += 1
        banks[1, flat[k + 1]] += 1
        banks[2, flat[k + 2]] += 1
        banks[3, flat[k + 3]] += 1
    for k in range(whole, flat.size):
        banks[0, flat[k]] += 1
    return banks.sum(axis=0)


def value_counts(values: np.ndarray, size: int) -> np.ndarray:
    """Pixels of each value in [0, size) of a non-negative integer array: int64 (size,), as ``np.bincount``
    without its int64 copy of the input (~5x faster on uint8 chunks)."""
    if values.dtype.kind not in "ui":
        raise ValueError(f"value_counts needs integers; got {values.dtype}")
    if values.dtype.kind == "i" or np.iinfo(values.dtype).max >= size:  # else every value fits the table
        _check_below(values, size, "value")
    return _value_counts(np.ascontiguousarray(values), size)


def label_face_counts(lab: np.ndarray, face: np.ndarray, *, n_labels: int, n_faces: int) -> np.ndarray:
    """Pixels of each label (1..n_labels) in each face (0..n_faces - 1): int64 (n_labels + 1, n_faces), row 0
    (background) zero. Memory is the table, so callers keep n_labels x n_faces near the chunk size."""
    _check_below(lab, n_labels + 1, "label")
    lo, hi = _check_below(face, n_faces, "face id")
    if lo != hi:
        return _label_face_counts(lab, face, n_labels, n_faces)
    out = np.zeros((n_labels + 1, n_faces), np.int64)  # the chunk lies in one face (most chunks)
    if lab.size:
        out[1:, lo] = _value_counts(np.ascontiguousarray(lab), n_labels + 1)[1:]  # checked above
    return out


@numba.njit(**_JIT)
def _min_max(values: np.ndarray) -> tuple[int, int]:
    flat = values.ravel()
    lo = hi = flat[0]
    for k in range(1, flat.size):
        lo, hi = min(lo, flat[k]), max(hi, flat[k])
    return lo, hi


def value_range(values: np.ndarray) -> tuple[int, int]:
    """(min, max) of a non-empty array in one compiled pass."""
    lo, hi = _min_max(np.ascontiguousarray(values))
    return int(lo), int(hi)


@numba.njit(**_JIT)
def _row_any(row: np.ndarray) -> bool:
    for j in range(row.size):
        if row[j]:
            return True
    return False


@numba.njit(**_JIT)
def _nonzero_bounds(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = mask.shape
    r0 = 0
    while r0 < rows and not _row_any(mask[r0]):
        r0 += 1
    if r0 == rows:
        return 0, 0, 0, 0
    r1 = rows
    while not _row_any(mask[r1 - 1]):
        r1 -= 1
    c0, c1 = cols, 0
    for i in range(r0, r1):  # each row is read only outside the columns already known to be in the box
        row = mask[i]
        j = 0
        while j < c0 and not row[j]:
            j += 1
        c0 = j
        k = cols - 1
        while k >= c1 and not row[k]:
            k -= 1
        c1 = max(c1, k + 1)
    return r0, r1, c0, c1


def nonzero_bounds(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(first row, last row + 1, first column, last column + 1) of the nonzero pixels of a 2-D array, (0, 0, 0, 0)
    when there is none: the box cropping a sparse mask. Reads only the pixels outside the box, and each row
    inside it until its first and last nonzero pixel."""
    r0, r1, c0, c1 = _nonzero_bounds(np.ascontiguousarray(mask))
    return int(r0), int(r1), int(c0), int(c1)


def _check_below(values: np.ndarray, size: int, what: str) -> tuple[int, int]:
    """A compiled counting loop writes at these indices unchecked: refuse values outside [0, size) first
    (one compiled min/max pass: numpy's min and max were two). Returns their (min, max), (0, 0) when empty."""
    if not values.size:
        return 0, 0
    lo, hi = value_range(values)
    if lo < 0 or hi >= size:
        raise ValueError(f"{what} values must lie in [0, {size}); got {lo}..{hi}")
    return lo, hi


@numba.njit(**_JIT)
def _lookup(table: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.empty(values.shape, table.dtype)
    flat_in, flat_out = values.ravel(), out.ravel()
    for k in range(flat_in.size):
        flat_out[k] = table[flat_in[k]]
    return out


def lookup(table: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``table[values]`` for unsigned integer ``values`` of any shape, ~4x numpy's fancy indexing (land-cover codes to
    class indices on every read). Every value must be a valid index of ``table`` (not checked)."""
    if values.dtype.kind != "u" or not values.flags.c_contiguous:
        return table[values]
    return _lookup(table, values)


@numba.njit(**_JIT)
def _pair_lookup(table: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.empty(a.shape, table.dtype)
    rows, cols = a.shape
    for i in range(rows):
        for j in range(cols):
            out[i, j] = table[a[i, j], b[i, j]]
    return out


def pair_lookup(table: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``table[a, b]`` per pixel of two 2-D class-index arrays (e.g. a value per (class from, class to) pair)."""
    _check_below(a, table.shape[0], "class index")
    _check_below(b, table.shape[1], "class index")
    return _pair_lookup(np.ascontiguousarray(table), np.ascontiguousarray(a), np.ascontiguousarray(b))


@numba.njit(**_JIT)
def _transition_counts(lc_from: np.ndarray, lc_to: np.ndarray, face: np.ndarray, n_classes: int,
                       n_faces: int) -> np.ndarray:
    out = np.zeros((n_faces, n_classes, n_classes), np.int64)
    rows, cols = lc_from.shape
    for i in range(rows):
        for j in range(cols):
            out[face[i, j], lc_from[i, j], lc_to[i, j]] += 1
    return out


def transition_counts(lc_from: np.ndarray, lc_to: np.ndarray, face: np.ndarray, *, n_classes: int,
                      n_faces: int) -> np.ndarray:
    """Pixels per (face, class in the earlier year, class in the later year) of one chunk: int64
    (n_faces, n_classes, n_classes). Values outside an axis' size are refused."""
    _check_below(lc_from, n_classes, "class index")
    _check_below(lc_to, n_classes, "class index")
    _check_below(face, n_faces, "face id")
    return _transition_counts(lc_from, lc_to, face, n_classes, n_faces)


_STEP_ROW = (0, 1, 0, -1)  # travel direction along side 0 top (east), 1 right (south), 2 bottom (west), 3 left (north)
_STEP_COL = (1, 0, -1, 0)
_CORNER_ROW = (0, 0, 1, 1)  # the corner where each side of pixel (r, c) starts, as (r + row, c + col)
_CORNER_COL = (0, 1, 1, 0)


@numba.njit(**_JIT)
def _grow(a: np.ndarray, size: int) -> np.ndarray:
    if size <= a.shape[0]:
        return a
    out = np.empty((max(size, 2 * a.shape[0]), *a.shape[1:]), a.dtype)
    out[:a.shape[0]] = a
    return out


@numba.njit(**_JIT)
def _trace(regions, r0, c0, top_done, corners, n_corners):
    """Follow one ring from the top side of pixel (r0, c0); returns the corners array and the new count."""
    rows, cols = regions.shape
    region = regions[r0, c0]
    corners = _grow(corners, n_corners + 1)
    corners[n_corners, 0], corners[n_corners, 1] = c0, r0
    n_corners += 1
    r, c, side = r0, c0, 0
    while True:
        if side == 0:
            top_done[r, c] = True
        out = (side + 3) % 4  # the side's outward direction is the travel direction of the side before
        ar, ac = r + _STEP_ROW[side] + _STEP_ROW[out], c + _STEP_COL[side] + _STEP_COL[out]
        br, bc = r + _STEP_ROW[side], c + _STEP_COL[side]
        if 0 <= ar < rows and 0 <= ac < cols and regions[ar, ac] == region:
            next_r, next_c, next_side = ar, ac, out  # left turn (also across a pinch: rings stay simple)
        elif 0 <= br < rows and 0 <= bc < cols and regions[br, bc] == region:
            r, c = br, bc  # straight on: no corner
            continue
        else:
            next_r, next_c, next_side = r, c, (side + 1) % 4  # right turn, round the same pixel
        end = (side + 1) % 4  # a turn: the corner where this side ends
        corners = _grow(corners, n_corners + 1)
        corners[n_corners, 0], corners[n_corners, 1] = c + _CORNER_COL[end], r + _CORNER_ROW[end]
        n_corners += 1
        r, c, side = next_r, next_c, next_side
        if r == r0 and c == c0 and side == 0:
            return corners, n_corners


@numba.njit(**_JIT)
def _next_start(regions, top_done, r0, c0):
    """The first column >= c0 of row r0 whose pixel's top side starts a ring not traced yet (cols: none)."""
    cols = regions.shape[1]
    for c in range(c0, cols):
        region = regions[r0, c]
        if region != 0 and not (r0 > 0 and regions[r0 - 1, c] == region) and not top_done[r0, c]:
            return c
    return cols


@numba.njit(**_JIT)
def _outlines(regions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, cols = regions.shape
    top_done = np.zeros((rows, cols), np.bool_)
    corners = np.empty((1024, 2), np.int32)
    ring_end = np.empty(64, np.int64)
    ring_region = np.empty(64, np.int32)
    n_corners = n_rings = 0
    for r0 in range(rows):
        c0 = _next_start(regions, top_done, r0, 0)  # a tight scan: the ring bookkeeping below is rare
        while c0 < cols:
            # a new ring: the first unvisited top side in row-major order starts at a corner
            corners, n_corners = _trace(regions, r0, c0, top_done, corners, n_corners)
            ring_end = _grow(ring_end, n_rings + 1)
            ring_region = _grow(ring_region, n_rings + 1)
            ring_end[n_rings], ring_region[n_rings] = n_corners, regions[r0, c0]
            n_rings += 1
            c0 = _next_start(regions, top_done, r0, c0 + 1)
    return corners[:n_corners], ring_end[:n_rings], ring_region[:n_rings]


@numba.njit(**_JIT)
def _by_region(corners: np.ndarray, ring_end: np.ndarray, ring_region: np.ndarray,
               n_regions: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rings regrouped by region (stable: each region's shell, found first, stays first)."""
    n_rings = ring_end.size
    rings_of = np.zeros(n_regions + 1, np.int64)
    for k in range(n_rings):
        rings_of[ring_region[k]] += 1
    polygon_offsets = np.zeros(n_regions + 1, np.int64)
    for g in range(1, n_regions + 1):
        polygon_offsets[g] = polygon_offsets[g - 1] + rings_of[g]
    slot = polygon_offsets[:-1].copy()
    order = np.empty(n_rings, np.int64)
    for k in range(n_rings):
        order[slot[ring_region[k] - 1]] = k
        slot[ring_region[k] - 1] += 1
    out = np.empty_like(corners)
    ring_offsets = np.zeros(n_rings + 1, np.int64)
    for i in range(n_rings):
        k = order[i]
        start = ring_end[k - 1] if k > 0 else 0
        length = ring_end[k] - start
        out[ring_offsets[i]:ring_offsets[i] + length] = corners[start:ring_end[k]]
        ring_offsets[i + 1] = ring_offsets[i] + length
    return out, ring_offsets, polygon_offsets


def outlines(regions: np.ndarray, n_regions: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The boundary of each 4-connected region of a label image, as polygon rings of pixel corners.

    Parameters
    ----------
    regions : numpy.ndarray
        2-D int32 labels 1..n_regions of 4-connected regions (``label(mask, 4)``), 0 = background.
    n_regions : int
        Number of regions; every label 1..n_regions must be present.

    Returns
    -------
    corners : numpy.ndarray
        int32 (n, 2): (column, row) of pixel corners (the top-left corner of pixel (r, c) is (c, r)), closed
        rings one after another, with a vertex only where the boundary turns.
    ring_offsets, polygon_offsets : numpy.ndarray
        int64, as ``shapely.from_ragged_array`` takes them: ring k is corners[ring_offsets[k]:ring_offsets[k + 1]];
        region g (1-based) is rings polygon_offsets[g - 1]:polygon_offsets[g], its shell first, then its holes.

    Notes
    -----
    Each ring follows the boundary with the region on its right (clockwise on screen). Where a region touches
    itself only at a corner, the ring turns away from the pixel it comes along, so every ring is simple and a
    hole touching the shell or another hole at a corner is its own ring (valid OGC polygons; GDAL's polygonize
    gives the same geometry). One pass over the pixels: about 2-4 ns/px plus the corners.
    """
    _check_below(regions, n_regions + 1, "region")
    corners, ring_end, ring_region = _outlines(np.ascontiguousarray(regions, dtype=np.int32))
    return _by_region(corners, ring_end, ring_region, n_regions)


@numba.njit(**_JIT)
def _capsule(sx0, sy0, sx1, sy1, ax, ay, bx, by, d):
    """Interval [lo, hi] of t in [0, 1] where S(t) = S0 + t (S1 - S0) lies within d of the edge A-B (lo >= hi:
    nowhere): the union of the two end discs and the rectangle along the edge, each solved for t."""
    vx, vy = sx1 - sx0, sy1 - sy0
    vv = vx * vx + vy * vy
    lo, hi = math.inf, -math.inf
    for cx, cy in ((ax, ay), (bx, by)):  # |S0 + t v - C|^2 <= d^2
        wx, wy = sx0 - cx, sy0 - cy
        b = 2 * (vx * wx + vy * wy)
        c = (wx * wx + wy * wy) - d * d
        disc = b * b - 4 * vv * c
        if disc >= 0:
            root = math.sqrt(disc)
            lo, hi = min(lo, (-b - root) / (2 * vv)), max(hi, (-b + root) / (2 * vv))
    ux, uy = bx - ax, by - ay
    length = math.hypot(ux, uy)
    wx, wy = sx0 - ax, sy0 - ay
    r_lo, r_hi = -math.inf, math.inf
    # along = (S - A).u / L in [0, L]; across = cross(u, S - A) / L in [-d, d]; both linear in t
    for k in range(2):
        if k == 0:
            value0, slope, low, high = (wx * ux + wy * uy) / length, (vx * ux + vy * uy) / length, 0.0, length
        else:
            value0, slope, low, high = (ux * wy - uy * wx) / length, (ux * vy - uy * vx) / length, -d, d
        if slope == 0:
            if not low <= value0 <= high:
                r_lo, r_hi = math.inf, -math.inf
        else:
            t1, t2 = (low - value0) / slope, (high - value0) / slope
            r_lo, r_hi = max(r_lo, min(t1, t2)), min(r_hi, max(t1, t2))
    if r_lo < r_hi:
        lo, hi = min(lo, r_lo), max(hi, r_hi)
    return min(max(lo, 0.0), 1.0), min(max(hi, 0.0), 1.0)


@numba.njit(**_JIT)
def _capsule_intervals(segments: np.ndarray, edges: np.ndarray, d: float) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.empty(len(segments)), np.empty(len(segments))
    for k in range(len(segments)):
        s, e = segments[k], edges[k]
        lo[k], hi[k] = _capsule(s[0], s[1], s[2], s[3], e[0], e[1], e[2], e[3], d)
    return lo, hi


def capsule_intervals(segments: np.ndarray, edges: np.ndarray, distance: float) -> tuple[np.ndarray, np.ndarray]:
    """For row k, segment S(t) = S0 + t (S1 - S0) and edge A-B (float (n, 4) x0, y0, x1, y1 each), the interval
    [lo, hi] of t in [0, 1] where S(t) is within ``distance`` of the edge (lo >= hi: nowhere). Map units."""
    return _capsule_intervals(np.ascontiguousarray(segments, np.float64), np.ascontiguousarray(edges, np.float64),
                              float(distance))


@numba.njit(**_JIT)
def _near_intervals(segments, edges, edge_start, pair_part, pair_segment, d):
    n_out = 0
    out_segment = np.empty(1024, np.int64)
    out_lo, out_hi = np.empty(1024), np.empty(1024)
    for k in range(pair_part.size):
        p, s = pair_part[k], pair_segment[k]
        sx0, sy0, sx1, sy1 = segments[s, 0], segments[s, 1], segments[s, 2], segments[s, 3]
        x_min, x_max = min(sx0, sx1) - d, max(sx0, sx1) + d
        y_min, y_max = min(sy0, sy1) - d, max(sy0, sy1) + d
        for e in range(edge_start[p], edge_start[p + 1]):
            ax, ay, bx, by = edges[e, 0], edges[e, 1], edges[e, 2], edges[e, 3]
            if max(ax, bx) < x_min or min(ax, bx) > x_max or max(ay, by) < y_min or min(ay, by) > y_max:
                continue  # boxes farther apart than d on one axis
            lo, hi = _capsule(sx0, sy0, sx1, sy1, ax, ay, bx, by, d)
            if lo < hi:
                out_segment = _grow(out_segment, n_out + 1)
                out_lo, out_hi = _grow(out_lo, n_out + 1), _grow(out_hi, n_out + 1)
                out_segment[n_out], out_lo[n_out], out_hi[n_out] = s, lo, hi
                n_out += 1
    return out_segment[:n_out], out_lo[:n_out], out_hi[:n_out]


def near_intervals(segments: np.ndarray, edges: np.ndarray, edge_start: np.ndarray, pair_part: np.ndarray,
                   pair_segment: np.ndarray, distance: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(segment, lo, hi) of every non-empty ``capsule_intervals`` interval between a segment and an edge of a
    polygon part, for the given (part, segment) pairs: part p's edges are edges[edge_start[p]:edge_start[p + 1]].
    Streams the pairs: memory is the intervals found, not (edge, segment) pairs."""
    return _near_intervals(np.ascontiguousarray(segments, np.float64), np.ascontiguousarray(edges, np.float64),
                           np.asarray(edge_start, np.int64), np.asarray(pair_part, np.int64),
                           np.asarray(pair_segment, np.int64), float(distance))


@numba.njit(**_JIT)
def _mode_of_4(p, q, s, t, nodata, base):
    """The most frequent of four codes (int64), the smallest on ties, ``nodata`` left out (``nodata`` if all are)."""
    top = base - 1  # key = count * base + (top - value): the largest key is the most frequent value, the smallest on ties
    kp = (p != nodata) * ((1 + (p == q) + (p == s) + (p == t)) * base + top - p)
    kq = (q != nodata) * ((1 + (q == p) + (q == s) + (q == t)) * base + top - q)
    ks = (s != nodata) * ((1 + (s == p) + (s == q) + (s == t)) * base + top - s)
    kt = (t != nodata) * ((1 + (t == p) + (t == q) + (t == s)) * base + top - t)
    k = max(max(kp, kq), max(ks, kt))
    return top - (k & top) if k > 0 else nodata  # base is a power of two: k & top is k % base


@numba.njit(**_JIT)
def _mode_2x2(a, nodata, base):
    rows, cols = a.shape
    out = np.empty(((rows + 1) // 2, (cols + 1) // 2), a.dtype)
    for i in range(rows // 2):  # whole 2x2 blocks; most are one code (taken as is: the count gives the same)
        r0, r1 = 2 * i, 2 * i + 1
        for j in range(cols // 2):
            c0, c1 = 2 * j, 2 * j + 1
            p, q, s, t = a[r0, c0], a[r0, c1], a[r1, c0], a[r1, c1]
            if p == q and p == s and p == t:
                out[i, j] = p
            else:
                out[i, j] = _mode_of_4(np.int64(p), np.int64(q), np.int64(s), np.int64(t), nodata, base)
    if cols % 2:  # a last odd column: blocks of 2 pixels (1 in the corner)
        for i in range(out.shape[0]):
            s = np.int64(a[2 * i + 1, cols - 1]) if 2 * i + 1 < rows else nodata
            out[i, -1] = _mode_of_4(np.int64(a[2 * i, cols - 1]), nodata, s, nodata, nodata, base)
    if rows % 2:  # a last odd row
        for j in range(cols // 2):
            out[-1, j] = _mode_of_4(np.int64(a[rows - 1, 2 * j]), np.int64(a[rows - 1, 2 * j + 1]), nodata, nodata,
                                    nodata, base)
    return out


def mode_2x2(codes: np.ndarray, nodata: int | None) -> np.ndarray:
    """Each 2x2 block of a 2-D array of unsigned codes (uint8 or uint16) -> its most frequent code, the smallest
    on ties, ``nodata`` pixels left out (``nodata`` where the whole block is); a last odd row or column makes
    blocks of 1-2 pixels. Shape (ceil(rows / 2), ceil(cols / 2)): one level of a COG's mode overviews."""
    if codes.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"mode_2x2 takes uint8 or uint16 codes, not {codes.dtype}")
    return _mode_2x2(np.ascontiguousarray(codes), -1 if nodata is None else int(nodata), int(np.iinfo(codes.dtype).max) + 1)
