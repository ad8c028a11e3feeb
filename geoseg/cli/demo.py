"""``geoseg demo``: the main job end to end on the bundled synthetic region."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.cli.options import is_quiet
from geoseg.cli.progress import progress_bar


@click.command("demo")
@click.option("--workflow", type=click.Path(dir_okay=False, path_type=Path), default=Path("workflows/demo.yaml"),
              show_default=True, help="The demo workflow: one synthetic scene, its model and districts.")
@click.option("--size", type=int, default=2048, show_default=True, help="Region height and width in pixels (10 m).")
@click.option("--train-minutes", type=float, default=4.0, show_default=True,
              help="Time limit for training the demo model's network when the workflow's model directory has "
                   "none (its per-pixel forest is fitted after it).")
@click.option("--retrain", is_flag=True, help="Train the demo model even if one exists.")
def demo(workflow: Path, size: int, train_minutes: float, retrain: bool) -> None:
    """Synthesise a region over real Punjab districts and run the whole pipeline on it.

    Synthesises the region named by the workflow, trains the demo model if there is
    none (on a second, differently seeded region), runs the workflow on a Dask
    LocalCluster (tiles, inference, mask, fields, district areas) and scores the result
    against the generator's truth.

    \b
    Examples:
        geoseg demo
        geoseg demo --size 1024 --train-minutes 2
    """
    # deferred: it loads torch, which `geoseg --help` and the other commands do not need
    from geoseg.demo import run_demo

    quiet = is_quiet()  # read here: the callbacks may run in other threads, outside click's context

    def epoch(i: int, total: int, m: dict) -> None:  # type: ignore[type-arg]
        if quiet:
            return
        click.echo(f"  epoch {i:>2}/{total}  loss {m['loss']:.3f}  val mIoU {m['val_miou']:.3f}  "
                   f"{m['seconds']:.0f} s", err=True)

    with progress_bar("tiles") as advance:
        result = run_demo(workflow, size=size, train_minutes=train_minutes, retrain=retrain,
                          say=(lambda s: None) if quiet else (lambda s: click.echo(s, err=True)), progress=advance, epoch=epoch)
    for line in result.lines():
        click.echo(line)
    click.echo(str(result.run.run_dir))
