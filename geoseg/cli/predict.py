"""``geoseg predict``: a crop mask (and confidence) for one scene from a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import click

from geoseg.cli.options import (
    DATASET,
    OUTPUT,
    batch_size_option,
    creation_options_option,
    device_option,
    forest_option,
    info,
    json_option,
    min_dates_option,
    model_option,
    overlap_option,
    overwrite_option,
    tile_option,
    tta_option,
)
from geoseg.cli.progress import progress_bar
from geoseg.io.paths import DatasetPath
from geoseg.ops.predict import predict_scene


@click.command("predict")
@model_option
@click.argument("image", type=DATASET)
@click.option("--out", required=True, type=OUTPUT,
              help="Class mask to write (COG, uint8, 255 = nodata).")
@click.option("--confidence", type=OUTPUT,
              help="Also write max-softmax confidence (COG, uint8 x 255, 0 = nodata).")
@tile_option(help="Tile size in pixels (default 512).")
@overlap_option
@batch_size_option()
@min_dates_option
@tta_option
@forest_option
@device_option
@click.option("--max-pixels", type=int, default=None,
              help="Refuse a larger image (rows x columns) before any work, against broken or hostile headers "
                   "[default: 10,000,000,000].")
@creation_options_option(help="GDAL COG creation option for both outputs, e.g. --co COMPRESS=ZSTD --co LEVEL=9 "
                              "(repeatable; lossless compressions only).")
@overwrite_option
@json_option(help="Print one JSON object (mask, confidence, tiles, device, seconds, read_ratio).")
def predict(model_dir: Path, image: DatasetPath, out: Path, confidence: Path | None, tile: int | None,
            overlap: int | None, batch_size: int, min_dates: int, tta: str, forest: bool, device: str, max_pixels: int | None,
            creation_options: dict[str, str], overwrite: bool, as_json: bool) -> None:
    """Predict IMAGE tile by tile into a georeferenced crop mask.

    IMAGE may be a URL (https://, s3://) or a GDAL virtual path; the outputs are local COGs
    (they cannot stream to standard output).

    \b
    Examples:
        geoseg predict --model models/punjab demo/region/scene.tif --out mask.tif --confidence conf.tif
        geoseg predict --model models/punjab s3://bucket/scene.tif --out mask.tif --co COMPRESS=ZSTD --overwrite
    """
    with progress_bar("tiles") as advance:
        res = predict_scene(model_dir, image, out, confidence=confidence, tile=tile, overlap=overlap,
                            batch_size=batch_size, device=device, progress=advance,
                            creation_options=creation_options, overwrite=overwrite, min_dates=min_dates, tta=tta, forest=forest,
                            **({} if max_pixels is None else {"max_pixels": max_pixels}))
    if as_json:
        click.echo(json.dumps({"mask": str(res.mask), "confidence": str(res.confidence) if res.confidence else None,
                               "tiles": res.tiles, "device": res.device, "seconds": round(res.seconds, 3),
                               "read_ratio": round(res.read_ratio, 4)}, indent=2))
        return
    info(f"{res.tiles} tiles on {res.device} in {res.seconds:.1f} s "
         f"(pixels read / scene pixels = {res.read_ratio:.2f})")
    click.echo(f"mask: {res.mask}")
    if res.confidence:
        click.echo(f"confidence: {res.confidence}")
