"""Bias-corrected crop areas with confidence intervals from a labelled reference sample (``geoseg estimate``).

``geoseg sample`` draws the points and writes their design; field teams or photo-interpreters
fill in each point's true ("reference") class; this module reads both back and estimates
(:func:`geoseg.core.estimate.stratified_estimate`):

* per class: the area in hectares with its standard error and 95 % confidence interval, next
  to the mapped area (the map's exact ground area over the sampled population: the observed
  pixels inside the districts); user's and producer's accuracy with their standard errors;
* per district and class: the same areas (Stehman's estimator for reporting units that are not
  strata, or the strata themselves when the sample was stratified by district);
* the error matrix, in sample counts and in estimated area proportions and hectares;
* overall accuracy and its standard error.

Tables (:data:`geoseg.rundir.ESTIMATE_TABLES`) go to ``estimate_areas``,
``estimate_districts`` and ``estimate_matrix`` (CSV and Parquet) and the summary to
``estimate.json``, which is published last: a reader that finds the summary finds the tables it
describes. In a run folder they sit beside the run's other outputs; ``geoseg query`` shows them
as views and ``geoseg report`` draws them.

Reference labels
----------------
A table (CSV, Parquet) or a vector file (GeoPackage, GeoJSON, ...) with the design's
``point_id`` and a ``reference`` column holding class names (any case) or ids. Empty cells are
points not (yet) labelled: they are left out, and reported; a stratum left with fewer than two
labelled points cannot be estimated and is named.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg.core.estimate import Z95, AreaEstimate, stratified_estimate
from geoseg.errors import EstimateError, GeosegError
from geoseg.io.raster import write_text_atomic
from geoseg.io.vector import read_table, read_vector, write_table
from geoseg.ops.sample import DESIGN_FORMAT, file_sha256
from geoseg.rundir import ESTIMATE_TABLES, MANIFEST, RunPaths, read_manifest, run_outputs

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "AREA_COLUMNS",
    "DISTRICT_COLUMNS",
    "MATRIX_COLUMNS",
    "Estimates",
    "estimate_file",
    "estimate_tables",
    "read_design",
    "read_reference",
]

#: Columns of ``estimate_areas``: one row per class.
AREA_COLUMNS = ("class_id", "crop", "mapped_ha", "estimated_ha", "se_ha", "ci_low_ha", "ci_high_ha", "margin_pct",
                "users_accuracy", "users_se", "producers_accuracy", "producers_se", "points_mapped",
                "points_reference")
#: Columns of ``estimate_districts``: one row per district and class.
DISTRICT_COLUMNS = ("district", "class_id", "crop", "mapped_ha", "estimated_ha", "se_ha", "ci_low_ha", "ci_high_ha",
                    "margin_pct", "points")
#: Columns of ``estimate_matrix``: one row per (map class, reference class).
MATRIX_COLUMNS = ("map_class_id", "map_crop", "reference_class_id", "reference_crop", "points", "proportion",
                  "area_ha")
_TABLE_EXTS = (".csv", ".parquet", ".json")


@dataclass
class Estimates:
    """The tables and summary of one estimate (see the module notes)."""

    areas: pd.DataFrame
    districts: pd.DataFrame | None
    matrix: pd.DataFrame
    summary: dict[str, Any]
    estimate: AreaEstimate
    notes: list[str] = field(default_factory=list)


def read_design(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A ``design.json`` written by ``geoseg sample``, checked.

    Raises
    ------
    EstimateError
        Missing, not JSON, or not a geoseg sample design.
    """
    p = Path(path)
    if not p.is_file():
        raise EstimateError(f"{p}: no design file; expected the design.json that `geoseg sample` wrote")
    try:
        design = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EstimateError(f"{p}: cannot be read as JSON ({e}); expected the design.json that `geoseg sample` "
                            f"wrote") from None
    if not isinstance(design, dict) or design.get("format") != DESIGN_FORMAT:
        raise EstimateError(f"{p}: not a sample design (format {design.get('format') if isinstance(design, dict) else None!r}); "
                            f"expected {DESIGN_FORMAT!r} as `geoseg sample` writes it")
    if design.get("version") != 1:
        raise EstimateError(f"{p}: design version {design.get('version')!r}; this geoseg reads version 1")
    for k in ("classes", "strata", "mask", "mapped"):
        if k not in design:
            raise EstimateError(f"{p}: the design has no {k!r}; expected the design.json that `geoseg sample` wrote")
    return design


def _read_any(path: Path) -> pd.DataFrame:
    if path.suffix.lower() in _TABLE_EXTS:
        return read_table(path)
    return read_vector(path)


def read_reference(labels: str | os.PathLike[str] | pd.DataFrame, classes: list[dict[str, Any]], *,
                   id_field: str = "point_id", reference_field: str = "reference") -> tuple[np.ndarray, np.ndarray]:
    """``(point ids, reference class ids)`` of the labelled points (unlabelled ones: class -1).

    Raises
    ------
    EstimateError
        No such column, repeated point ids, reference values that name no class.
    """
    import pandas as pd

    src = "the labels" if isinstance(labels, pd.DataFrame) else str(labels)
    df = labels if isinstance(labels, pd.DataFrame) else _read_any(Path(labels))
    for col in (id_field, reference_field):
        if col not in df.columns:
            cols = [c for c in df.columns if c != "geometry"]
            raise EstimateError(f"{src}: no column {col!r}; its columns are {cols} - name the point id and "
                                f"reference class columns with --id-field and --reference-field")
    ids = pd.to_numeric(df[id_field], errors="coerce")
    if ids.isna().any() or (ids % 1 != 0).any():
        bad = df[id_field][ids.isna() | (ids % 1 != 0)].tolist()[:5]
        raise EstimateError(f"{src}: point ids {bad} in {id_field!r}; expected the design's whole-number point ids")
    ids = ids.astype(np.int64).to_numpy()
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise EstimateError(f"{src}: point ids {uniq[counts > 1].tolist()[:10]} appear more than once; expected one "
                            f"reference class per point")
    by_name = {str(c["name"]).strip().lower(): int(c["id"]) for c in classes}
    by_id = {int(c["id"]) for c in classes}
    ref = np.full(len(df), -1, np.int64)
    unknown: list[str] = []
    for i, raw in enumerate(df[reference_field].tolist()):
        if raw is None or (isinstance(raw, float) and np.isnan(raw)):
            continue
        text = str(raw).strip()
        if text == "":
            continue
        low = text.lower()
        if low in by_name:
            ref[i] = by_name[low]
            continue
        try:
            num = float(text)
        except ValueError:
            unknown.append(text)
            continue
        if num.is_integer() and int(num) in by_id:
            ref[i] = int(num)
        else:
            unknown.append(text)
    if unknown:
        shown = sorted(set(unknown))[:10]
        raise EstimateError(
            f"{src}: reference classes {shown} in {reference_field!r} are not in the design's class table; "
            f"expected one of {[c['name'] for c in classes]} (or their ids 0..{len(classes) - 1}); leave a "
            f"cell empty for a point not labelled"
        )
    return ids, ref


def estimate_tables(design: dict[str, Any], key: pd.DataFrame, ids: np.ndarray, ref: np.ndarray, *,
                    z: float = Z95, source: str = "the labels") -> Estimates:
    """The estimate of a design from its key (each point's stratum, map class, unit) and the labels.

    Raises
    ------
    EstimateError
        Labelled points that are not the design's; a stratum with fewer than two labelled points.
    """
    import pandas as pd

    classes = design["classes"]
    names = {int(c["id"]): str(c["name"]) for c in classes}
    strata = design["strata"]
    kid = key["point_id"].to_numpy(np.int64)
    pos = {int(p): i for i, p in enumerate(kid)}
    outside = [int(i) for i in ids if int(i) not in pos]
    if outside:
        raise EstimateError(
            f"{source}: {len(outside)} point(s) are not in the design (point ids {outside[:10]}); points outside "
            f"the design's strata cannot be weighted - label the points `geoseg sample` drew (points.csv)"
        )
    labelled = ref >= 0
    rows = np.array([pos[int(i)] for i in ids[labelled]], np.int64)
    notes = []
    unlabelled = len(kid) - len(rows)
    if unlabelled:
        notes.append(f"{unlabelled} of the design's {len(kid)} points have no reference class and are left out")
    s_idx = key["stratum"].to_numpy(np.int64)[rows]
    mapped = key["class_id"].to_numpy(np.int64)[rows]
    units = key["unit"].to_numpy(np.int64)[rows] if "unit" in key.columns else np.full(len(rows), -1)
    areas = np.array([float(s["area_ha"]) for s in strata])
    districts = (design.get("districts") or {}).get("names") or []
    try:
        e = stratified_estimate(s_idx, mapped, ref[labelled], areas, sorted(names),
                                units=units if districts else None, n_units=len(districts),
                                stratum_names=[str(s["name"]) for s in strata], z=z)
    except EstimateError as err:
        raise EstimateError(f"{source}: {err}") from None
    cls = e.classes
    mapped_ha = {int(c): 0.0 for c in cls}
    per_district: dict[tuple[str, int], float] = {}
    for m in design["mapped"]:
        mapped_ha[int(m["class_id"])] = mapped_ha.get(int(m["class_id"]), 0.0) + float(m["area_ha"])
        if m.get("district") is not None:
            per_district[str(m["district"]), int(m["class_id"])] = float(m["area_ha"])
    low, high = e.interval(e.area, e.area_se)
    with np.errstate(invalid="ignore", divide="ignore"):
        margin = np.where(e.area > 0, 100 * z * e.area_se / e.area, np.nan)
    areas_df = pd.DataFrame({
        "class_id": cls, "crop": [names[int(c)] for c in cls], "mapped_ha": [mapped_ha[int(c)] for c in cls],
        "estimated_ha": e.area, "se_ha": e.area_se, "ci_low_ha": low, "ci_high_ha": high, "margin_pct": margin,
        "users_accuracy": e.users, "users_se": e.users_se, "producers_accuracy": e.producers,
        "producers_se": e.producers_se, "points_mapped": e.counts.sum(1), "points_reference": e.counts.sum(0),
    })
    dist_df = None
    if districts:
        rows_d = []
        for u, dname in enumerate(districts):
            lo, hi = e.interval(e.unit_area[u], e.unit_area_se[u])
            for j, c in enumerate(cls):
                est = float(e.unit_area[u, j])
                se = float(e.unit_area_se[u, j])
                rows_d.append({"district": dname, "class_id": int(c), "crop": names[int(c)],
                               "mapped_ha": per_district.get((dname, int(c)), 0.0), "estimated_ha": est,
                               "se_ha": se, "ci_low_ha": float(lo[j]), "ci_high_ha": float(hi[j]),
                               "margin_pct": 100 * z * se / est if est > 0 else np.nan,
                               "points": int(e.unit_n[u])})
        dist_df = pd.DataFrame(rows_d, columns=list(DISTRICT_COLUMNS))
    k = len(cls)
    mi, ri = np.divmod(np.arange(k * k), k)
    matrix = pd.DataFrame({
        "map_class_id": cls[mi], "map_crop": [names[int(c)] for c in cls[mi]],
        "reference_class_id": cls[ri], "reference_crop": [names[int(c)] for c in cls[ri]],
        "points": e.counts.ravel(), "proportion": e.proportions.ravel(),
        "area_ha": e.proportions.ravel() * e.total_area,
    })
    olo, ohi = e.interval(e.overall, e.overall_se)
    summary = {
        "overall_accuracy": e.overall, "overall_se": e.overall_se, "overall_ci": [float(olo), float(ohi)],
        "z": z, "points_design": len(kid), "points_labelled": len(rows), "points_unlabelled": unlabelled,
        "total_area_ha": e.total_area, "strata_by": design.get("strata_by"),
        "strata": [{"name": str(s["name"]), "area_ha": float(s["area_ha"]), "points": int(n)}
                   for s, n in zip(strata, e.stratum_n, strict=True)],
        "run_id": design.get("run_id"), "notes": notes,
    }
    return Estimates(areas_df, dist_df, matrix, summary, e, notes)


def _check_run(run_dir: Path, design: dict[str, Any], design_path: Path) -> None:
    """The design must have been drawn from this run's mask (same bytes)."""
    manifest = read_manifest(run_dir)
    mask = run_outputs(run_dir, manifest).get("mask") or RunPaths(run_dir).mask
    want = (design.get("mask") or {}).get("sha256")
    have = file_sha256(mask) if Path(mask).exists() else None
    if want != have:
        raise EstimateError(
            f"{design_path}: the design was drawn from a mask with SHA-256 {str(want)[:12]}..., but {run_dir}'s mask "
            f"{mask} has {str(have)[:12]}...; the design does not match the run - estimate with the run the "
            f"sample was drawn from{f' (run {rid})' if (rid := design.get('run_id')) else ''}, or draw a new "
            f"sample from this one (`geoseg sample {run_dir} --overwrite`)"
        )


def estimate_file(
    source: str | os.PathLike[str],
    labels: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    design: str | os.PathLike[str] | None = None,
    id_field: str = "point_id",
    reference_field: str = "reference",
    overwrite: bool = False,
    z: float = Z95,
) -> tuple[Path, Estimates]:
    """``geoseg estimate``: a run folder (its ``sample/design.json``, the tables written into it) or a
    design file (tables written to ``out``, default the design's folder) and the labelled points.

    Returns the folder written to and the estimates.

    Raises
    ------
    EstimateError
        The design does not match the run; the tables exist and ``overwrite`` is False; the errors
        of :func:`read_design`, :func:`read_reference` and :func:`estimate_tables`.
    """
    src = Path(source)
    run_dir = None
    if src.is_dir():
        if not (src / MANIFEST).exists():
            raise EstimateError(f"{src}: no {MANIFEST}; expected a run folder (runs/<name>/latest) or a design.json")
        run_dir = src
        design_path = Path(design) if design is not None else RunPaths(src).sample / "design.json"
        target = Path(out) if out is not None else src
    else:
        design_path = src
        target = Path(out) if out is not None else src.parent
    d = read_design(design_path)
    if run_dir is not None:
        _check_run(run_dir, d, design_path)
    key_path = design_path.parent / "key.csv"
    if not key_path.exists():
        raise EstimateError(f"{key_path}: the sample's key (each point's stratum and map class) is missing; it is "
                            f"written beside design.json by `geoseg sample` - copy it back")
    try:
        key = read_table(key_path)
    except GeosegError as e:
        raise EstimateError(f"{key_path}: cannot be read ({e})") from None
    ids, ref = read_reference(labels, d["classes"], id_field=id_field, reference_field=reference_field)
    est = estimate_tables(d, key, ids, ref, z=z, source=str(labels))
    paths = RunPaths(target)
    if paths.estimate_summary.exists() and not overwrite:
        raise EstimateError(f"{paths.estimate_summary}: an estimate exists already; pass --overwrite to replace it")
    est.summary.update({"design": str(design_path.resolve()), "design_sha256": file_sha256(design_path),
                        "labels": str(Path(labels).resolve())})
    paths.estimate_summary.unlink(missing_ok=True)  # unpublished while its tables change
    tables = {"areas": est.areas, "districts": est.districts, "matrix": est.matrix}
    written = []
    for name in ESTIMATE_TABLES:
        df = tables[name]
        for ext in ("csv", "parquet"):
            p = paths.estimate_table(name, ext)
            if df is None:
                p.unlink(missing_ok=True)
                continue
            write_table(df, p)
            written.append(p.name)
    est.summary["tables"] = written
    write_text_atomic(paths.estimate_summary, json.dumps(est.summary, indent=1, default=_json) + "\n")
    return target, est


def _json(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"{type(v)} is not JSON")
