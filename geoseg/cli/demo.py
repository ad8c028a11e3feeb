"""``geoseg demo``: the main job end to end on the bundled synthetic region."""

from __future__ import annotations

from pathlib import Path

import click

from .progress import progress_bar


@click.command("demo")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("demo"),
              show_default=True, help="Where the demo writes its region and outputs.")
@click.option("--size", type=int, default=2048, show_default=True, help="Region height and width in pixels.")
@click.option("--seed", type=int, default=0, show_default=True)
def demo(out_dir: Path, size: int, seed: int) -> None:
    """Synthesise a region over real Punjab districts and run the pipeline on it.

    \b
    Example:
        geoseg demo --out demo --size 1024
    """
    from ..demo import run_demo

    with progress_bar("tiles") as advance:
        result = run_demo(out_dir, height=size, width=size, seed=seed, progress=advance)
    for line in result.lines():
        click.echo(line)
    if result.differences:
        raise click.ClickException(f"the stitched mask differs from the truth in {result.differences} pixels")
    click.echo(f"outputs: {out_dir.resolve()}")
