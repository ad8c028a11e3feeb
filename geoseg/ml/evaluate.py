"""Score a model against labels: tiled prediction, compared with the labels block by block.

The prediction is made exactly as :mod:`geoseg.ops.predict` makes it (same tile grid rule,
same reading and loop, :func:`geoseg.ml.infer.predict_tiles`), but nothing is written: each
batch's tile cores are compared with the labels of the same windows and added to one
confusion matrix (:class:`geoseg.core.metrics.ConfusionAccumulator`). Memory is bounded by one
batch of tiles, whatever the image size.

Counted pixels are those where the image holds data (the model card's valid rule) and
the labels hold a class id (not 255 / the label file's nodata / outside every labelled
feature). See :mod:`geoseg.core.metrics` for how the scores are defined.

**Point labels** (GPS points, :mod:`geoseg.io.points`) are scored **by points**, as crop
statisticians count them: each point is one vote, its predicted class the majority of the
predictions over its labelled pixels (a tie goes to the pixel under the point; see
:func:`geoseg.core.points.point_votes`), so the confusion matrix, IoU, F1 and accuracy count
points. The same scores over the points' labelled pixels are given too (``pixel_scores``).
Only the tiles holding a point are predicted. Points outside the image, on image nodata, or
whose every pixel is claimed by a point of another class are not scored and are counted in
``points`` (:class:`geoseg.io.points.PointReport`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from geoseg.classes import NODATA, ClassTable
from geoseg.core.geodesy import pixel_areas
from geoseg.core.grid import Tile, Window, tile_grid
from geoseg.core.instances import separation_from_tag
from geoseg.core.metrics import ConfusionAccumulator, Scores, confusion_matrix, scores
from geoseg.core.objects import ObjectScores, mask_field_scores
from geoseg.core.points import point_votes
from geoseg.core.sieve import DEFAULT_MIN_AREA_HA, min_area_pixels
from geoseg.core.stitch import trim
from geoseg.errors import ConfigError, LabelError
from geoseg.io.field_polygons import burn_fields
from geoseg.io.labels import RasterLabels, VectorLabels, open_labels
from geoseg.io.paths import DatasetPath, dataset_path
from geoseg.io.points import PointLabels, PointReport
from geoseg.io.raster import RasterInfo, check_size, open_raster, raster_info, read_mask_classes
from geoseg.ml.forest import fuse
from geoseg.ml.infer import (
    DateInput,
    check_batch_size,
    check_input,
    date_input,
    pick_device,
    predict_tiles,
    read_batches,
    statistics,
)
from geoseg.ml.model import load_checkpoint
from geoseg.ml.tta import check_tta, with_tta

__all__ = [
    "EvalResult",
    "evaluate",
    "parse_window",
    "window_tiles",
    "accumulate_confusion",
]


@dataclass(frozen=True)
class EvalResult:
    """Scores of one evaluation and what was evaluated.

    ``to_dict()`` is what ``geoseg evaluate --json`` prints: the keys of
    :meth:`geoseg.core.metrics.Scores.to_dict` plus ``model``, ``image``, ``labels``,
    ``window`` (``[row, col, height, width]``), ``tile``, ``overlap``, ``tiles``,
    ``device``, ``seconds`` and ``unit`` (``"pixels"``, or ``"points"`` for point labels,
    whose scores count points). For point labels also ``points`` (what became of the
    points: :meth:`geoseg.io.points.PointReport.to_dict` plus ``scored``) and
    ``pixel_scores`` (the same scores over the points' labelled pixels); ``pixels`` is then
    the number of scored points.
    """

    scores: Scores
    model: Path
    image: DatasetPath
    labels: DatasetPath
    window: tuple[int, int, int, int]
    tile: int
    overlap: int
    tiles: int
    device: str
    seconds: float
    points: PointReport | None = None
    scored_points: int = 0
    pixel_scores: Scores | None = None
    #: Object-level scores of the mapped fields against true field polygons (``fields=``).
    fields: ObjectScores | None = None

    @property
    def unit(self) -> str:
        """What the scores count: ``"pixels"`` or ``"points"``."""
        return "pixels" if self.points is None else "points"

    def to_dict(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.points is not None:
            extra["points"] = {**self.points.to_dict(), "scored": self.scored_points}
        if self.pixel_scores is not None:
            extra["pixel_scores"] = self.pixel_scores.to_dict()
        if self.fields is not None:
            extra["fields"] = self.fields.to_dict()
        return {
            "unit": self.unit,
            **self.scores.to_dict(),
            **extra,
            "model": str(self.model),
            "image": str(self.image),
            "labels": str(self.labels),
            "window": list(self.window),
            "tile": self.tile,
            "overlap": self.overlap,
            "tiles": self.tiles,
            "device": self.device,
            "seconds": round(self.seconds, 3),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def summary(self) -> str:
        """Printable lines: mIoU first, then per-class IoU and F1, pixel accuracy last."""
        d = self.scores.to_dict()

        def f(v: float | None) -> str:
            return "  n/a" if v is None else f"{v:.3f}"

        what = (f"{d['pixels']:,} points (one vote per point: the majority of its pixels)" if self.points is not None
                else f"{d['pixels']:,} labelled pixels")
        lines = [f"mIoU {f(d['miou'])} over {what} "
                 f"(window {','.join(map(str, self.window))}, {self.tiles} tiles on {self.device}, {self.seconds:.1f} s)"]
        width = max(len(n) for n in d["class_names"])
        lines.append(f"  {'class':<{width}}    IoU     F1")
        for n in d["class_names"]:
            lines.append(f"  {n:<{width}}  {f(d['per_class_iou'][n])}  {f(d['per_class_f1'][n])}")
        unit = "point" if self.points is not None else "pixel"
        lines.append(f"{unit} accuracy {f(d['pixel_accuracy'])} "
                     f"(dominated by the commonest class; compare models by mIoU)")
        if self.pixel_scores is not None:
            p = self.pixel_scores
            lines.append(f"over the points' {p.pixels:,} labelled pixels: mIoU {f(p.to_dict()['miou'])}, "
                         f"pixel accuracy {f(p.to_dict()['pixel_accuracy'])}")
        if self.points is not None:
            lines.append(self.points.line())
        if self.fields is not None:
            lines.append(self.fields.line())
        return "\n".join(lines)


def parse_window(text: str | Sequence[int] | None, shape: tuple[int, int], source: str = "the image") -> Window:
    """A window ``row,col,height,width`` inside a raster of ``shape``; None means the whole raster.

    Examples
    --------
    >>> parse_window("10,20,100,50", (200, 300))
    Window(col_off=20, row_off=10, width=50, height=100)
    >>> parse_window("0,0,300,10", (200, 300))
    Traceback (most recent call last):
    ...
    geoseg.errors.ConfigError: window row 0, col 0, height 300, width 10 reaches outside the image (200 rows x 300 columns); pass --window row,col,height,width inside it
    """
    h, w = int(shape[0]), int(shape[1])
    if text is None:
        return Window(0, 0, w, h)
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",")]
        try:
            vals = [int(p) for p in parts]
        except ValueError:
            vals = []
        if len(vals) != 4:
            raise ConfigError(
                f"window {text!r} is not four integers; pass --window row,col,height,width, e.g. 0,0,512,512"
            )
    else:
        vals = [int(v) for v in text]
        if len(vals) != 4:
            raise ConfigError(f"window {text!r} is not (row, col, height, width)")
    r, c, wh, ww = vals
    if wh <= 0 or ww <= 0 or r < 0 or c < 0 or r + wh > h or c + ww > w:
        raise ConfigError(
            f"window row {r}, col {c}, height {wh}, width {ww} reaches outside {source} ({h} rows x {w} columns); "
            f"pass --window row,col,height,width inside it"
        )
    return Window(c, r, ww, wh)


def window_tiles(
    transform: Affine, window: Window, size: int, overlap: int, multiple: int = 16
) -> list[Tile]:
    """The tile grid of :func:`geoseg.core.grid.tile_grid` over ``window`` of a raster, in raster pixel coordinates.

    The cores partition ``window``; read windows reach ``overlap`` pixels beyond it (into
    real pixels where the raster has them; :func:`geoseg.io.raster.read_tile` pads outside the raster).

    Examples
    --------
    >>> ts = window_tiles(Affine.identity(), Window(100, 50, 64, 64), 64, 8)
    >>> [(int(t.core.row_off), int(t.core.col_off), int(t.read.row_off)) for t in ts][:2]
    [(50, 100, 42), (50, 148, 42)]
    """
    r0, c0 = int(window.row_off), int(window.col_off)
    g = tile_grid((int(window.height), int(window.width)), transform @ Affine.translation(c0, r0),
                  size=size, overlap=overlap, multiple=multiple)
    out = []
    for t in g:
        out.append(Tile(
            index=t.index,
            read=Window(int(t.read.col_off) + c0, int(t.read.row_off) + r0, int(t.read.width), int(t.read.height)),
            core=Window(int(t.core.col_off) + c0, int(t.core.row_off) + r0, int(t.core.width), int(t.core.height)),
            transform=t.transform,
        ))
    return out


def accumulate_confusion(
    model: Any,
    src: Any,
    labels: RasterLabels | VectorLabels,
    tiles: Sequence[Tile],
    acc: ConfusionAccumulator,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    valid_rule: str = "all",
    batch_size: int = 4,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
    dates: DateInput | None = None,
    out: tuple[np.ndarray, Window] | None = None,
    boundary_out: np.ndarray | None = None,
) -> None:
    """Predict ``tiles`` of the open image ``src`` batch by batch and add their cores to ``acc``.

    The model must be in eval mode. Each tile's core prediction is compared with
    ``labels.read(tile.core)``; pixels the model leaves unmapped (no data, or for a model that
    reads ``dates`` fewer observed dates than it needs) are not counted. With ``out`` (an array
    of the window's shape and the window), each core's classes are also written into it (255
    where unmapped), and with ``boundary_out`` (an array of the same shape) a boundary model's
    boundary band (0 where unmapped).
    """
    batches = read_batches(src, tiles, check_batch_size(batch_size), valid_rule, dates)
    done = 0
    for pred in predict_tiles(model, batches, mean, std, device, dates.days if dates else None):
        for i, (t, c, v) in enumerate(zip(pred.tiles, pred.classes, pred.valid)):
            core, ok = trim(t, c), trim(t, v)
            acc.update(core, labels.read(t.core), valid=ok)
            if out is not None:
                arr, win = out
                r, q = int(t.core.row_off - win.row_off), int(t.core.col_off - win.col_off)
                arr[r:r + core.shape[0], q:q + core.shape[1]] = np.where(ok, core, NODATA)
                if boundary_out is not None and pred.boundary is not None:
                    boundary_out[r:r + core.shape[0], q:q + core.shape[1]] = np.where(ok, trim(t, pred.boundary[i]), 0)
        done += len(pred.tiles)
        if progress is not None:
            progress(done, len(tiles))


def score_points(
    model: Any,
    src: Any,
    labels: PointLabels,
    tiles: Sequence[Tile],
    k: int,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    valid_rule: str = "all",
    batch_size: int = 4,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
    dates: DateInput | None = None,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Predict the ``tiles`` that hold point pixels and score the points (see the module notes).

    Returns ``(point confusion (k, k), pixel confusion (k, k), tiles predicted, points scored)``;
    rows are the points' classes, columns the predictions.
    """
    tiles = [t for t in tiles if labels.members_in(t.core).size]
    m = labels.member_lin.size
    pred = np.zeros(m, np.int64)
    valid = np.zeros(m, bool)
    rows, cols = labels.member_rows, labels.member_cols
    done = 0
    if tiles:
        batches = read_batches(src, tiles, check_batch_size(batch_size), valid_rule, dates)
        for out in predict_tiles(model, batches, mean, std, device, dates.days if dates else None):
            for t, c, v in zip(out.tiles, out.classes, out.valid):
                idx = labels.members_in(t.core)
                rr, cc = rows[idx] - int(t.core.row_off), cols[idx] - int(t.core.col_off)
                pred[idx] = trim(t, c)[rr, cc]
                valid[idx] = trim(t, v)[rr, cc]
            done += len(out.tiles)
            if progress is not None:
                progress(done, len(tiles))
    votes = point_votes(labels.member_point, pred, valid, labels.member_centre, labels.n, k)
    scored = votes >= 0
    cm_points = confusion_matrix(votes[scored], labels.ids[scored].astype(np.int64), k)
    # pixels: each labelled pixel once (a pixel shared by points of one class has one class)
    _, first = np.unique(labels.member_lin, return_index=True)
    first = first[valid[first]]
    cm_pixels = confusion_matrix(pred[first], labels.ids[labels.member_point[first]].astype(np.int64), k)
    return cm_points, cm_pixels, len(tiles), int(scored.sum())


def _check_label_classes(path: str | os.PathLike[str], classes: ClassTable) -> None:
    """A geoseg mask used as labels must carry the model's class names (if it carries any)."""
    try:
        own = read_mask_classes(path)
    except Exception:  # noqa: BLE001 - a damaged tag only loses this extra check
        return
    if own is not None and own.names != classes.names:
        raise LabelError(
            f"{path}: its class table {own.names} differs from the model's {classes.names}; "
            f"evaluate with labels coded in the model's class ids (or recode them)"
        )


def _score_fields(mask: np.ndarray, info: RasterInfo, win: Window, classes: ClassTable,
                  fields: str | os.PathLike[str], fields_class: str | None, tolerance_px: float,
                  boundary: np.ndarray | None = None, separation: str | None = None) -> ObjectScores:
    """The predicted window's fields (as ``polygonize`` would trace them, default sieve and
    non-crop classes; separated on a boundary model's ``boundary`` as its card's ``separation``
    says) scored against the true field polygons ``fields``."""
    sep = separation_from_tag(separation)
    if sep is None:
        boundary = None
    tf = info.transform @ Affine.translation(int(win.col_off), int(win.row_off))
    min_px = min_area_pixels(DEFAULT_MIN_AREA_HA, pixel_areas(tf, info.crs, mask.shape).mean)
    true_ids, true_class = burn_fields(fields, mask.shape, tf, info.crs, fields_class, classes)
    return mask_field_scores(mask, mask != NODATA, true_ids, min_pixels=min_px,
                             exclude=classes.no_field_ids, true_class=true_class,
                             tolerance_px=tolerance_px, boundary=boundary, separation=sep)


def evaluate(
    model_dir: str | os.PathLike[str],
    image: str | os.PathLike[str],
    labels: str | os.PathLike[str],
    *,
    window: str | Sequence[int] | Window | None = None,
    label_field: str | None = None,
    point_radius: float | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int = 4,
    device: str = "auto",
    progress: Callable[[int, int], None] | None = None,
    min_dates: int = 1,
    tta: str | None = None,
    forest: bool = True,
    fields: str | os.PathLike[str] | None = None,
    fields_class: str | None = None,
    tolerance_px: float = 1.0,
) -> EvalResult:
    """Score the checkpoint in ``model_dir`` on ``image`` against ``labels``.

    Parameters
    ----------
    model_dir : path
        A checkpoint directory (``model.safetensors`` + ``model.json``).
    image : path
        The image, with the bands the model expects in its order.
    labels : path
        Class ids on the image's grid (raster) or a vector file with ``label_field``
        (see :mod:`geoseg.io.labels`); ids are those of the model's class table.
    window : "row,col,height,width" or Window, optional
        Score only this window of the image (default: all of it), e.g. a held-out block.
    label_field : str, optional
        The class attribute of a vector label file.
    point_radius : float, optional
        For point labels: each point labels the pixels within this many metres (default 0:
        the pixel under it). Point labels are scored by points (see the module notes); with
        ``window``, the points inside it.
    tile, overlap : int, optional
        Prediction tile size and halo (default: the model card's).
    min_dates : int
        For a model that reads dates: a pixel is mapped (and scored) when at least this many of
        its dates are observed.
    tta : {None, "none", "flips", "d4"}
        Test-time augmentation, as :func:`geoseg.ops.predict.predict_scene` takes it.
    forest : bool
        Fuse the model's per-pixel forest, when it has one, as :func:`geoseg.ops.predict.predict_scene` does.
    fields : path, optional
        True field polygons: the fields ``geoseg polygonize`` makes of the predicted window are
        scored against them object by object too (:mod:`geoseg.ops.field_scores`).
    fields_class : str, optional
        The true fields' crop attribute (class id or name), for the same-crop scores.
    tolerance_px : float
        Boundary tolerance of the field scores, pixels.
    batch_size : int
        Tiles per forward pass.
    device : {"auto", "cpu", "cuda"}
    progress : callable, optional
        ``progress(done, total)`` in tiles.

    Returns
    -------
    EvalResult

    Raises
    ------
    CheckpointError
        A missing or damaged checkpoint, or an image whose bands do not fit the model.
    GridMismatchError
        Labels on another grid.
    LabelError
        Label values outside the model's class table; a missing label field.
    ConfigError, TileError
        A window outside the image; a tile size the model cannot take.
    """
    t0 = time.perf_counter()
    check_tta(tta)
    dev = pick_device(device)
    model, card = load_checkpoint(model_dir, dev)
    model = fuse(with_tta(model, tta), model_dir, card, forest)
    info: RasterInfo = raster_info(image)
    check_size(info)
    check_input(card, info, model_dir)
    dates = date_input(card, info, min_dates, model_dir)
    mean, std, _ = statistics(card, dates)
    rule = "any" if dates else card.valid_rule
    win = window if hasattr(window, "col_off") else parse_window(window, tuple(info.shape), str(image))  # type: ignore[arg-type]
    size = int(card.tile if tile is None else tile)
    ov = int(card.overlap if overlap is None else overlap)
    tiles = window_tiles(info.transform, win, size, ov, card.multiple)
    acc = ConfusionAccumulator(len(card.classes))
    k = len(card.classes)
    point_extra: dict[str, Any] = {}
    n_predicted = len(tiles)
    with open_labels(labels, info, card.classes, field=label_field, point_radius=point_radius,
                     valid_rule=rule) as lab, open_raster(image) as src:
        if isinstance(lab, RasterLabels):
            _check_label_classes(labels, card.classes)
        if isinstance(lab, PointLabels) and fields is not None:
            raise ConfigError(f"{labels}: point labels and true fields (--fields) together; score fields against "
                              f"a label raster or polygons")
        mapped = None
        if isinstance(lab, PointLabels):
            r0, c0 = int(win.row_off), int(win.col_off)
            inside = ((lab.rows >= r0) & (lab.rows < r0 + int(win.height))
                      & (lab.cols >= c0) & (lab.cols < c0 + int(win.width)))
            cm_points, cm_pixels, n_tiles, n_scored = score_points(
                model, src, lab.subset(inside), tiles, k, mean=mean, std=std,
                valid_rule=card.valid_rule, batch_size=batch_size, device=dev, progress=progress, dates=dates)
            acc.matrix += cm_points
            point_extra = {"points": lab.report, "scored_points": n_scored,
                           "pixel_scores": scores(cm_pixels, card.classes.names)}
            n_predicted = n_tiles
        else:
            mapped = (np.full((int(win.height), int(win.width)), NODATA, np.uint8), win) if fields else None
            edges = np.zeros(mapped[0].shape, np.uint8) if mapped is not None and card.boundary else None
            accumulate_confusion(model, src, lab, tiles, acc, mean=mean, std=std, valid_rule=card.valid_rule,
                                 batch_size=batch_size, device=dev, progress=progress, dates=dates, out=mapped,
                                 boundary_out=edges)
    if mapped is not None and fields is not None:
        point_extra["fields"] = _score_fields(mapped[0], info, win, card.classes, fields, fields_class, tolerance_px,
                                              edges, card.separation_tag)
    return EvalResult(
        scores=scores(acc.matrix, card.classes.names),
        model=Path(model_dir),
        image=dataset_path(image),  # a URL stays whole
        labels=dataset_path(labels),
        window=(int(win.row_off), int(win.col_off), int(win.height), int(win.width)),
        tile=size,
        overlap=ov,
        tiles=n_predicted,
        device=dev,
        seconds=time.perf_counter() - t0,
        **point_extra,
    )
