"""Whole-landscape patch labelling over dask chunks, shared by every patch indicator (DESIGN.md §4, §6, §9).

Pass 1 labels each chunk (``kernels.label``, numbered as ``scipy.ndimage.label`` would; on the box around its
patch pixels) and returns only small things: per-label pixel counts and value histograms, each label's first
pixel, the labels on the chunk's four edge lines and, on request, the outlines of the labels that may reach a
polygon size and the runs of pixels for ``Patches.mapped``. The driver joins
labels that touch across chunk edges and corners (``scipy.sparse.csgraph``) and numbers patches by their first
pixel in row-major order: the numbering ``scipy.ndimage.label`` gives on the whole array, for any chunking.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import affine
import dask
import dask.array as da
import numpy as np
import shapely
from dask.delayed import Delayed
from scipy import sparse
from scipy.sparse import csgraph

from pipeline import kernels
from pipeline.zones import LANDSCAPE, ZoneLayer

POLYGON_BATCH = 512  # patches per task finishing polygons (merge of chunk pieces, to map coordinates)
ZONES_BATCH = 2048  # geometries per task naming the zones they touch (zones_touched_many)
POLYGON_GROUP = 16  # finishing tasks per compute: the pieces of finished patches are freed between computes
RUNS_PER_PX = 16  # keep_runs keeps a chunk's runs when it has at most one run per this many pixels (~0.5 byte/px)


@dataclass(frozen=True, eq=False)
class Pieces:
    """Outlines of labelled regions of one chunk (``kernels.outlines``): ring corners in chunk pixel coordinates
    ((column, row), uint16 in chunks below 65,536 px a side, else int32), ragged offsets, and the chunk-local
    patch label of each region."""

    local: np.ndarray  # int32 (n_regions,)
    corners: np.ndarray
    ring_offsets: np.ndarray
    polygon_offsets: np.ndarray


@dataclass(frozen=True, eq=False)
class Patches:
    """Connected components of a 2-D mask, labelled over the whole array.

    Attributes
    ----------
    n_patches : int
        Number of patches; patch ids are 1..n_patches, 0 is background.
    pixel_count : numpy.ndarray
        int64 (n_patches + 1,): pixels per patch id; index 0 (background) is always 0.
    value_counts : numpy.ndarray or None
        int64 (n_patches + 1, n_values): pixels of each value per patch id, row 0 always 0; None without values.
    neighbourhood : int
        4 (pixels joined through edges) or 8 (through edges and corners).
    face_parts : tuple of scipy.sparse.csr_array or None
        Per zone layer summarised with the patches (label_patches ``faces``, block_stats ``faces``): int64
        (n_patches + 1, n_faces) pixels of each patch in each face; None when no face ids were given.
    pieces_min_px : int or None
        With the chunks' outlines traced in the labelling pass (label_patches / block_stats ``pieces_min_px``),
        the smallest patch (pixels) they cover: ``polygons`` of patches at least that big needs no pass over
        the mask. None: polygons relabel the mask.

    With ``keep_runs`` (label_patches), the chunks' runs of patch pixels are kept where they are few (at most
    one per RUNS_PER_PX pixels): ``mapped`` paints those chunks from them instead of labelling them again.
    """

    n_patches: int
    pixel_count: np.ndarray
    value_counts: np.ndarray | None
    neighbourhood: int
    _mask: da.Array | None = field(repr=False)  # None when the summaries were made without a lazy mask
    _chunks: tuple[tuple[int, ...], tuple[int, ...]] = field(repr=False)
    _lookup: np.ndarray = field(repr=False)  # global patch id of each chunk-local label, all chunks in turn
    _offsets: np.ndarray = field(repr=False)  # chunk b's local label k is _lookup[_offsets[b] + k - 1]
    face_parts: tuple[sparse.csr_array, ...] | None = field(default=None, repr=False)
    pieces_min_px: int | None = None
    _pieces: tuple[Pieces, ...] | None = field(default=None, repr=False)  # per chunk, row-major
    _runs: tuple | None = field(default=None, repr=False)  # per chunk (row-major): (origin, runs) or None

    def labels(self) -> da.Array:
        """Lazy int64 array of global patch ids (0 = background), chunked like the mask; each task
        relabels its chunk (deterministic) and maps local labels to global ids."""
        return da.map_blocks(_relabel_block, self._lazy_mask(), **self._task_kwargs(), dtype=np.int64,
                             meta=np.empty((0, 0), np.int64))

    def _lazy_mask(self) -> da.Array:
        if self._mask is None:
            raise ValueError("these patches were summarised without their mask: labels, mapped values and the "
                             "polygons of patches below pieces_min_px are not available")
        return self._mask

    def mapped(self, table: np.ndarray) -> da.Array:
        """Lazy ``table[global patch id]`` per pixel (``table``: shape (n_patches + 1,), any dtype), chunked like
        the mask. The table is taken to each chunk's local labels first, so no global label array is made."""
        if table.shape != (self.n_patches + 1,):
            raise ValueError(f"table must have shape ({self.n_patches + 1},); got {table.shape}")
        shared = dict(table=dask.delayed(table, pure=True), **self._task_kwargs())
        if self._runs is None:
            return da.map_blocks(_mapped_block, self._lazy_mask(), **shared, dtype=table.dtype,
                                 meta=np.empty((0, 0), table.dtype))
        rows = []
        for (i, j), (height, width) in zip(np.ndindex(*(len(c) for c in self._chunks)),
                                           itertools.product(*self._chunks), strict=True):
            if j == 0:
                rows.append([])
            runs = self._runs[i * len(self._chunks[1]) + j]
            task = (dask.delayed(_painted_block, pure=False)(runs, (height, width), block_id=(i, j), **shared)
                    if runs is not None else  # too many runs were kept: label the chunk again
                    dask.delayed(_mapped_block)(self._lazy_mask().blocks[i, j], block_id=(i, j), **shared))
            rows[-1].append(da.from_delayed(task, (height, width), table.dtype))
        return da.block(rows)

    def _task_kwargs(self) -> dict:
        """Arguments of the per-chunk relabelling tasks; the lookup tables are one shared graph key each."""
        return dict(neighbourhood=self.neighbourhood, lookup=dask.delayed(self._lookup, pure=True),
                    offsets=dask.delayed(self._offsets, pure=True), nbx=len(self._chunks[1]))

    def polygons(self, keep: np.ndarray, transform: affine.Affine) -> dict[int, shapely.Geometry]:
        """Vectorise the patches selected by ``keep``.

        Parameters
        ----------
        keep : numpy.ndarray
            Either bool of shape (n_patches + 1,) indexed by patch id, or an array of patch ids.
        transform : affine.Affine
            Pixel-to-map transform of the whole array (map units, e.g. metres).

        Returns
        -------
        dict of int to shapely.Geometry
            Patch id -> Polygon, or MultiPolygon when the patch is joined only through pixel corners.

        Notes
        -----
        Each chunk is vectorised in pixel coordinates (integers, so exact). A patch inside one chunk is put
        through ``transform`` there (numpy, in the chunk's task); the pieces of a patch across chunks are joined
        in pixel coordinates (an exact merge along the chunk seams) and then put through it by the same
        arithmetic, so a vertex gets the same map coordinates whatever the chunking. The chunks' outlines come
        from the labelling pass when it traced them (``pieces_min_px`` at most the smallest kept patch), else
        from a pass relabelling the mask.
        Memory: one chunk per worker plus the geometries of the kept patches.
        """
        keep = np.asarray(keep)
        if keep.dtype != bool:
            ids, keep = keep, np.zeros(self.n_patches + 1, bool)
            keep[ids] = True
        if keep.shape != (self.n_patches + 1,):
            raise ValueError(f"keep must have shape ({self.n_patches + 1},) as a bool mask; got {keep.shape}")
        origin = tuple(np.cumsum((0, *c))[:-1] for c in self._chunks)
        matrix = (transform.a, -transform.b, transform.d, -transform.e, transform.c, transform.f)
        seams = (origin[1][1:].astype(np.float64), -origin[0][1:].astype(np.float64))  # pixel coordinates x, y
        spans = np.bincount(self._lookup, minlength=self.n_patches + 1) > 1  # patches in several chunks
        traced = self._pieces is not None and bool((self.pixel_count[1:][keep[1:]] >= self.pieces_min_px).all())
        if traced:
            nby, nbx = (len(c) for c in self._chunks)
            chunk_pieces = dask.compute(*[_opaque_task(
                _kept_pieces, self._pieces[b], _block_lookup(self._lookup, self._offsets, nbx, divmod(b, nbx)), keep,
                (int(origin[0][b // nbx]), int(origin[1][b % nbx])), spans, matrix) for b in range(nby * nbx)])
        else:
            chunk_pieces = dask.compute(da.map_blocks(
                _block_shapes, self._lazy_mask(), keep=dask.delayed(keep, pure=True), **self._task_kwargs(),
                origin=origin, spans=dask.delayed(spans, pure=True), matrix=matrix, dtype=object,
                meta=np.empty((0, 0), object), chunks=tuple((1,) * len(c) for c in self._chunks)))[0].ravel()
        pids, geoms, normal = (np.concatenate([empty, *(piece[k] for piece in chunk_pieces)])
                               for k, empty in enumerate(_NO_PIECES))
        del chunk_pieces
        order = np.argsort(pids, kind="stable")  # each patch's pieces together, in chunk order
        pids, geoms, normal = pids[order], geoms[order], normal[order]
        first = np.flatnonzero(np.r_[True, pids[1:] != pids[:-1]]) if pids.size else np.zeros(0, np.int64)
        ids, offsets = pids[first], np.r_[first, pids.size]
        across = spans[ids]
        finished = np.empty(ids.size, dtype=object)
        step = POLYGON_BATCH * POLYGON_GROUP
        for group in range(0, ids.size, step):  # pieces are let go as their patches are finished
            batches = [(s, min(s + POLYGON_BATCH, ids.size)) for s in range(group, min(group + step, ids.size), POLYGON_BATCH)]
            done = dask.compute(*[_opaque_task(_finish_polygons, geoms[offsets[s]:offsets[e]], offsets[s:e + 1] - offsets[s],
                                               across[s:e], matrix, seams, normal[offsets[s]:offsets[e]])
                                  for s, e in batches])
            for (s, e), polygons in zip(batches, done, strict=True):
                finished[s:e] = polygons
                geoms[offsets[s]:offsets[e]] = None
        return dict(zip(ids.tolist(), finished, strict=True))


def _opaque_task(func: Callable, *args: object) -> Delayed:
    """A dask task of ``func(*args)`` whose arguments dask does not walk through: dask.delayed looks into
    every list, tuple and dataclass of its arguments, ~6 ms for 512 lists of geometries."""
    return dask.delayed(functools.partial(func, *args), pure=False)()


def _finish_polygons(pieces: np.ndarray, offsets: np.ndarray, across_chunks: np.ndarray, matrix: tuple[float, ...],
                     seams: tuple[np.ndarray, np.ndarray], normal: np.ndarray) -> np.ndarray:
    """Each patch's pieces (``pieces[offsets[k]:offsets[k + 1]]`` for patch k) joined, in map coordinates and
    normalised (``shapely.normalize``; a patch of one piece that came normalised, ``normal``, as it is).

    Pieces of one chunk come in map coordinates (``_kept_pieces``). They are the 4-connected regions of the
    patch (kernels.outlines), which touch at most at corners, with a vertex only where the boundary turns: they
    are the parts of the patch as they are. Pieces of a patch across chunks (``across_chunks``) come in
    whole-array pixel coordinates (column, -row), integers, and share edges along the chunk ``seams`` (x of
    the column seams, y of the row seams): they are merged exactly (``_seam_union``), the vertices left where
    the boundary goes straight on across a seam are dropped, which gives the geometry GEOS's union and
    ``simplify(0)`` would, and the result is put in map coordinates by the affine ``matrix`` (as
    ``shapely.affinity.affine_transform``)."""
    sizes = np.diff(offsets)
    joined = np.empty(sizes.size, dtype=object)
    single = sizes == 1
    joined[single] = pieces[offsets[:-1][single]]
    several = np.flatnonzero(~single & ~across_chunks)
    if several.size:  # every patch of several pieces in one chunk, in one call
        owner = np.repeat(np.arange(sizes.size), sizes)
        mine = np.isin(owner, several)
        joined[several] = shapely.multipolygons(pieces[mine], indices=np.searchsorted(several, owner[mine]))
    merged = np.flatnonzero(across_chunks)
    if merged.size:
        unions = drop_straight_vertices(_seam_union([pieces[offsets[k]:offsets[k + 1]] for k in merged], *seams))
        joined[merged] = shapely.transform(unions, functools.partial(_affine, matrix=matrix))
    todo = ~(single & normal[offsets[:-1]])
    joined[todo] = shapely.normalize(joined[todo])
    return joined


def _affine(xy: np.ndarray, *, matrix: tuple[float, ...]) -> np.ndarray:
    """(n, 2) coordinates put through the affine ``matrix`` (a, b, d, e, xoff, yoff), as
    ``shapely.affinity.affine_transform``: the same arithmetic for every vertex, wherever it is computed."""
    a, b, d, e, xoff, yoff = matrix
    return np.stack([a * xy[:, 0] + b * xy[:, 1] + xoff, d * xy[:, 0] + e * xy[:, 1] + yoff], axis=1)


def _seam_union(patches: list[np.ndarray], seam_x: np.ndarray, seam_y: np.ndarray) -> np.ndarray:
    """Per patch, the union of its pieces (rectilinear polygons in pixel coordinates, from several chunks).

    The pieces' edges along the seams are cut at every pixel corner, so that pieces on either side of a seam
    share those edges vertex for vertex: the pieces then form a polygon coverage, which GEOS unions by dropping
    the shared edges, without the noding of an overlay (with ``drop_straight_vertices``, 2.3x faster than
    ``union_all`` and ``simplify(0)``; the same geometry). Pieces of one chunk touch at most at corners, so the
    seams hold every edge pieces share. (Uncut, GEOS may leave pieces apart without an error.)"""
    cut = _cut_seam_edges(np.concatenate([np.asarray(p, dtype=object) for p in patches]), seam_x, seam_y)
    out = np.empty(len(patches), dtype=object)
    start = 0
    for k, p in enumerate(patches):
        mine = cut[start:start + len(p)]
        start += len(p)
        out[k] = shapely.coverage_union_all(mine)
    return out


def _cut_seam_edges(polygons: np.ndarray, seam_x: np.ndarray, seam_y: np.ndarray) -> np.ndarray:
    """The polygons (axis-parallel edges, integer coordinates) with a vertex at every integer point of their
    edges that lie along a seam line (x in ``seam_x`` or y in ``seam_y``)."""
    rings, polygon = shapely.get_rings(polygons, return_index=True)
    xy, ring = shapely.get_coordinates(rings, return_index=True)
    starts = np.flatnonzero(ring[1:] == ring[:-1])  # the first point of each edge (each ring repeats its first point)
    x0, y0, x1, y1 = xy[starts, 0], xy[starts, 1], xy[starts + 1, 0], xy[starts + 1, 1]
    on_seam = ((x0 == x1) & np.isin(x0, seam_x)) | ((y0 == y1) & np.isin(y0, seam_y))
    steps = np.where(on_seam, np.abs(x1 - x0) + np.abs(y1 - y0), 1).astype(np.int64)
    edge = np.repeat(np.arange(starts.size), steps)
    k = np.arange(edge.size) - np.repeat(np.cumsum(steps) - steps, steps)  # step along the edge
    direction = np.stack([np.sign(x1 - x0), np.sign(y1 - y0)], axis=1)
    points = xy[starts][edge] + k[:, None] * direction[edge]
    rings = shapely.linearrings(points, indices=ring[starts][edge])  # each ring closed again on its first point
    return shapely.polygons(rings, indices=polygon)


def drop_straight_vertices(geoms: np.ndarray) -> np.ndarray:
    """Polygons and MultiPolygons with axis-parallel edges, without the vertices where their boundary goes
    straight on (as ``shapely.simplify(geoms, 0)``, which also drops only those; ~5x faster)."""
    parts, owner = shapely.get_parts(geoms, return_index=True)
    rings, part = shapely.get_rings(parts, return_index=True)
    xy, ring = shapely.get_coordinates(rings, return_index=True)
    is_open = np.r_[ring[1:] == ring[:-1], False]  # each ring without the repeat of its first point
    xy, ring = xy[is_open], ring[is_open]
    first = np.r_[0, np.flatnonzero(ring[1:] != ring[:-1]) + 1]
    size = np.diff(np.r_[first, ring.size])
    ring_first, ring_size = np.repeat(first, size), np.repeat(size, size)
    at = np.arange(ring.size) - ring_first
    before, after = ring_first + (at - 1) % ring_size, ring_first + (at + 1) % ring_size
    x, y = xy[:, 0], xy[:, 1]
    straight = ((x[before] == x) & (x[after] == x)) | ((y[before] == y) & (y[after] == y))
    polygons = shapely.polygons(shapely.linearrings(xy[~straight], indices=ring[~straight]), indices=part)
    out = np.empty(len(geoms), dtype=object)
    n_parts = np.bincount(owner, minlength=len(geoms))
    single = n_parts[owner] == 1
    out[owner[single]] = polygons[single]
    multi = np.flatnonzero(n_parts > 1)
    if multi.size:
        out[multi] = shapely.multipolygons(polygons[~single], indices=np.searchsorted(multi, owner[~single]))
    return out


def label_patches(mask: da.Array, *, neighbourhood: int = 8, values: da.Array | None = None,
                  n_values: int = 0, faces: tuple[da.Array, ...] = (), n_faces: tuple[int, ...] = (),
                  pieces_min_px: int | None = None, keep_runs: bool = False) -> Patches:
    """Label connected components of a 2-D dask mask over the whole array.

    A patch cut by any number of chunk edges is one patch. Patch ids are 1..n in the row-major order of
    each patch's first pixel, so they equal ``scipy.ndimage.label`` on the whole array, for any chunking.

    Parameters
    ----------
    mask : dask.array.Array
        2-D; nonzero pixels belong to patches.
    neighbourhood : {8, 4}
        8: pixels sharing an edge or a corner are connected; 4: an edge only.
    values : dask.array.Array, optional
        Integer array of the same shape (e.g. dense class indices), values in [0, n_values) on patch pixels.
    n_values : int
        Number of distinct values; required with ``values``.
    faces, n_faces : tuple of dask.array.Array, tuple of int
        Zone face ids (values in [0, n_faces[k])) of any number of zone layers: ``Patches.face_parts`` then
        holds each layer's pixels per (patch, face).
    pieces_min_px : int, optional
        Trace the outlines of patches of at least this many pixels in the same pass (``block_stats``), so that
        ``Patches.polygons`` of such patches needs no second pass over the mask.
    keep_runs : bool
        Keep each chunk's runs of patch pixels where they are few, so ``Patches.mapped`` needs no second
        labelling there (see Patches).

    Returns
    -------
    Patches
        Patch count, pixels per patch, value histograms per patch; global labels and polygons on demand.

    Raises
    ------
    ValueError
        On a bad neighbourhood, shape, empty chunk, or a value outside [0, n_values) on a patch pixel.

    Notes
    -----
    One ``dask.compute`` with one task per chunk. Memory per task is a few arrays of chunk size (int32
    labels and a parent table); each task returns O(local labels × n_values + chunk perimeter). The driver
    holds O(local labels over all chunks × n_values), about the number of patches, never a full-size array.
    """
    _check_neighbourhood(neighbourhood)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D; got shape {mask.shape}")
    if any(size == 0 for sizes in mask.chunks for size in sizes):
        raise ValueError(f"mask has an empty chunk (chunks {mask.chunks}); rechunk it first")
    args = [mask]
    if values is not None:
        if values.shape != mask.shape or values.dtype.kind not in "biu" or n_values < 1:
            raise ValueError(f"values must be integers of shape {mask.shape} with n_values >= 1; got "
                             f"{values.dtype} {values.shape}, n_values={n_values}")
        args.append(values.rechunk(mask.chunks))
    args += [f.rechunk(mask.chunks) for f in faces]
    stats = da.map_blocks(
        _block_stats_cell, *args, has_values=values is not None, neighbourhood=neighbourhood, n_values=n_values,
        n_faces=tuple(n_faces), pieces_min_px=pieces_min_px, keep_runs=keep_runs, dtype=object,
        meta=np.empty((0, 0), object), chunks=tuple((1,) * len(c) for c in mask.chunks),
    )
    return patches_from_stats(dask.compute(stats)[0], mask.chunks, mask=mask, neighbourhood=neighbourhood)


def patches_from_stats(stats: np.ndarray, chunks: tuple[tuple[int, ...], tuple[int, ...]], *, neighbourhood: int,
                       mask: da.Array | None = None) -> Patches:
    """Merge per-chunk ``block_stats`` (an object array of one summary per chunk of ``chunks``) into Patches.

    For callers that compute the chunk summaries together with other per-chunk results in one pass. ``mask``,
    the lazy array the summaries were made from, is relabelled for ``labels``, ``mapped`` and the polygons the
    summaries did not trace (``pieces_min_px``); without it those raise."""
    _check_neighbourhood(neighbourhood)
    if stats.shape != tuple(len(c) for c in chunks):
        raise ValueError(f"{stats.shape} chunk summaries for {tuple(len(c) for c in chunks)} chunks")
    offsets = np.cumsum([0] + [s["n"] for s in stats.flat], dtype=np.int64)
    lookup, n = _merge(stats, offsets, chunks, diagonal=neighbourhood == 8)
    pixel_count = _sum_by(lookup, np.concatenate([s["count"] for s in stats.flat]), n + 1)
    has_values = all("hist" in s for s in stats.flat)
    value_counts = _sum_by(lookup, np.concatenate([s["hist"] for s in stats.flat]), n + 1) if has_values else None
    face_parts = None
    if stats.size and all("faces" in s for s in stats.flat):  # (local label, face, pixels) -> (global id, face)
        face_parts = tuple(
            sparse.coo_array((np.concatenate([s["faces"][k][2] for s in stats.flat]),
                              (np.concatenate([lookup[offsets[b] + s["faces"][k][0] - 1] for b, s in enumerate(stats.flat)]),
                               np.concatenate([s["faces"][k][1] for s in stats.flat]))), shape=(n + 1, nf)).tocsr()
            for k, nf in enumerate(stats.flat[0]["n_faces"]))
    min_px = {s.get("pieces_min_px") for s in stats.flat}
    traced = len(min_px) == 1 and None not in min_px
    runs = tuple(s["runs"] for s in stats.flat) if all("runs" in s for s in stats.flat) else None
    return Patches(n, pixel_count, value_counts, neighbourhood, mask, tuple(chunks), lookup, offsets, face_parts,
                   pieces_min_px=min_px.pop() if traced else None,
                   _pieces=tuple(s["pieces"] for s in stats.flat) if traced else None, _runs=runs)


def _check_neighbourhood(neighbourhood: int) -> int:
    if neighbourhood not in (4, 8):
        raise ValueError(f"neighbourhood must be 4 or 8; got {neighbourhood!r}")
    return neighbourhood


def block_stats(block: np.ndarray, values: np.ndarray | None = None, *, neighbourhood: int,
                n_values: int = 0, faces: tuple[np.ndarray, ...] = (), n_faces: tuple[int, ...] = (),
                value_bits: bool = False, pieces_min_px: int | None = None, codes: bool = False,
                keep_runs: bool = False) -> dict:
    """Pass 1 on one chunk: local label count ``n``, pixels per label ``count``, first pixel ``first``, value
    histogram ``hist`` (with ``values``; with ``value_bits``, pixels per set bit of the values, n_values bits:
    ``kernels.bit_counts``), the labels on the four edge lines ``edges``, with ``faces`` (zone face ids of
    the chunk, ``n_faces`` per layer) the (local label, face, pixels) parts ``faces``, and with
    ``pieces_min_px`` the outlines ``pieces`` of every label that may belong to a patch of at least that many
    pixels (those as big, and all that reach the chunk's edge); O(labels), plus the traced corners. With
    ``keep_runs``, ``runs``: ((row, column) of the box, kernels.component_runs runs) when there are at most one per
    RUNS_PER_PX pixels of the chunk, else None.

    With ``codes``, ``block`` holds integer codes and patches are the components of each nonzero code
    (``kernels.label_codes``), with the code of each label in ``code``: ``split_by_code`` then gives every
    code's summary as ``block_stats(block == code)`` would, from one labelling instead of one per code.

    Every pass runs on the box around the chunk's patch pixels (``kernels.nonzero_bounds``): a sparse mask
    costs its box, not the chunk."""
    if codes and pieces_min_px is not None:
        raise ValueError("pieces are traced per code: call block_stats on each code's mask")
    n_values = n_values if values is not None else 0
    box = kernels.nonzero_bounds(block)
    if box[1] == 0:
        return {**empty_stats(block.shape, n_values, tuple(n_faces), pieces_min_px, keep_runs=keep_runs),
                **({"code": np.zeros(0, block.dtype)} if codes else {})}
    r0, r1, c0, c1 = box
    rows, cols = block.shape
    n, count, first_local, runs = kernels.component_runs(block[r0:r1, c0:c1], neighbourhood, codes=codes)
    first_row, first_col = np.divmod(first_local, c1 - c0)
    edges = tuple(np.zeros(size, np.int32) for size in (cols, cols, rows, rows))  # top, bottom, left, right
    box_edges = kernels.run_edges((r1 - r0, c1 - c0), runs)
    for line, reaches, span in ((0, r0 == 0, (c0, c1)), (1, r1 == rows, (c0, c1)), (2, c0 == 0, (r0, r1)),
                                (3, c1 == cols, (r0, r1))):
        if reaches:
            edges[line][span[0]:span[1]] = box_edges[line]
    stats = {
        "n": n,
        "count": count[1:],
        "first": (first_row + r0) * cols + first_col + c0,  # row-major index within the chunk
        "edges": edges,
    }
    if codes:
        stats["code"] = np.ascontiguousarray(block[r0:r1, c0:c1]).ravel()[first_local]
    if keep_runs:
        stats["runs"] = ((r0, c0), runs) if runs[1].size * RUNS_PER_PX <= block.size else None
    if values is not None:
        stats["hist"] = kernels.run_histogram(runs, values[r0:r1, c0:c1], n, n_values, bits=value_bits)[1:]
    image = functools.cache(lambda: kernels.runs_image((r1 - r0, c1 - c0), runs))  # painted only if needed
    if n_faces:
        stats["faces"] = _local_face_parts(runs, image, n, count, tuple(f[r0:r1, c0:c1] for f in faces), n_faces)
        stats["n_faces"] = tuple(n_faces)
    if pieces_min_px is not None:
        min_px = max(math.floor(pieces_min_px), 1)
        keep = count >= min_px  # count[0] (background) is 0
        for line in edges:
            keep[line] = True
        keep[0] = False
        stats["pieces"], stats["pieces_min_px"] = _outline_pieces(runs, (r1 - r0, c1 - c0), keep, (r0, c0)), min_px
    return stats


def split_by_code(stats: dict) -> dict[int, dict]:
    """A ``block_stats(..., codes=True)`` summary as one summary per code present: the summary
    ``block_stats(block == code)`` gives (local labels renumbered 1..n_code in the same order)."""
    out = {}
    for code in np.unique(stats["code"]):
        chosen = np.flatnonzero(stats["code"] == code)  # local label - 1
        renumber = np.zeros(stats["n"] + 1, np.int32)
        renumber[chosen + 1] = np.arange(1, chosen.size + 1)
        part = {"n": chosen.size, "count": stats["count"][chosen], "first": stats["first"][chosen],
                "edges": tuple(renumber[line] for line in stats["edges"])}
        if "hist" in stats:
            part["hist"] = stats["hist"][chosen]
        if "faces" in stats:
            part["faces"] = []
            for local, face, px in stats["faces"]:
                ours = renumber[local] > 0
                part["faces"].append((renumber[local][ours], face[ours], px[ours]))
            part["n_faces"] = stats["n_faces"]
        out[int(code)] = part
    return out


def empty_stats(shape: tuple[int, int], n_values: int = 0, n_faces: tuple[int, ...] = (),
                pieces_min_px: int | None = None, *, keep_runs: bool = False) -> dict:
    """``block_stats`` of a chunk of ``shape`` without any patch pixel (with a histogram when n_values > 0,
    empty face parts for each of ``n_faces``, no pieces with ``pieces_min_px`` and no runs with ``keep_runs``)."""
    stats = {"n": 0, "count": np.zeros(0, np.int64), "first": np.zeros(0, np.int64),
             "edges": tuple(np.zeros(n, np.int32) for n in (shape[1], shape[1], shape[0], shape[0]))}
    if n_values:
        stats["hist"] = np.zeros((0, n_values), np.int64)
    if n_faces:
        stats["faces"], stats["n_faces"] = [(np.zeros(0, np.int64),) * 3 for _ in n_faces], tuple(n_faces)
    if pieces_min_px is not None:
        stats["pieces"] = _outline_pieces((), (1, 1), np.zeros(1, bool))
        stats["pieces_min_px"] = max(math.floor(pieces_min_px), 1)
    if keep_runs:
        stats["runs"] = ((0, 0), kernels.component_runs(np.zeros((1, 1), bool), 8)[3])  # none, whatever the rule
    return stats


def _block_stats_cell(block: np.ndarray, *rest: np.ndarray, has_values: bool, **kw) -> np.ndarray:
    """map_blocks adapter: (mask, [values], faces...) -> block_stats in a (1, 1) cell."""
    values, faces = (rest[0], rest[1:]) if has_values else (None, rest)
    return _cell(block_stats(block, values, faces=tuple(faces), **kw))


def _merge(stats: np.ndarray, offsets: np.ndarray, chunks: tuple[tuple[int, ...], ...], *,
           diagonal: bool) -> tuple[np.ndarray, int]:
    """Global patch id (1..n) of every local label, joining labels that touch across chunk boundaries."""
    total = int(offsets[-1])
    if total == 0:
        return np.zeros(0, np.int64), 0
    nby, nbx = stats.shape
    # edge lines (top, bottom, left, right) as provisional ids offsets[b] + local - 1; -1 = background
    lines = [[[np.where(line > 0, offsets[i * nbx + j] + line - 1, -1) for line in stats[i, j]["edges"]]
              for j in range(nbx)] for i in range(nby)]
    seams = _seams(lines, near=1, far=0) + _seams([list(col) for col in zip(*lines, strict=True)], near=3, far=2)
    pairs = [(np.empty(0, np.int64), np.empty(0, np.int64))] + [_touching(a, b, diagonal) for a, b in seams]
    u, v = (np.concatenate(side) for side in zip(*pairs, strict=True))
    graph = sparse.coo_array((np.ones(u.size, np.int8), (u, v)), shape=(total, total))
    n, component = csgraph.connected_components(graph, directed=False)
    (row0, col0), width = (np.cumsum((0, *c)) for c in chunks), sum(chunks[1])
    pieces_first = []  # row-major index of each local label's first pixel in the whole array
    for (i, j), s in np.ndenumerate(stats):
        rows, cols = np.divmod(s["first"], chunks[1][j])
        pieces_first.append((row0[i] + rows) * width + col0[j] + cols)
    first = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first, component, np.concatenate(pieces_first))
    patch_id = np.empty(n, np.int64)
    patch_id[np.argsort(first, kind="stable")] = np.arange(1, n + 1)  # timsort: merges sorted runs
    return patch_id[component], n


def _seams(grid: list[list[list[np.ndarray]]], *, near: int, far: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Whole-length lines facing each other across each seam between consecutive block rows of ``grid``."""
    return [(np.concatenate([blk[near] for blk in grid[i]]), np.concatenate([blk[far] for blk in grid[i + 1]]))
            for i in range(len(grid) - 1)]


def _touching(a: np.ndarray, b: np.ndarray, diagonal: bool) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of ids that touch across a seam where pixel k of line ``a`` faces pixel k of ``b`` (-1 = none).

    With ``diagonal``, pixel k also touches k - 1 and k + 1 on the other side; as the lines run the whole
    array, this includes the pixels at chunk corners (diagonal and anti-diagonal).
    """
    shifts = [(a, b), (a[:-1], b[1:]), (a[1:], b[:-1])] if diagonal else [(a, b)]
    u, v = (np.concatenate(side) for side in zip(*shifts, strict=True))
    both = (u >= 0) & (v >= 0)
    u, v = u[both], v[both]
    new = np.ones(u.size, bool)
    new[1:] = (u[1:] != u[:-1]) | (v[1:] != v[:-1])  # drop repeats along runs
    return u[new], v[new]


def _sum_by(keys: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
    """Sums of the rows of int64 ``x`` grouped by ``keys`` in [0, n): exact, order-independent, no big temporaries."""
    groups = sparse.csr_array((np.ones(keys.size, np.int64), (keys, np.arange(keys.size))), shape=(n, keys.size))
    return groups @ x


def _cell(obj: object) -> np.ndarray:
    """``obj`` as the single element of a (1, 1) object block, the output of the per-chunk summary tasks."""
    out = np.empty((1, 1), object)
    out[0, 0] = obj
    return out


def _block_lookup(lookup: np.ndarray, offsets: np.ndarray, nbx: int, block_id: tuple[int, int]) -> np.ndarray:
    b = block_id[0] * nbx + block_id[1]
    return np.concatenate([[0], lookup[offsets[b]:offsets[b + 1]]])


def _mapped_block(block: np.ndarray, *, table: np.ndarray, neighbourhood: int, lookup: np.ndarray,
                  offsets: np.ndarray, nbx: int, block_id: tuple[int, int]) -> np.ndarray:
    """``table`` of each pixel's global patch id, for one chunk (see Patches.mapped)."""
    return _in_chunk(block, neighbourhood, table[_block_lookup(lookup, offsets, nbx, block_id)])


def _local_face_parts(runs: tuple, image: Callable[[], np.ndarray], n_local: int, count: np.ndarray,
                      faces: tuple[np.ndarray, ...], n_faces: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One chunk's labels (``count`` pixels each, count[0] background; ``runs`` of kernels.component_runs), per
    face layer: (local label, face, pixel count) of every label part present; ``image()`` gives the label image,
    needed only where a layer's faces cut the chunk into more parts than a table holds."""
    out = []
    for face, nf in zip(faces, n_faces, strict=True):
        lo, hi = kernels.value_range(face) if face.size else (0, 0)
        if lo == hi and 0 <= lo < nf:  # the chunk lies in one face (most chunks): every label is one part
            out.append((np.arange(1, n_local + 1), np.full(n_local, lo, np.int64), count[1:n_local + 1]))
        elif (n_local + 1) * nf <= 4 * face.size:  # a (label, face) table no bigger than a few chunk arrays
            table = kernels.run_histogram(runs, face, n_local, nf)  # reads the patch pixels only
            local, f = np.nonzero(table)
            out.append((local, f, table[local, f]))
        else:
            lab = image()
            inside = lab > 0
            keys, counts = np.unique(lab[inside].astype(np.int64) * nf + face[inside], return_counts=True)
            out.append((keys // nf, keys % nf, counts))
    return out


def _painted_block(runs: tuple, shape: tuple[int, int], *, table: np.ndarray, lookup: np.ndarray, offsets: np.ndarray,
                   nbx: int, block_id: tuple[int, int], **_) -> np.ndarray:
    """``table`` of each pixel's global patch id, for one chunk, painted from its kept runs (see Patches.mapped)."""
    by_local = table[_block_lookup(lookup, offsets, nbx, block_id)]
    out = np.full(shape, by_local[0], by_local.dtype)
    kernels.paint_runs(out, *runs, by_local)
    return out


def _relabel_block(block: np.ndarray, *, neighbourhood: int, lookup: np.ndarray, offsets: np.ndarray,
                   nbx: int, block_id: tuple[int, int]) -> np.ndarray:
    """Global patch ids of one chunk (int64, 0 = background)."""
    return _in_chunk(block, neighbourhood, _block_lookup(lookup, offsets, nbx, block_id))


def _in_chunk(block: np.ndarray, neighbourhood: int, by_local: np.ndarray) -> np.ndarray:
    """``by_local[local label]`` of each pixel of a chunk, labelled as ``block_stats`` labels it (in the box
    around its patch pixels; ``by_local[0]`` elsewhere)."""
    out = np.full(block.shape, by_local[0], by_local.dtype)
    r0, r1, c0, c1 = kernels.nonzero_bounds(block)
    if r1:
        out[r0:r1, c0:c1] = by_local[kernels.label(block[r0:r1, c0:c1], neighbourhood)[0]]
    return out


def _outline_pieces(runs: tuple, shape: tuple[int, int], keep: np.ndarray, origin: tuple[int, int] = (0, 0)) -> Pieces:
    """The 4-connected regions of the labels selected by ``keep`` (bool, indexed by local label) traced by
    ``kernels.outlines``, with the local label of each; ``runs`` (kernels.component_runs) cover an image of
    ``shape`` starting at chunk pixel ``origin`` (row, column)."""
    if not keep.any():
        return Pieces(np.zeros(0, np.int32), np.zeros((0, 2), np.int32), np.zeros(1, np.int64), np.zeros(1, np.int64))
    n, region, first_run = kernels.run_regions(runs, keep)
    regions = np.zeros(shape, np.int32)
    row_first, start, end, run_label = runs
    kernels.paint_runs(regions, (0, 0), (row_first, start, end, np.arange(start.size)), region)
    corners, ring_offsets, polygon_offsets = kernels.outlines(regions, n)
    corners += np.array([origin[1], origin[0]], np.int32)
    if max(o + size for o, size in zip(origin, shape, strict=True)) < 2**16:  # half the memory while they wait
        corners = corners.astype(np.uint16)
    return Pieces(run_label[first_run], corners, ring_offsets, polygon_offsets)


_NO_PIECES = (np.empty(0, np.int64), np.empty(0, dtype=object), np.empty(0, bool))


def _kept_pieces(pieces: Pieces, lut: np.ndarray, keep: np.ndarray, origin: tuple[int, int], spans: np.ndarray,
                 matrix: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patch ids (int64), polygons and whether each is normalised, of the kept patches' pieces of one chunk:
    pieces of a patch in several chunks (``spans``, by patch id) in whole-array pixel coordinates (column,
    -row), integers, so they meet exactly (``_finish_polygons`` merges them and puts them in map coordinates);
    the others put in map coordinates here by the affine ``matrix``, and those without holes normalised here
    too (``_normal_rings``)."""
    patch = lut[pieces.local].astype(np.int64)
    chosen = keep[patch]
    if not chosen.any():
        return _NO_PIECES
    row0, col0 = origin
    xy = np.stack([pieces.corners[:, 0].astype(np.float64) + col0, -(pieces.corners[:, 1].astype(np.float64) + row0)],
                  axis=1)
    inside = np.repeat(~spans[patch], np.diff(pieces.ring_offsets[pieces.polygon_offsets]))  # per vertex
    xy[inside] = _affine(xy[inside], matrix=matrix)
    normal = ~spans[patch] & (np.diff(pieces.polygon_offsets) == 1)  # in map coordinates, one ring
    xy = _normal_rings(xy, pieces.ring_offsets, pieces.polygon_offsets[:-1][normal])
    polygons = shapely.from_ragged_array(shapely.GeometryType.POLYGON, xy, (pieces.ring_offsets, pieces.polygon_offsets))
    return patch[chosen], polygons[chosen], normal[chosen]


def _normal_rings(xy: np.ndarray, ring_offsets: np.ndarray, rings: np.ndarray) -> np.ndarray:
    """``xy`` with the closed ``rings`` (indices into ``ring_offsets``) as GEOS's normalize writes a polygon's
    shell: starting at its smallest vertex (x, then y), clockwise. Vertices are only reordered, never computed."""
    if not rings.size:
        return xy
    start, end = ring_offsets[rings], ring_offsets[rings + 1] - 1  # each ring without the repeat of its first point
    size = end - start
    ring = np.repeat(np.arange(rings.size), size)
    at = np.arange(size.sum()) - np.repeat(np.cumsum(size) - size, size)
    vertex = np.repeat(start, size) + at
    order = np.lexsort((xy[vertex, 1], xy[vertex, 0], ring))
    first = np.r_[0, np.cumsum(size)[:-1]]
    low = at[order[first]]  # the smallest vertex of each ring
    prev, nxt = (start + (low + step) % size for step in (-1, 1))
    m = start + low
    cross = ((xy[m, 0] - xy[prev, 0]) * (xy[nxt, 1] - xy[m, 1]) - (xy[m, 1] - xy[prev, 1]) * (xy[nxt, 0] - xy[m, 0]))
    step = np.where(cross > 0, -1, 1)  # counter-clockwise rings are walked backwards
    out = xy.copy()
    out[vertex] = xy[np.repeat(start, size) + (np.repeat(low, size) + np.repeat(step, size) * at) % np.repeat(size, size)]
    out[end] = out[start]
    return out


def _block_shapes(block: np.ndarray, *, neighbourhood: int, lookup: np.ndarray, offsets: np.ndarray, nbx: int,
                  keep: np.ndarray, origin: tuple[np.ndarray, np.ndarray], spans: np.ndarray, matrix: tuple[float, ...],
                  block_id: tuple[int, int]) -> np.ndarray:
    """Patch ids and polygons of the kept patches' pieces in one chunk, relabelled from the mask (_kept_pieces)."""
    lut = _block_lookup(lookup, offsets, nbx, block_id)
    keep_local = keep[lut]
    keep_local[0] = False
    if not keep_local.any():
        return _cell(_NO_PIECES)
    r0, r1, c0, c1 = kernels.nonzero_bounds(block)
    pieces = _outline_pieces(kernels.component_runs(block[r0:r1, c0:c1], neighbourhood)[3], (r1 - r0, c1 - c0), keep_local,
                             (r0, c0))
    return _cell(_kept_pieces(pieces, lut, keep, tuple(int(o[k]) for o, k in zip(origin, block_id, strict=True)), spans,
                              matrix))


def zones_touched_many(geoms: list[shapely.Geometry], layer: ZoneLayer, *, patches: bool = False) -> list[str]:
    """For each geometry, the names of the zones it overlaps with positive area, largest overlap first (ties in
    the layer's zone order), joined by '; ' ('' for none); a geometry without area is in no zone.

    ``patches``: the geometries are patches, unions of whole pixels inside the landscape. Each such pixel has its
    centre in the boundary (the pixel-centre rule), so it overlaps the boundary with positive area: the
    landscape layer names every patch, without a query.

    A geometry whose bounding box meets no zone boundary lies, box and all, in the zones that hold the box's
    corner (one point query). Of the others (a few %), one inside one zone and meeting no other is named by two
    predicate queries; only those left need their overlap areas, in one vectorised intersection. In parallel
    tasks of ZONES_BATCH geometries (GEOS works without the GIL)."""
    if patches and layer.name == LANDSCAPE:
        return [layer.zone_names[0]] * len(geoms)
    batches = [geoms[i:i + ZONES_BATCH] for i in range(0, len(geoms), ZONES_BATCH)]
    return [name for names in dask.compute(*[_opaque_task(_zones_touched_batch, b, layer) for b in batches])
            for name in names]


def _zones_touched_batch(geoms: list[shapely.Geometry], layer: ZoneLayer) -> list[str]:
    geoms = np.asarray(geoms, dtype=object)
    bounds = shapely.bounds(geoms)
    crossing = np.zeros(len(geoms), bool)  # the box meets a zone boundary (touching counts)
    crossing[shapely.STRtree(_boundary_segments(layer.zone_geometries)).query(
        shapely.box(*bounds.T), predicate="intersects")[0]] = True
    clear, near = np.flatnonzero(~crossing), np.flatnonzero(crossing)
    corners, across = shapely.STRtree(shapely.points(bounds[clear, :2])), shapely.STRtree(geoms[near])
    n_zones = np.zeros(len(geoms), np.int64)  # zones holding the corner (clear) or meeting the geometry (near)
    inside = np.full(len(geoms), -1, np.int64)  # the zone holding the corner (clear) or the geometry (near)
    held_geom, held_zone, met_geom, met_zone = [], [], [], []  # (geometry, zone) pairs: clear, near
    for k, zone in enumerate(layer.zone_geometries):  # the zone is the prepared side of every query
        held = clear[corners.query(zone, predicate="intersects")]
        met = near[across.query(zone, predicate="intersects")]
        n_zones[held] += 1
        n_zones[met] += 1
        inside[held] = k
        inside[near[across.query(zone, predicate="contains")]] = k
        held_geom.append(held)
        held_zone.append(np.full(held.size, k))
        met_geom.append(met)
        met_zone.append(np.full(met.size, k))
    area = shapely.area(geoms)
    simple = (area > 0) & np.where(crossing, (n_zones == 1) & (inside >= 0), n_zones <= 1)
    names = [layer.zone_names[k] if k >= 0 and simple[i] else "" for i, k in enumerate(inside)]
    # the others by their overlap areas (a clear geometry lies whole in each zone holding its corner), largest
    # first, ties in zone order, only those > 0
    pair_geom, pair_zone = np.concatenate(held_geom + met_geom), np.concatenate(held_zone + met_zone)
    keep = ~simple[pair_geom]
    pair_geom, pair_zone = pair_geom[keep], pair_zone[keep]
    overlap = area[pair_geom]
    cut = crossing[pair_geom]
    overlap[cut] = shapely.area(shapely.intersection(geoms[pair_geom[cut]],
                                                     np.asarray(layer.zone_geometries, dtype=object)[pair_zone[cut]]))
    order = np.lexsort((pair_zone, -overlap, pair_geom))
    for g, k, a in zip(pair_geom[order], pair_zone[order], overlap[order], strict=True):
        if a > 0:
            names[g] = f"{names[g]}; {layer.zone_names[k]}" if names[g] else layer.zone_names[k]
    return names


def _boundary_segments(polygons: tuple[shapely.Geometry, ...]) -> np.ndarray:
    """Every straight edge of the polygons' rings, as two-point LineStrings."""
    coords, ring = shapely.get_coordinates(shapely.get_parts(shapely.boundary(list(polygons))), return_index=True)
    same = ring[1:] == ring[:-1]
    return shapely.linestrings(np.stack([coords[:-1][same], coords[1:][same]], axis=1))


def lookup_block(block: np.ndarray, *, table: np.ndarray) -> np.ndarray:
    """map_blocks adapter: ``table[block]`` (kernels.lookup), e.g. the natural mask of class indices."""
    return kernels.lookup(table, block)


def tree_sum(partials: list) -> object:
    """Pairwise tree of additions over delayed per-chunk results (arrays, or lists/tuples of arrays, added
    element by element): memory stays bounded by a few partial results, not by the number of chunks."""
    while len(partials) > 1:
        partials = [dask.delayed(_add_nested)(*partials[i:i + 2]) if i + 1 < len(partials) else partials[i]
                    for i in range(0, len(partials), 2)]
    return partials[0]


def _add_nested(a, b):
    if isinstance(a, list | tuple):
        return type(a)(_add_nested(x, y) for x, y in zip(a, b, strict=True))
    return a + b


def halo_chunks(chunks: tuple[tuple[int, ...], ...], halo: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Chunks at least ``halo`` pixels wide on every axis, as ``da.overlap`` needs: narrow chunks join their
    neighbours. Results never depend on chunking, so this changes only how work is split."""
    fixed = []
    for sizes, depth in zip(chunks, halo, strict=True):
        merged: list[int] = []
        for size in sizes:
            if merged and merged[-1] < depth:
                merged[-1] += size
            else:
                merged.append(size)
        if len(merged) > 1 and merged[-1] < depth:
            merged[-2] += merged.pop()
        fixed.append(tuple(merged))
    return tuple(fixed)
