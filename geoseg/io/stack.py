"""Stack single-band or per-date rasters into one multi-band input (GeoTIFF or VRT).

Landsat and Sentinel-2 are delivered as one file per band (and per date); a model takes
one stack in a fixed band order. All inputs must share one grid (CRS, transform, size),
one data type and one nodata value. Band names are kept: each output band is described
by its source band's description, or ``<file stem>`` (``<file stem> b<i>`` for
multi-band sources) when it has none.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from rasterio.dtypes import dtype_rev, typename_fwd
from rasterio.windows import Window

from geoseg.errors import ConfigError, GridMismatchError
from geoseg.io.paths import dataset_path, is_remote, refuse_stdout
from geoseg.io.raster import (
    RasterInfo,
    RasterWriter,
    check_creation_options,
    check_outputs,
    check_same_grid,
    check_size,
    open_raster,
    raster_info,
    write_text_atomic,
)

__all__ = [
    "StackResult",
    "stack_rasters",
]


@dataclass(frozen=True, slots=True)
class StackResult:
    path: Path
    bands: list[str]
    shape: tuple[int, int]


def _band_names(info: RasterInfo) -> list[str]:
    stem = Path(info.path).stem
    return [
        d if d else (stem if info.count == 1 else f"{stem} b{i}")
        for i, d in enumerate(info.descriptions, start=1)
    ]


def _vrt_xml(out: Path, infos: list[RasterInfo], names: list[str]) -> str:
    first = infos[0]
    h, w = first.shape
    gdal_dtype = typename_fwd[dtype_rev[first.dtype]]  # e.g. uint8 -> Byte, complex_int16 -> CInt16
    gt = ", ".join(repr(v) for v in first.transform.to_gdal())
    lines = [f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}">',
             f"  <SRS>{escape(first.crs.to_wkt())}</SRS>", f"  <GeoTransform>{gt}</GeoTransform>"]
    band = 0
    for info in infos:
        remote = is_remote(info.path)  # a URL or GDAL virtual path is referenced as it is
        src = info.path if remote else os.path.relpath(Path(info.path).resolve(), out.resolve().parent)
        for b in range(1, info.count + 1):
            band += 1
            lines.append(f'  <VRTRasterBand dataType="{gdal_dtype}" band="{band}">')
            lines.append(f"    <Description>{escape(names[band - 1])}</Description>")
            if first.nodata is not None:
                lines.append(f"    <NoDataValue>{first.nodata!r}</NoDataValue>")
            lines += [
                "    <SimpleSource>",
                f'      <SourceFilename relativeToVRT="{0 if remote else 1}">{escape(src)}</SourceFilename>',
                f"      <SourceBand>{b}</SourceBand>",
                f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>',
                f'      <DstRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>',
                "    </SimpleSource>",
                "  </VRTRasterBand>",
            ]
    lines.append("</VRTDataset>")
    return "\n".join(lines) + "\n"


def stack_rasters(out: str | os.PathLike[str], inputs: list[str | os.PathLike[str]], block: int = 1024, *,
                  overwrite: bool = False, creation_options: Mapping[str, str] | None = None,
                  progress: Callable[[int, int], None] | None = None) -> StackResult:
    """Stack ``inputs`` (in the order given) into ``out`` (``.vrt`` or ``.tif``).

    A ``.vrt`` references the inputs (relative paths; URLs and GDAL virtual paths as given) and
    is written instantly; a ``.tif`` copies the pixels block by block into a tiled DEFLATE
    GeoTIFF, with GDAL GTiff ``creation_options`` over those defaults (see
    :func:`geoseg.io.raster.check_creation_options`), calling ``progress(done, total)`` after
    each block. Inputs may be URLs or GDAL virtual paths (:func:`geoseg.io.paths.dataset_path`).

    Like ``gdalbuildvrt``, an existing ``out`` is replaced only with ``overwrite=True``: the
    output comes first, so a forgotten output name makes the first input the output.

    Raises
    ------
    GridMismatchError
        When an input's grid, dtype or nodata differs from the first input's.
    ConfigError
        For fewer than one input, an output that is neither ``.vrt`` nor ``.tif``, or one
        that exists without ``overwrite``.
    OutputIsInputError
        When the output is one of the inputs (or a file an input VRT reads).
    """
    refuse_stdout(out, "a stack", "a GeoTIFF is written with seeks back into the file, and a VRT names its "
                  "inputs relative to its own folder", "geoseg stack s2.vrt B02.tif B03.tif ...")
    target = Path(out)
    if not inputs:
        raise ConfigError("no input rasters to stack; give one or more files")
    inputs = [dataset_path(p) for p in inputs]  # s3://b/k -> /vsis3/b/k, which a VRT can name
    if target.suffix.lower() not in (".vrt", ".tif", ".tiff"):
        raise ConfigError(f"{target}: output must end in .vrt or .tif, got {target.suffix!r}")
    check_outputs({"the stack": target}, {f"input {i}": p for i, p in enumerate(inputs, start=1)})
    is_vrt = target.suffix.lower() == ".vrt"
    if creation_options and is_vrt:
        raise ConfigError(f"{target}: creation options (--co) apply to a .tif stack; a .vrt copies no pixels - "
                          f"leave them out, or stack into a .tif")
    co = check_creation_options(creation_options, cog=False, path=target)
    if target.exists() and not overwrite:
        raise ConfigError(
            f"{target}: already exists; the output comes first (geoseg stack OUT.vrt INPUT...), so it would be "
            f"replaced by the stack of {', '.join(str(p) for p in inputs)} - name a new output, or pass --overwrite"
        )
    infos = [raster_info(p) for p in inputs]
    for info in infos:
        check_size(info)
    first = infos[0]
    for info in infos[1:]:
        check_same_grid(first, info)
        if info.dtype != first.dtype:
            raise GridMismatchError(
                f"{info.path}: data type {info.dtype} (expected {first.dtype}, like {first.path}); "
                f"convert it first, e.g. `rio convert {info.path} converted.tif --dtype {first.dtype}` "
                f"(or `gdal_translate -ot {first.dtype.capitalize()} ...`)"
            )
        same_nodata = info.nodata == first.nodata or (
            info.nodata is not None and first.nodata is not None and info.nodata != info.nodata and first.nodata != first.nodata
        )
        if not same_nodata:
            raise GridMismatchError(
                f"{info.path}: nodata {info.nodata} (expected {first.nodata}, like {first.path}); "
                f"set one nodata value on all inputs with `rio edit-info --nodata VALUE FILE` "
                f"(or `gdal_edit.py -a_nodata`)"
            )
    names = [n for info in infos for n in _band_names(info)]
    h, w = first.shape
    if target.suffix.lower() != ".vrt":
        try:
            np.dtype(first.dtype)
        except TypeError:  # GDAL types numpy lacks, e.g. complex_int16 (CInt16)
            raise ConfigError(
                f"{first.path}: holds {first.dtype} pixels, which cannot be copied block by block into a GeoTIFF; "
                f"stack into a .vrt instead, or convert first, e.g. ``gdal_translate -ot CFloat32 {first.path} c.tif``"
            ) from None
    if target.suffix.lower() == ".vrt":
        target.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(target, _vrt_xml(target, infos, names))
    else:
        total = len(infos) * -(-h // block) * -(-w // block)
        done = 0
        with RasterWriter(target, shape=(h, w), transform=first.transform, crs=first.crs, count=len(names),
                          dtype=first.dtype, nodata=first.nodata, band_descriptions=names, cog=False,
                          creation_options=co) as dst:
            band = 1
            for info in infos:
                with open_raster(info.path) as src:
                    for r in range(0, h, block):
                        for c in range(0, w, block):
                            win = Window(c, r, min(block, w - c), min(block, h - r))
                            dst.write(src.read(window=win), win, indexes=list(range(band, band + info.count)))
                            done += 1
                            if progress:
                                progress(done, total)
                band += info.count
    return StackResult(target, names, (h, w))
