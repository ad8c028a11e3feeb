"""Merge the pieces of fields cut by block seams.

A field that crosses a block seam is traced once per block; the pieces share the seam's
pixel edges. :func:`seam_pairs` finds the pieces that meet across a seam (from the labels
along each block's edges); :func:`merge_pieces` unions the pieces of each field (grouped by
their ``field_id``, the same in every block) and drops the vertices the seam left on
straight edges, so the merged polygon is vertex for vertex the one the whole raster would
give.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import shapely

from geoseg.core.trace import Fields, drop_collinear

__all__ = [
    "seam_pairs",
    "merge_pieces",
]


def _group_union(geoms: np.ndarray, group: np.ndarray, n_groups: int, workers: int = 1) -> np.ndarray:
    """Union the polygons of each group (pieces of one field from several blocks).

    Only the exterior rings are unioned; each piece's holes are then put back as they are.
    That is exact here: a piece's hole is enclosed by that piece's own pixels, so it lies
    inside its block and meets no other piece. It matters for large fields with many holes
    (a background region around thousands of fields): unioning exteriors alone takes about
    half the time of unioning polygons with holes. Pieces joined through seam edges union
    into one polygon; should a group ever give anything else, it is unioned whole instead.
    """
    shells = shapely.polygons(shapely.get_exterior_ring(geoms))
    out = _union_by_group(shells, group, n_groups, workers)
    odd = shapely.get_type_id(out) != 3  # not a Polygon
    n_holes = np.where(odd[group], 0, shapely.get_num_interior_rings(geoms))
    has = n_holes > 0
    if has.any():
        ok = np.flatnonzero(~odd)
        # rings per group: the union's exterior, then its interiors, then the pieces' own holes
        u_rings, u_idx = shapely.get_rings(out[ok], return_index=True)
        p_rings, p_idx = shapely.get_rings(geoms[has], return_index=True)
        first = np.r_[0, np.cumsum(n_holes[has] + 1)[:-1]]
        keep = np.ones(len(p_rings), bool)
        keep[first] = False  # drop the pieces' exteriors
        remap = np.full(n_groups, -1, np.int64)
        remap[ok] = np.arange(len(ok))
        rings = np.concatenate([u_rings, p_rings[keep]])
        owner = np.concatenate([u_idx, remap[group[has][p_idx[keep]]]])
        is_shell = np.r_[np.r_[True, u_idx[1:] != u_idx[:-1]], np.zeros(int(keep.sum()), bool)]
        order = np.lexsort((~is_shell, owner))  # per group: its exterior first
        out[ok] = shapely.polygons(rings[order], indices=owner[order])
    if odd.any():
        sel = np.isin(group, np.flatnonzero(odd))
        sub = np.searchsorted(np.flatnonzero(odd), group[sel])
        out[odd] = _union_by_group(geoms[sel], sub, int(odd.sum()), workers)
    return out


def _union_by_group(geoms: np.ndarray, group: np.ndarray, n_groups: int, workers: int = 1) -> np.ndarray:
    """Union the geometries of each group: one vectorised ``union_all`` per size class of group,
    split over ``workers`` threads (GEOS releases the GIL)."""
    out = np.empty(n_groups, dtype=object)
    order = np.argsort(group, kind="stable")
    g = group[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    sizes = np.diff(np.r_[starts, len(g)])
    gid = g[starts]
    cost = np.bincount(group, weights=shapely.get_num_coordinates(geoms), minlength=n_groups)[gid]
    # buckets of similar size keep the padded 2-D arrays small
    bucket = np.ceil(np.log2(np.maximum(sizes, 1))).astype(int)
    jobs = []
    for bk in np.unique(bucket):
        sel = np.flatnonzero(bucket == bk)
        width = int(sizes[sel].max())
        grid = np.full((len(sel), width), None, dtype=object)
        rows = np.repeat(np.arange(len(sel)), sizes[sel])
        cols = np.arange(int(sizes[sel].sum())) - np.repeat(np.cumsum(sizes[sel]) - sizes[sel], sizes[sel])
        members = order[np.repeat(starts[sel], sizes[sel]) + cols]
        grid[rows, cols] = geoms[members]
        by_cost = np.argsort(-cost[sel], kind="stable")  # deal the heavy groups round-robin
        for k in range(max(1, min(workers, len(sel)))):
            part = by_cost[k::workers]
            jobs.append((gid[sel][part], grid[part]))
    if workers > 1 and len(jobs) > 1:
        with ThreadPoolExecutor(workers) as ex:
            results = list(ex.map(lambda j: shapely.union_all(j[1], axis=1), jobs))
    else:
        results = [shapely.union_all(j[1], axis=1) for j in jobs]
    for (ids, _), res in zip(jobs, results):
        out[ids] = res
    return out


def merge_pieces(pieces: Fields, pairs: np.ndarray, workers: int = 1) -> Fields:
    """Merge field pieces that touch across block seams.

    Parameters
    ----------
    pieces : Fields
        All pieces of all blocks.
    pairs : (m, 2) int array
        Index pairs of pieces that share a seam edge (same class, adjacent pixels).
    workers : int
        Threads for the unions.

    Returns
    -------
    Fields
        One entry per field: pieces connected through ``pairs`` are unioned (exactly:
        outlines are on the pixel grid), collinear seam vertices are dropped, pixel
        counts, areas and confidence sums add up, and the field keeps the smallest
        ``first_pixel``. Sorted by ``first_pixel``.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(pieces)
    if n == 0:
        return pieces
    if len(pairs):
        g = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
        n_groups, group = connected_components(g, directed=False)
    else:
        n_groups, group = n, np.arange(n)
    counts = np.bincount(group, minlength=n_groups)
    multi = counts[group] > 1
    geom = np.empty(n_groups, dtype=object)
    geom[group[~multi]] = pieces.geometry[~multi]
    if multi.any():
        mg = np.unique(group[multi])
        sub = np.searchsorted(mg, group[multi])
        merged = _group_union(pieces.geometry[multi], sub, len(mg), workers)
        geom[mg] = shapely.orient_polygons(drop_collinear(merged), exterior_cw=False)
    cls = np.zeros(n_groups, np.int64)
    cls[group] = pieces.class_id
    first = np.full(n_groups, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, group, pieces.first_pixel)
    pixels = np.bincount(group, weights=pieces.pixels, minlength=n_groups).astype(np.int64)
    area = np.bincount(group, weights=pieces.area_m2, minlength=n_groups)
    cs = cc = None
    if pieces.conf_sum is not None and pieces.conf_count is not None:
        cs = np.bincount(group, weights=pieces.conf_sum, minlength=n_groups)
        cc = np.bincount(group, weights=pieces.conf_count, minlength=n_groups)
    counts_k = None
    if pieces.class_counts is not None:  # fields of several classes: the majority of their summed pixels
        counts_k = np.zeros((n_groups, pieces.class_counts.shape[1]), np.int64)
        np.add.at(counts_k, group, pieces.class_counts)
        cls = counts_k.argmax(axis=1).astype(np.int64)
    merged_fields = Fields(geom, cls, pixels, area, first, cs, cc, counts_k)
    return merged_fields.take(np.argsort(first, kind="stable"))


def seam_pairs(blocks: Sequence[tuple[tuple[int, int], int, Fields, dict[str, np.ndarray]]]) -> np.ndarray:
    """Pairs of global piece indices that meet across block seams (same class, adjacent pixels;
    or, for fields separated on a boundary map, the pixel pairs the block marks as linked).

    Parameters
    ----------
    blocks : sequence of (index, offset, pieces, edges)
        Per block: its ``(row, col)`` in the block grid, the global index of its first
        piece, its pieces, and the labels (1-based piece index, 0 none) along its
        ``"top"``, ``"bottom"``, ``"left"`` and ``"right"`` edges; with ``"bottom_link"``
        and ``"right_link"`` (bool), whether each pixel of those edges is in one field with
        its neighbour across the seam (:meth:`geoseg.core.instances.FieldGraph.links`), used instead of
        comparing classes.

    Returns
    -------
    (m, 2) int array
        The pairs for :func:`merge_pieces`.
    """
    by_index = {idx: (off, f, edges) for idx, off, f, edges in blocks}
    pairs = []
    for (i, j), (off, f, edges) in by_index.items():
        for (di, dj), mine, theirs in (((0, 1), "right", "left"), ((1, 0), "bottom", "top")):
            other = by_index.get((i + di, j + dj))
            if other is None:
                continue
            off2, f2, edges2 = other
            a, b = edges[mine], edges2[theirs]
            sel = (a > 0) & (b > 0)
            link = edges.get(f"{mine}_link")
            if link is not None:
                sel &= link
            if not sel.any():
                continue
            la, lb = a[sel] - 1, b[sel] - 1
            same = np.ones(len(la), bool) if link is not None else f.class_id[la] == f2.class_id[lb]
            if same.any():
                pa, pb = la[same] + off, lb[same] + off2
                pairs.append(np.unique(np.column_stack([pa, pb]), axis=0))
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
