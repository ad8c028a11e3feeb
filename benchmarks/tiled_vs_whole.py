"""Tiled prediction vs whole-image prediction: how often do they agree?

Predicts a scene twice with the same checkpoint: once through the tile grid (tiles with a
halo, cores stitched), once in one piece (a single tile covering the whole scene, no halo),
and prints the share of valid pixels on which the two masks agree, for several overlaps.

    python benchmarks/tiled_vs_whole.py --model demo/model --image demo/region/scene.tif
    python benchmarks/tiled_vs_whole.py --model demo/model --image demo/region/scene.tif --window 1024 --tile 256

The scene (or its top-left ``--window`` x ``--window`` crop) must fit in memory in one piece.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import rasterio

from geoseg.io.raster import raster_info
from geoseg.ml.model import read_card
from geoseg.ops.predict import predict_scene


def _crop(image: Path, size: int, out: Path) -> Path:
    from rasterio.windows import Window

    with rasterio.open(image) as src:
        w = Window(0, 0, min(size, src.width), min(size, src.height))
        profile = src.profile | {"width": w.width, "height": w.height, "transform": src.window_transform(w)}
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=w))
            dst.descriptions = src.descriptions
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("demo/model"))
    ap.add_argument("--image", type=Path, default=Path("demo/region/scene.tif"))
    ap.add_argument("--window", type=int, default=None, help="use the top-left N x N pixels only")
    ap.add_argument("--tile", type=int, default=512, help="tile size of the tiled prediction (default 512)")
    ap.add_argument("--overlaps", default=None, help="comma-separated halos to try (default: the model's and 0)")
    args = ap.parse_args(argv)


    card = read_card(args.model)
    overlaps = [int(v) for v in args.overlaps.split(",")] if args.overlaps else [card.overlap, 0]
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        image = _crop(args.image, args.window, tmp / "crop.tif") if args.window else args.image
        h, w = raster_info(image).shape
        whole_tile = -(-max(h, w) // card.multiple) * card.multiple
        t = time.perf_counter()
        predict_scene(args.model, image, tmp / "whole.tif", tile=whole_tile, overlap=0, batch_size=1, device="cpu")
        t_whole = time.perf_counter() - t
        with rasterio.open(tmp / "whole.tif") as d:
            whole = d.read(1)
        valid = whole != 255
        print(f"scene {image} ({w} x {h} px); model {args.model} ({card.arch}/{card.encoder}, default overlap "
              f"{card.overlap} px)")
        print(f"whole image in one piece (one {whole_tile} px tile): {t_whole:.1f} s")
        for ov in overlaps:
            t = time.perf_counter()
            predict_scene(args.model, image, tmp / f"tiled{ov}.tif", tile=args.tile, overlap=ov, batch_size=4,
                          device="cpu")
            secs = time.perf_counter() - t
            with rasterio.open(tmp / f"tiled{ov}.tif") as d:
                tiled = d.read(1)
            same_nodata = bool(((tiled == 255) == ~valid).all())
            agree = float((tiled[valid] == whole[valid]).mean())
            print(f"tiles of {args.tile} px, overlap {ov:>3} px: agreement with whole-image prediction "
                  f"{100 * agree:.3f} % of {int(valid.sum()):,} valid pixels ({int((tiled[valid] != whole[valid]).sum()):,} "
                  f"differ); nodata identical: {same_nodata}; {secs:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
