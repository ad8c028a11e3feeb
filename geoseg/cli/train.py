"""``geoseg train``: train a segmentation model on labelled scenes into a checkpoint directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from geoseg.cli.options import (
    DATASET,
    LocalParam,
    batch_size_option,
    classes_option,
    device_option,
    is_quiet,
    label_field_option,
    overwrite_option,
    point_radius_option,
    tile_option,
)
from geoseg.cli.progress import progress_bar
from geoseg.io.paths import DatasetPath, check_overwrite


def _epoch_line(epoch: int, total: int, m: dict[str, Any]) -> None:
    if is_quiet():
        return
    miou = m.get("val_miou")
    acc = m.get("val_pixel_accuracy")
    click.echo(
        f"epoch {epoch:>3}/{total}  loss {m['loss']:.4f}  val mIoU {miou:.3f}  (pixel acc {acc:.3f})  "
        f"lr {m['lr']:.2e}  {m['seconds']:.0f} s{'  *best' if m.get('best') else ''}"
    )


@click.command("train")
@click.option("--image", "images", required=True, multiple=True, type=DATASET,
              help="Input image, a file, URL or /vsi path (repeat with --labels for several scenes).")
@click.option("--labels", "labels", required=True, multiple=True, type=DATASET,
              help="Label raster on the image grid, or a vector file with --label-field (one per --image); a file, "
                   "URL or /vsi path.")
@classes_option(required=True, help="Class file (YAML): the ids and names the labels use.")
@click.option("--fields", "fields", multiple=True, type=DATASET,
              help="Field polygons (one file, or one per --image): the model also learns field edges, which "
                   "polygonize separates touching fields of one crop on.")
@click.option("--out", required=True, type=LocalParam("the checkpoint directory"),
              help="Checkpoint directory to write (model.safetensors + model.json).")
@click.option("--arch", type=click.Choice(["unet", "deeplabv3plus", "segformer", "utae"], case_sensitive=False),
              default=None, help="Architecture [default: unet, or that of --init-from]; utae reads the season date "
                                 "by date (band names must carry the dates) and maps pixels that missed some dates.")
@click.option("--encoder", default=None, help="smp encoder name [default: resnet18; mit_b0 for segformer].")
@click.option("--date-dropout", type=float, default=None, metavar="P",
              help="Make the model read the dates (a validity plane per date, so pixels that missed dates are "
                   "mapped) and simulate clouds while training: each date of a chip dropped, or covered with cloud "
                   "blobs, with probability P (0: the real gaps only) [default: 0.4 for utae, off for the others].")
@click.option("--valid-rule", type=click.Choice(["all", "any"]), default="all", show_default=True,
              help="For a model that does not read dates: a pixel counts as observed when all (or any) of its "
                   "bands hold data.")
@tile_option(default=256, show_default=True,
             help="Inference tile size the model card records (a multiple of 16 for the default U-Net), and the "
                  "training chip size unless --chip is given.")
@click.option("--chip", type=int, default=None, metavar="PX",
              help="Training chip size in pixels, a multiple of 16 too [default: --tile, or 64 for a model that reads "
                   "dates]. Smaller chips make more optimiser steps per epoch; the card's tile and halo, which "
                   "inference uses, stay as --tile sets them.")
@click.option("--epochs", type=int, default=40, show_default=True, help="Most epochs (early stopping may end sooner).")
@click.option("--patience", type=int, default=8, show_default=True,
              help="Stop after this many epochs without a better validation mIoU; as large as --epochs turns "
                   "early stopping off.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same split, chips and weights.")
@click.option("--init-from", type=LocalParam("--init-from"), default=None,
              help="geoseg checkpoint directory to fine-tune.")
@click.option("--pretrained", default=None, metavar="PATH|NAME",
              help="Start the encoder from pretrained weights: a file (.safetensors/.pt/.pth, with "
                   "--pretrained-bands), a geoseg checkpoint directory or a published name (imagenet-resnet18, ssl4eo-l-oli-sr-moco-resnet18, "
                   "ssl4eo-s12-all-moco-resnet18, ...; downloaded once into the cache). The first convolution is "
                   "matched to the image's bands by name.")
@click.option("--pretrained-bands", default=None, metavar="NAMES",
              help="The bands the weights' first convolution reads, in order, e.g. red,green,blue "
                   "[default: known for a published name].")
@click.option("--freeze-epochs", type=int, default=None, metavar="N",
              help="Epochs in which the pretrained encoder (all but its first convolution) does not learn "
                   "[default: 2 with --pretrained].")
@label_field_option
@point_radius_option
@device_option
@click.option("--loss", type=click.Choice(["ce+dice", "ce", "dice"]), default="ce+dice", show_default=True)
@batch_size_option(default=8, help="Chips per optimisation step.")
@click.option("--lr", type=float, default=1e-3, show_default=True,
              help="Peak learning rate (AdamW, linear warm-up then cosine decay).")
@click.option("--time-limit", type=float, default=None,
              help="Minutes of wall clock for the network; stops cleanly before, keeping the best epoch "
                   "(the per-pixel forest is fitted after it).")
@click.option("--baseline", type=click.Choice(["none", "rf"]), default="none", show_default=True,
              help="Also train a per-pixel random forest (100 trees) on the same training pixels and report its "
                   "validation mIoU next to the model's, to see the gain on your own data.")
@click.option("--forest/--no-forest", default=True, show_default=True,
              help="Fuse a per-pixel random forest with the network: fitted on the training pixels, its share of "
                   "the averaged class probabilities chosen on the validation blocks, stored with the model "
                   "(not for --arch utae).")
@click.option("--forest-context/--no-forest-context", default=True, show_default=True,
              help="Also try a forest that reads each pixel's neighbourhood (channel means and spreads over 3 x 3 "
                   "and 5 x 5 px) and keep it when it fits the validation blocks better; --no-forest-context: each "
                   "pixel's own values only.")
@overwrite_option
def train(images: tuple[DatasetPath, ...], labels: tuple[DatasetPath, ...], classes: Path,
          fields: tuple[DatasetPath, ...], out: Path, arch: str | None, encoder: str | None, tile: int, chip: int | None, epochs: int, patience: int, seed: int,
          init_from: Path | None,
          label_field: str | None, point_radius: float | None, device: str, loss: str, batch_size: int, lr: float,
          time_limit: float | None, date_dropout: float | None, valid_rule: str, baseline: str,
          forest: bool, forest_context: bool, pretrained: str | None, pretrained_bands: str | None, freeze_epochs: int | None,
          overwrite: bool) -> None:
    """Train a crop segmentation model from images and labels.

    Chips are drawn from the scene away from spatially held-out validation blocks
    (one block in five; GPS point labels are held out whole, by the block holding the
    point, and chips are placed around the training points); the epoch with the best validation mIoU is saved, with its
    scores and the band statistics, in OUT/model.json.

    \b
    Examples:
        geoseg train --image region/scene.tif --labels region/labels.tif \\
            --classes region/classes.yaml --out models/punjab --time-limit 10
        geoseg train --image scene.tif --labels fields.gpkg --label-field crop \\
            --classes classes.yaml --out models/ft --init-from models/punjab --overwrite
        geoseg train --image region/scene.tif --labels region/labels.tif \\
            --fields region/fields.gpkg --classes region/classes.yaml --out models/fields
        geoseg train --image scene.tif --labels gps_points.gpkg --label-field crop \\
            --point-radius 10 --classes classes.yaml --out models/points
        geoseg train --image landsat.tif --labels cdl.tif --classes classes.yaml \\
            --pretrained ssl4eo-l-oli-sr-moco-resnet18 --out models/landsat
        geoseg train --image kharif.tif --labels labels.tif --classes classes.yaml \\
            --arch utae --lr 2e-3 --epochs 80 --patience 80 --out models/kharif-utae
    """
    if out.is_dir() and any(out.iterdir()):  # a checkpoint there is replaced whole, only when asked
        check_overwrite(out, overwrite, "the checkpoint directory")
    # deferred: it loads torch, which `geoseg --help` and the other commands do not need
    from geoseg.ml.train import train as train_model

    with progress_bar("epochs") as advance:

        def on_epoch(epoch: int, total: int, m: dict[str, Any]) -> None:
            _epoch_line(epoch, total, m)
            advance(epoch, total)

        res = train_model(list(images), list(labels), classes, out, arch=arch, encoder=encoder, tile=tile, chip=chip,
                          epochs=epochs, patience=patience, seed=seed, init_from=init_from, label_field=label_field,
                          point_radius=point_radius, device=device,
                          loss=loss, batch_size=batch_size, lr=lr, time_limit=time_limit, date_dropout=date_dropout,
                          valid_rule=valid_rule, baseline=None if baseline == "none" else baseline,
                          forest=forest, forest_context=forest_context, pretrained=pretrained, pretrained_bands=pretrained_bands,
                          freeze_epochs=freeze_epochs, fields=list(fields) or None, progress=on_epoch)
    for report in res.points:  # points not used: a warning line, even with -q
        if report.warning():
            click.echo(report.warning(), err=True)
    click.echo(res.summary())
