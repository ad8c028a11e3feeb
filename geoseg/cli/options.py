"""Click options that several commands share, spelled once.

Options that read the same in every command are decorators (``@device_option``); those whose
default or help differ between commands are functions that take them
(``@tile_option(help=...)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from geoseg.io.paths import dataset_path, local_path, output_path
from geoseg.ml.tta import TTA_MODES

__all__ = [
    "model_option",
    "device_option",
    "tile_option",
    "tta_option",
    "forest_option",
    "overlap_option",
    "batch_size_option",
    "classes_option",
    "label_field_option",
    "point_radius_option",
    "DatasetParam",
    "LocalParam",
    "OutputParam",
    "DATASET",
    "OUTPUT",
    "overwrite_option",
    "json_option",
    "creation_options_option",
    "is_quiet",
    "info",
]

Decorator = Callable[[Any], Any]

class DatasetParam(click.ParamType):
    """A raster or vector input as GDAL users write it: a local file, a URL (``https://``, ``s3://``, ...)
    or a GDAL virtual path (``/vsicurl/``, ``/vsis3/``, ...); see :func:`geoseg.io.paths.dataset_path`.

    Unlike ``click.Path(path_type=Path)`` it keeps ``https://host/f.tif`` whole (a Path folds it into
    ``https:/host/f.tif``). A bad scheme is a :class:`~geoseg.errors.ConfigError`: one line, exit 1.
    """

    name = "dataset"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return dataset_path(value)


class LocalParam(click.ParamType):
    """A path geoseg opens itself (a checkpoint directory, a class file, a run folder): local only."""

    name = "path"

    def __init__(self, what: str) -> None:
        self.what = what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return local_path(value, self.what)


class OutputParam(click.ParamType):
    """An output: a local file, or ``-`` (``/vsistdout/``) for standard output where the format streams."""

    name = "path"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return output_path(value)


#: A raster or vector input (local, URL or GDAL virtual path).
DATASET = DatasetParam()
#: An output file, or ``-`` for standard output.
OUTPUT = OutputParam()

#: ``--overwrite``: replace existing outputs (refused without it, as ``rio`` does).
overwrite_option: Decorator = click.option(
    "--overwrite", is_flag=True, help="Replace existing outputs (without it an existing output is an error).",
)


def json_option(*, help: str) -> Decorator:
    """``--json``: print the result as one JSON object (``as_json``)."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def _creation_options(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in value:
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE, e.g. --co COMPRESS=ZSTD", ctx, param)
        out[key.strip().upper()] = val.strip()
    return out


def creation_options_option(*, help: str) -> Decorator:
    """``--co KEY=VALUE`` (repeatable): GDAL creation options, as a dict (``creation_options``)."""
    return click.option("--co", "--profile", "creation_options", multiple=True, metavar="NAME=VALUE",
                        callback=_creation_options, help=help)


def is_quiet(ctx: click.Context | None = None) -> bool:
    """Whether the group's ``--quiet/-q`` is on (progress and information lines are silenced)."""
    ctx = ctx or click.get_current_context(silent=True)
    return bool(ctx and (ctx.find_root().obj or {}).get("quiet"))


def info(message: str) -> None:
    """Print an information line on standard error, unless ``--quiet``."""
    if not is_quiet():
        click.echo(message, err=True)


#: ``--model DIR``: a checkpoint directory (passed as ``model_dir``).
model_option: Decorator = click.option(
    "--model", "model_dir", required=True, type=LocalParam("the checkpoint directory"),
    help="Checkpoint directory (model.safetensors + model.json).",
)

#: ``--device``: where the model runs.
device_option: Decorator = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
)

#: ``--overlap PX``: the halo per side of a tile, the model's by default.
overlap_option: Decorator = click.option(
    "--overlap", type=int, default=None, help="Halo per side in pixels (default: the model's).",
)

#: ``--min-dates``: for a model that reads dates, the observed dates a pixel needs to be mapped.
min_dates_option: Decorator = click.option(
    "--min-dates", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
    help="For a model that reads dates (utae, or trained with --date-dropout): map a pixel when at least N of its "
         "dates are observed (clear); pixels with fewer are nodata.",
)

#: ``--tta``: test-time augmentation (geoseg.ml.tta).
tta_option: Decorator = click.option(
    "--tta", type=click.Choice(list(TTA_MODES)), default="none", show_default=True,
    help="Test-time augmentation: average the logits over 4 flips (flips) or the 8 flips and rotations (d4) of "
         "each tile, at 4 or 8 times the compute.",
)

#: ``--forest/--no-forest``: fuse the model's per-pixel forest (geoseg.ml.forest).
forest_option: Decorator = click.option(
    "--forest/--no-forest", default=True, show_default=True,
    help="Average the network's class probabilities with those of the per-pixel random forest stored with the "
         "model (at the weight chosen when it was trained); --no-forest: the network alone. Models without a "
         "forest are not affected.",
)

#: ``--label-field``: the attribute of a vector label file that holds the class.
label_field_option: Decorator = click.option(
    "--label-field", default=None, help="Attribute of a vector label file holding class id or name.",
)


point_radius_option: Decorator = click.option(
    "--point-radius", type=click.FloatRange(min=0), default=None, metavar="METRES",
    help="For point labels (GPS points): each point labels the pixels whose centre lies within this many metres, "
         "and the pixel under it [default: 0, that pixel only].",
)


def tile_option(*, help: str, default: int | None = None, show_default: bool | None = None) -> Decorator:
    """``--tile PX``: the tile (or chip) size in pixels."""
    return click.option("--tile", type=int, default=default, show_default=show_default, help=help)


def batch_size_option(*, default: int = 4, help: str | None = None) -> Decorator:
    """``--batch-size N``: tiles (or chips) per model step."""
    return click.option("--batch-size", type=int, default=default, show_default=True, help=help)


def classes_option(*, help: str, required: bool = False) -> Decorator:
    """``--classes FILE``: a class file (YAML) naming the class ids."""
    return click.option("--classes", required=required, type=LocalParam("the class file"), help=help)
