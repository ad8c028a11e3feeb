"""The demo: the main job end to end on a bundled synthetic region.

Today the chain is: synthesise a region over real Punjab districts, tile the
16-band scene with the default grid (512 px tiles, 32 px halo), pass each tile through
a stand-in model that returns the true labels of its window, and stitch the tile cores
into a georeferenced mask COG, which must equal the truth pixel for pixel. The trained
U-Net, Dask workers, polygons and district areas plug into this same loop as their
parts land (see the README).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .classes import load_classes
from .grid import DEFAULT_OVERLAP, DEFAULT_TILE, tile_grid
from .io import check_same_grid, count_differences, mask_writer, open_raster, raster_info, read_tile
from .stitch import apply_nodata

__all__ = ["DemoResult", "run_demo"]


@dataclass(frozen=True, slots=True)
class DemoResult:
    """What the demo did and where its outputs are."""

    region_dir: Path
    mask: Path
    shape: tuple[int, int]
    bands: int
    tiles: int
    read_ratio: float
    differences: int
    seconds: dict[str, float]
    region_summary: str

    def lines(self) -> list[str]:
        h, w = self.shape
        return [
            self.region_summary,
            "",
            f"tiled scene.tif ({w} x {h} px, {self.bands} bands) into {self.tiles} tiles of "
            f"{DEFAULT_TILE} px with a {DEFAULT_OVERLAP} px halo (pixels read / scene pixels = {self.read_ratio:.3f})",
            f"stitched the tile cores into {self.mask} (COG, EPSG and transform of the scene, nodata 255)",
            f"check: stitched mask vs labels.tif: {self.differences} differing pixels"
            + (" - identical" if self.differences == 0 else " - MISMATCH"),
            "timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items()),
        ]


def run_demo(
    out_dir: str | Path = "demo",
    *,
    height: int = 2048,
    width: int = 2048,
    seed: int = 0,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    progress: Callable[[int, int], None] | None = None,
) -> DemoResult:
    """Run the demo into ``out_dir`` and return what it did.

    ``progress(done, total)`` is called after each tile.
    """
    from .synth import synthesize

    out = Path(out_dir)
    t0 = time.perf_counter()
    region = synthesize(out / "region", height=height, width=width, seed=seed)
    t1 = time.perf_counter()
    info = raster_info(region.scene)
    check_same_grid(info, raster_info(region.labels))
    classes = load_classes(region.classes)
    grid = tile_grid(info.shape, info.transform, size=tile, overlap=overlap)
    mask = out / "mask.tif"
    with open_raster(region.scene) as src, open_raster(region.labels) as lab, mask_writer(
        mask, shape=info.shape, transform=info.transform, crs=info.crs, classes=classes
    ) as writer:
        for i, t in enumerate(grid, start=1):
            pixels = read_tile(src, t)
            truth = read_tile(lab, t, pad="constant", fill=255)
            prediction = apply_nodata(truth.array[0], pixels.valid)  # stand-in model
            writer.write_tile(t, prediction)
            if progress:
                progress(i, len(grid))
    t2 = time.perf_counter()
    diff = count_differences(region.labels, mask)
    t3 = time.perf_counter()
    return DemoResult(
        region_dir=out / "region",
        mask=mask,
        shape=tuple(info.shape),  # type: ignore[arg-type]
        bands=info.count,
        tiles=len(grid),
        read_ratio=grid.read_ratio,
        differences=diff,
        seconds={"synthesise": t1 - t0, "tile+stitch": t2 - t1, "check": t3 - t2},
        region_summary=region.summary(),
    )
