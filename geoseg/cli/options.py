"""Click options that several commands share, spelled once.

Options that read the same in every command are decorators (``@device_option``); those whose
default or help differ between commands are functions that take them
(``@tile_option(help=...)``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

__all__ = [
    "model_option",
    "device_option",
    "tile_option",
    "overlap_option",
    "batch_size_option",
    "classes_option",
    "label_field_option",
]

Decorator = Callable[[Any], Any]

#: ``--model DIR``: a checkpoint directory (passed as ``model_dir``).
model_option: Decorator = click.option(
    "--model", "model_dir", required=True, type=click.Path(path_type=Path),
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

#: ``--label-field``: the attribute of a vector label file that holds the class.
label_field_option: Decorator = click.option(
    "--label-field", default=None, help="Attribute of a vector label file holding class id or name.",
)


def tile_option(*, help: str, default: int | None = None, show_default: bool | None = None) -> Decorator:
    """``--tile PX``: the tile (or chip) size in pixels."""
    return click.option("--tile", type=int, default=default, show_default=show_default, help=help)


def batch_size_option(*, default: int = 4, help: str | None = None) -> Decorator:
    """``--batch-size N``: tiles (or chips) per model step."""
    return click.option("--batch-size", type=int, default=default, show_default=True, help=help)


def classes_option(*, help: str, required: bool = False) -> Decorator:
    """``--classes FILE``: a class file (YAML) naming the class ids."""
    return click.option("--classes", required=required, type=click.Path(dir_okay=False, path_type=Path), help=help)
