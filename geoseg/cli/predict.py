"""``geoseg predict``: a crop mask (and confidence) for one scene from a checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.cli.options import batch_size_option, device_option, model_option, overlap_option, tile_option
from geoseg.cli.progress import progress_bar
from geoseg.ops.predict import predict_scene


@click.command("predict")
@model_option
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Class mask to write (COG, uint8, 255 = nodata).")
@click.option("--confidence", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write max-softmax confidence (COG, uint8 x 255, 0 = nodata).")
@tile_option(help="Tile size in pixels (default 512).")
@overlap_option
@batch_size_option()
@device_option
@click.option("--max-pixels", type=int, default=None,
              help="Refuse a larger image (rows x columns) before any work, against broken or hostile headers "
                   "[default: 10,000,000,000].")
def predict(model_dir: Path, image: Path, out: Path, confidence: Path | None, tile: int | None,
            overlap: int | None, batch_size: int, device: str, max_pixels: int | None) -> None:
    """Predict IMAGE tile by tile into a georeferenced crop mask.

    \b
    Example:
        geoseg predict --model models/punjab demo/region/scene.tif --out mask.tif --confidence conf.tif
    """
    with progress_bar("tiles") as advance:
        res = predict_scene(model_dir, image, out, confidence=confidence, tile=tile, overlap=overlap,
                            batch_size=batch_size, device=device, progress=advance,
                            **({} if max_pixels is None else {"max_pixels": max_pixels}))
    click.echo(f"{res.tiles} tiles on {res.device} in {res.seconds:.1f} s "
               f"(pixels read / scene pixels = {res.read_ratio:.2f})")
    click.echo(f"mask: {res.mask}")
    if res.confidence:
        click.echo(f"confidence: {res.confidence}")
