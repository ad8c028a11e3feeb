"""Areas and accuracies estimated from a stratified random sample of reference labels. Pure numpy.

A map's pixel counts are biased areas: omission and commission errors do not cancel. Good
practice (Olofsson et al. 2014, *Remote Sensing of Environment* 148: 42-57) estimates each
class's area from a probability sample of locations whose true ("reference") class is observed,
weighted by the mapped areas, and reports it with a standard error and a confidence interval.

Design
------
The map is cut into **strata** (the map classes, or map class x district, or any partition);
stratum *h* has ground area ``A_h`` and ``n_h`` sample locations drawn uniformly at random
inside it. Locations are points, not pixels: the population is continuous, so no finite
population correction enters the variances (Olofsson's formulas, and Stehman's with
``N_h >> n_h``).

Estimators (Stehman 2014, *Int. J. Remote Sensing* 35: 4923-4939)
-----------------------------------------------------------------
Every quantity is the total or the ratio of totals of a 0/1 variable ``y`` measured on each
sample location:

* total ``T(y) = sum_h A_h * mean_h(y)``, variance ``V = sum_h A_h^2 s2_h(y) / n_h`` (``s2_h``
  the sample variance, ``n_h - 1`` degrees of freedom);
* ratio ``R = T(y) / T(x)``, variance
  ``V = sum_h A_h^2 (s2_h(y) + R^2 s2_h(x) - 2 R s_h(x, y)) / n_h / T(x)^2``.

The area of reference class *k* is ``T(ref == k)``; its share of a reporting unit (a district
that is not a stratum) is ``T(ref == k and unit == d)`` - Stehman's estimator, exact whether the
units are strata or not; overall accuracy ``T(map == ref) / A``; user's accuracy of *k*
``R(map == ref == k, map == k)``; producer's ``R(map == ref == k, ref == k)``; the error
matrix ``p_ij = T(map == i and ref == j) / A``. With the map classes as strata these reduce to
Olofsson et al.'s equations (their Section 5 example is a test of this module). The 95 %
confidence interval is ``estimate +- z * SE`` with ``z = 1.96``, as both papers print.

Sample size (Olofsson et al. 2014, Section 5.1)
-----------------------------------------------
Cochran's formula for a target standard error ``S(O)`` of overall accuracy:
``n = (sum_h W_h S_h / S(O))^2`` with ``W_h`` the stratum's share of the area and
``S_h = sqrt(U_h (1 - U_h))`` from the anticipated user's accuracy ``U_h``;
:func:`allocate` then gives each stratum at least a minimum (rare crops would otherwise get a
handful of points) and shares the rest in proportion to area. :func:`points_for_area` is the
size for a class's area within a target relative half-width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from geoseg.errors import EstimateError

__all__ = [
    "Z95",
    "AreaEstimate",
    "allocate",
    "anticipated_overall_se",
    "cochran_total",
    "points_for_area",
    "stratified_estimate",
]

#: The multiplier of the standard error for a 95 % interval, as Olofsson et al. and Stehman print it.
Z95 = 1.96


@dataclass(frozen=True)
class AreaEstimate:
    """Everything estimated from one labelled sample (see the module notes); areas in the unit of
    the stratum areas given (geoseg passes hectares)."""

    #: Class ids, the order of every per-class array and of the matrices' rows and columns.
    classes: np.ndarray
    #: Sample counts: rows the map class, columns the reference class.
    counts: np.ndarray
    #: Estimated area proportions ``p_ij`` (rows map, columns reference), summing to 1.
    proportions: np.ndarray
    #: Area of the whole sampled population (all strata).
    total_area: float
    #: Estimated area of each reference class, its standard error.
    area: np.ndarray
    area_se: np.ndarray
    #: User's accuracy (precision) per map class and its SE; NaN where no point is mapped so.
    users: np.ndarray
    users_se: np.ndarray
    #: Producer's accuracy (recall) per reference class and its SE; NaN where no point is that class.
    producers: np.ndarray
    producers_se: np.ndarray
    overall: float
    overall_se: float
    #: Points per stratum.
    stratum_n: np.ndarray
    #: Per reporting unit (rows) and class (columns): estimated area and SE (empty without units).
    unit_area: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    unit_area_se: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    #: Points per reporting unit.
    unit_n: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    z: float = Z95

    def interval(self, value: np.ndarray | float, se: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)`` of the confidence interval ``value +- z * se``."""
        v, s = np.asarray(value, float), np.asarray(se, float)
        return v - self.z * s, v + self.z * s


def _codes(values: np.ndarray, classes: np.ndarray, what: str) -> np.ndarray:
    idx = np.searchsorted(classes, values)
    idx = np.clip(idx, 0, len(classes) - 1)
    bad = classes[idx] != values
    if bad.any():
        found = sorted({int(v) for v in values[bad]})
        raise EstimateError(
            f"{what} holds class ids {found[:10]} that are not among the estimated classes "
            f"{classes.tolist()}; give classes from the class table"
        )
    return idx


def _stratum_moments(y: np.ndarray, strata: np.ndarray, n_strata: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per stratum: points ``n_h``, column means (H x m) and sums of squares about them (H x m)."""
    n = np.bincount(strata, minlength=n_strata).astype(float)
    sums = np.zeros((n_strata, y.shape[1]))
    np.add.at(sums, strata, y)
    safe = np.maximum(n, 1)[:, None]
    mean = sums / safe
    dev = y - mean[strata]
    ss = np.zeros_like(sums)
    np.add.at(ss, strata, dev * dev)
    return n, mean, ss


def _cross(y: np.ndarray, x: np.ndarray, strata: np.ndarray, mean_y: np.ndarray, mean_x: np.ndarray,
           n_strata: int) -> np.ndarray:
    """Per stratum sums of cross products about the means, column by column (H x m)."""
    prod = (y - mean_y[strata]) * (x - mean_x[strata])
    out = np.zeros((n_strata, y.shape[1]))
    np.add.at(out, strata, prod)
    return out


def stratified_estimate(
    strata: np.ndarray,
    mapped: np.ndarray,
    reference: np.ndarray,
    stratum_areas: np.ndarray,
    classes: Sequence[int] | np.ndarray,
    *,
    units: np.ndarray | None = None,
    n_units: int = 0,
    stratum_names: Sequence[str] | None = None,
    z: float = Z95,
) -> AreaEstimate:
    """Areas, accuracies and their standard errors from a stratified random sample.

    Parameters
    ----------
    strata : int array (n,)
        Each point's stratum, an index into ``stratum_areas``.
    mapped, reference : int arrays (n,)
        Each point's map class and reference (true) class, ids among ``classes``.
    stratum_areas : float array (H,)
        Each stratum's area (any unit; the estimates come in it).
    classes : sequence of int
        The class ids estimated (every mapped and reference id must be among them).
    units, n_units : int array (n,), int
        Each point's reporting unit 0..n_units-1 (a district), -1 for none; areas per unit and
        class come out as ``unit_area``.
    stratum_names : sequence of str, optional
        Names for the errors.
    z : float
        Multiplier of the SE for the interval (1.96: 95 %).

    Raises
    ------
    EstimateError
        A class id outside ``classes``, a stratum index outside the design, or a stratum of
        non-zero area with fewer than two points (its variance is undefined).
    """
    strata = np.asarray(strata, np.int64).ravel()
    mapped = np.asarray(mapped, np.int64).ravel()
    reference = np.asarray(reference, np.int64).ravel()
    areas = np.asarray(stratum_areas, float).ravel()
    cls = np.asarray(sorted({int(c) for c in classes}), np.int64)
    n_strata = len(areas)
    names = list(stratum_names) if stratum_names is not None else [f"stratum {h}" for h in range(n_strata)]
    if not (len(strata) == len(mapped) == len(reference)):
        raise EstimateError(
            f"{len(strata)} strata, {len(mapped)} map classes and {len(reference)} reference classes; "
            f"expected one of each per point"
        )
    if len(strata) and (strata.min() < 0 or strata.max() >= n_strata):
        bad = sorted({int(s) for s in strata[(strata < 0) | (strata >= n_strata)]})
        raise EstimateError(f"points in strata {bad[:10]}; the design has strata 0..{n_strata - 1}")
    if (areas < 0).any() or not np.isfinite(areas).all():
        raise EstimateError(f"stratum areas {areas.tolist()[:10]}; expected finite areas >= 0")
    if len(cls) == 0:
        raise EstimateError("no classes to estimate; give the class ids")
    mi = _codes(mapped, cls, "the map classes of the points")
    ri = _codes(reference, cls, "the reference classes of the points")
    n_h = np.bincount(strata, minlength=n_strata)
    short = [h for h in range(n_strata) if areas[h] > 0 and n_h[h] < 2]
    if short:
        detail = ", ".join(f"{names[h]} ({n_h[h]} point{'s' if n_h[h] != 1 else ''})" for h in short[:8])
        raise EstimateError(
            f"{len(short)} stratum/strata with fewer than two labelled points: {detail}; a stratum's "
            f"variance needs at least two - label more of its points (or merge it with another)"
        )
    k = len(cls)
    eye = np.eye(k)
    ref1 = eye[ri]  # n x K
    map1 = eye[mi]
    diag = ref1 * map1
    correct = (mi == ri).astype(float)[:, None]
    cells = (mi * k + ri)
    cell1 = np.eye(k * k)[cells] if len(cells) else np.zeros((0, k * k))
    total = float(areas.sum())
    # one pass over the strata for every column: ref (K), map (K), diag (K), OA (1), cells (K*K)
    y = np.concatenate([ref1, map1, diag, correct, cell1], axis=1)
    n, mean, ss = _stratum_moments(y, strata, n_strata)
    dof = np.maximum(n - 1, 1)[:, None]
    s2 = ss / dof
    w2n = np.where(n > 0, areas**2 / np.maximum(n, 1), 0.0)[:, None]  # A_h^2 / n_h
    tot = (areas[:, None] * mean).sum(0)
    var = (w2n * s2).sum(0)
    a_ref, a_map, a_diag = tot[:k], tot[k:2 * k], tot[2 * k:3 * k]
    area_se = np.sqrt(var[:k])
    overall = float(tot[3 * k] / total) if total > 0 else math.nan
    overall_se = float(math.sqrt(var[3 * k]) / total) if total > 0 else math.nan
    props = (tot[3 * k + 1:] / total).reshape(k, k) if total > 0 else np.full((k, k), math.nan)
    # ratios: the diagonal over the map (user's) and over the reference (producer's) columns
    mean_d, mean_m, mean_r = mean[:, 2 * k:3 * k], mean[:, k:2 * k], mean[:, :k]
    s2_d, s2_m, s2_r = s2[:, 2 * k:3 * k], s2[:, k:2 * k], s2[:, :k]
    c_dm = _cross(diag, map1, strata, mean_d, mean_m, n_strata) / dof
    c_dr = _cross(diag, ref1, strata, mean_d, mean_r, n_strata) / dof

    def ratio(num: np.ndarray, den: np.ndarray, s2x: np.ndarray, cxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(den > 0, num / np.where(den > 0, den, 1), math.nan)
            v = (w2n * (s2_d + r**2 * s2x - 2 * r * cxy)).sum(0) / np.where(den > 0, den, 1) ** 2
        return r, np.where(den > 0, np.sqrt(np.maximum(v, 0.0)), math.nan)

    users, users_se = ratio(a_diag, a_map, s2_m, c_dm)
    producers, producers_se = ratio(a_diag, a_ref, s2_r, c_dr)
    counts = np.bincount(cells, minlength=k * k).reshape(k, k)
    unit_area = np.zeros((0, k))
    unit_se = np.zeros((0, k))
    unit_n = np.zeros(0, np.int64)
    if units is not None and n_units > 0:
        u = np.asarray(units, np.int64).ravel()
        if len(u) != len(strata):
            raise EstimateError(f"{len(u)} reporting units for {len(strata)} points; expected one per point")
        if (u >= n_units).any() or (u < -1).any():
            raise EstimateError(f"reporting units {sorted(set(u[(u >= n_units) | (u < -1)].tolist()))[:10]}; "
                                f"expected -1..{n_units - 1}")
        inside = u >= 0
        yu = np.zeros((len(u), n_units * k))
        yu[np.flatnonzero(inside), u[inside] * k + ri[inside]] = 1.0
        _, mu, ssu = _stratum_moments(yu, strata, n_strata)
        unit_area = (areas[:, None] * mu).sum(0).reshape(n_units, k)
        unit_se = np.sqrt((w2n * ssu / dof).sum(0)).reshape(n_units, k)
        unit_n = np.bincount(u[inside], minlength=n_units)
    return AreaEstimate(
        classes=cls, counts=counts, proportions=props, total_area=total, area=a_ref, area_se=area_se,
        users=users, users_se=users_se, producers=producers, producers_se=producers_se,
        overall=overall, overall_se=overall_se, stratum_n=n_h, unit_area=unit_area, unit_area_se=unit_se,
        unit_n=unit_n, z=z,
    )


# --------------------------------------------------------------------------------------
# sample size and allocation
def _shares(areas: np.ndarray) -> np.ndarray:
    a = np.asarray(areas, float)
    if a.ndim != 1 or len(a) == 0 or (a < 0).any() or a.sum() <= 0:
        raise EstimateError(f"stratum areas {a.tolist()[:10]}; expected areas >= 0 with a positive total")
    return a / a.sum()


def _accuracies(users_accuracy: float | Sequence[float] | np.ndarray, h: int) -> np.ndarray:
    u = np.broadcast_to(np.asarray(users_accuracy, float), (h,)).copy()
    if ((u <= 0) | (u > 1)).any():
        raise EstimateError(f"anticipated user's accuracies {u.tolist()[:10]}; expected values in (0, 1]")
    return u


def cochran_total(areas: np.ndarray, users_accuracy: float | Sequence[float] | np.ndarray,
                  target_se: float) -> int:
    """Points for a target standard error of overall accuracy: ``(sum W_h S_h / S(O))^2``
    rounded up, ``S_h = sqrt(U_h (1 - U_h))`` (Olofsson et al. 2014, eq. 13)."""
    if not target_se > 0:
        raise EstimateError(f"target standard error {target_se}; expected a value > 0 (e.g. 0.01)")
    w = _shares(areas)
    u = _accuracies(users_accuracy, len(w))
    return math.ceil((float((w * np.sqrt(u * (1 - u))).sum()) / target_se) ** 2 - 1e-9)


def allocate(total: int, areas: np.ndarray, minimum: int = 50, budget: int | None = None) -> np.ndarray:
    """Points per stratum: at least ``minimum`` each (strata of zero area get none), the rest in
    proportion to area; ``total`` raised to ``minimum`` x strata if below, capped at ``budget``.

    Rounded by largest remainders so the counts add up exactly. Raises
    :class:`~geoseg.errors.EstimateError` when the budget cannot give every stratum two points.
    """
    w = _shares(areas)
    live = np.asarray(areas, float) > 0
    w = np.where(live, np.maximum(w, np.finfo(float).tiny), 0.0)  # a stratum of denormal area is still one
    h = int(live.sum())
    if budget is not None and budget < 2 * h:
        raise EstimateError(
            f"a budget of {budget} points for {h} strata; expected at least {2 * h} (two per stratum) - "
            f"raise the budget or use fewer strata"
        )
    if minimum < 2:
        raise EstimateError(f"minimum points per stratum {minimum}; expected >= 2 (a stratum's variance needs two)")
    total = max(int(total), minimum * h)
    if budget is not None:
        if total > budget:
            total = int(budget)
            minimum = min(minimum, total // h)
    n = np.zeros(len(w), np.int64)
    fixed = np.zeros(len(w), bool)
    fixed[~live] = True
    while True:  # strata whose proportional share is below the minimum get the minimum
        rest = total - minimum * int((fixed & live).sum())
        free = ~fixed
        share = rest * w[free] / w[free].sum()
        low = share < minimum
        if not low.any():
            break
        idx = np.flatnonzero(free)[low]
        fixed[idx] = True
        if fixed.all():
            break
    n[fixed & live] = minimum
    free = ~fixed
    if free.any():
        rest = total - int(n.sum())
        exact = rest * w[free] / w[free].sum()
        base = np.floor(exact).astype(np.int64)
        left = rest - int(base.sum())
        order = np.argsort(-(exact - base), kind="stable")[:left]
        base[order] += 1
        n[free] = base
    return n


def anticipated_overall_se(areas: np.ndarray, users_accuracy: float | Sequence[float] | np.ndarray,
                           n: np.ndarray) -> float:
    """The standard error of overall accuracy that ``n`` points per stratum (the map classes) give
    if the user's accuracies are as anticipated: ``sqrt(sum W_h^2 U_h (1 - U_h) / (n_h - 1))``."""
    w = _shares(areas)
    u = _accuracies(users_accuracy, len(w))
    nn = np.asarray(n, float)
    live = w > 0
    return float(math.sqrt((w[live] ** 2 * u[live] * (1 - u[live]) / np.maximum(nn[live] - 1, 1)).sum()))


def points_for_area(mapped_share: float, users_accuracy: float, omission_share: float,
                    relative_half_width: float, z: float = Z95) -> int:
    """Points a reporting unit needs for a class's area within ``+- relative_half_width`` of it
    (95 % with the default ``z``), the map classes as strata and proportional allocation.

    With ``W`` the share of the unit mapped as the class, ``U`` its anticipated user's accuracy
    and ``o`` the share of the rest that truly is the class (omission), the class's true share is
    ``p = W U + (1 - W) o`` and ``n = z^2 (W U (1 - U) + (1 - W) o (1 - o)) / (h p)^2``.
    """
    w, u, o, h = float(mapped_share), float(users_accuracy), float(omission_share), float(relative_half_width)
    if not (0 < w < 1 and 0 < u <= 1 and 0 <= o < 1 and h > 0):
        raise EstimateError(
            f"mapped share {w}, user's accuracy {u}, omission share {o}, half-width {h}; expected "
            f"0 < share < 1, 0 < accuracy <= 1, 0 <= omission < 1 and a half-width > 0 (e.g. 0.1 for +-10 %)"
        )
    p = w * u + (1 - w) * o
    return math.ceil(z * z * (w * u * (1 - u) + (1 - w) * o * (1 - o)) / (h * p) ** 2 - 1e-9)


def points_for_users_accuracy(users_accuracy: float | Sequence[float] | np.ndarray, target_se: float) -> np.ndarray:
    """Points per stratum (a map class) for a target standard error of its user's accuracy:
    ``SE(U)^2 = U (1 - U) / (n - 1)``, so ``n = U (1 - U) / SE^2 + 1`` (at least 2)."""
    if not target_se > 0:
        raise EstimateError(f"target standard error of user's accuracy {target_se}; expected a value > 0 (e.g. 0.05)")
    u = np.atleast_1d(np.asarray(users_accuracy, float))
    if ((u <= 0) | (u > 1)).any():
        raise EstimateError(f"anticipated user's accuracies {u.tolist()[:10]}; expected values in (0, 1]")
    return np.maximum(np.ceil(u * (1 - u) / target_se**2 + 1 - 1e-9), 2).astype(np.int64)
