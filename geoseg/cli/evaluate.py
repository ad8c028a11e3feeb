"""``geoseg evaluate``: score a checkpoint against labels (mIoU, per-class IoU/F1, confusion matrix)."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.cli.options import (
    DATASET,
    batch_size_option,
    device_option,
    forest_option,
    label_field_option,
    min_dates_option,
    model_option,
    overlap_option,
    point_radius_option,
    tile_option,
    tta_option,
)
from geoseg.cli.progress import progress_bar
from geoseg.io.paths import DatasetPath
from geoseg.ml.evaluate import evaluate as evaluate_model


@click.command("evaluate")
@model_option
@click.option("--image", required=True, type=DATASET, help="Image with the model's bands (a file, URL or /vsi path).")
@click.option("--labels", required=True, type=DATASET,
              help="Label raster on the image grid, or a vector file with --label-field.")
@label_field_option
@point_radius_option
@click.option("--window", default=None, metavar="ROW,COL,HEIGHT,WIDTH",
              help="Score only this window of the image (e.g. a held-out block).")
@tile_option(help="Tile size in pixels (default: the model's).")
@overlap_option
@batch_size_option()
@min_dates_option
@tta_option
@forest_option
@device_option
@click.option("--fields", "true_fields", type=DATASET, default=None,
              help="True field polygons: also score the fields polygonize makes of the prediction, object by object "
                   "(precision, recall and F1 of fields matched at IoU > 0.5, over-/under-segmentation, boundary "
                   "F1, extent IoU).")
@click.option("--fields-class", default=None, metavar="ATTR",
              help="The true fields' crop attribute (class id or name): adds the same-crop field scores.")
@click.option("--boundary-tolerance", type=click.FloatRange(min=0), default=1.0, show_default=True, metavar="PX",
              help="Boundary F1 tolerance in pixels.")
@click.option("--json/--text", "as_json", default=True, show_default=True,
              help="Print the scores as JSON (default) or as readable text.")
def evaluate(model_dir: Path, image: DatasetPath, labels: DatasetPath, label_field: str | None,
             point_radius: float | None, window: str | None, tile: int | None, overlap: int | None, batch_size: int,
             min_dates: int, tta: str, forest: bool, device: str, true_fields: DatasetPath | None,
             fields_class: str | None, boundary_tolerance: float, as_json: bool) -> None:
    """Predict IMAGE tile by tile and compare with LABELS.

    mIoU is the mean IoU over the classes present in the labels or the prediction;
    pixel accuracy is shown too but is dominated by the commonest class. GPS point labels
    are scored by points: one vote per point, the majority class predicted over its
    pixels ("unit": "points"); the scores over their pixels are in "pixel_scores".

    \b
    Example:
        geoseg evaluate --model models/punjab --image region2/scene.tif \\
            --labels region2/labels.tif --window 1024,1024,1024,1024
        geoseg evaluate --model models/punjab --image region2/scene.tif \\
            --labels gps_points.gpkg --label-field crop --text
        geoseg evaluate --model models/punjab --image region2/scene.tif \\
            --labels region2/labels.tif --fields region2/fields.gpkg --fields-class crop --text
    """
    with progress_bar("tiles") as advance:
        res = evaluate_model(model_dir, image, labels, window=window, label_field=label_field,
                             point_radius=point_radius, tile=tile,
                             overlap=overlap, batch_size=batch_size, device=device, progress=advance,
                             min_dates=min_dates, tta=tta, forest=forest, fields=true_fields,
                             fields_class=fields_class, tolerance_px=boundary_tolerance)
    if res.points is not None and res.points.warning():  # points not scored: a warning line, even with -q
        click.echo(res.points.warning(), err=True)
    click.echo(res.to_json() if as_json else res.summary())
