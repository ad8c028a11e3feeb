"""``geoseg bench``: speed and memory figures of this machine, each against a baseline from the same run."""

from __future__ import annotations

import tempfile
from contextlib import nullcontext
from pathlib import Path

import click

from geoseg.cli.options import LocalParam, is_quiet


@click.command("bench")
@click.option("--out", type=LocalParam("the results file"),
              default=Path("benchmarks/results/latest.json"), show_default=True,
              help="Where to write the results (JSON: rows of figure, value, baseline, ratio, target, met).")
@click.option("--work", type=LocalParam("the work folder"), default=None,
              help="Folder for the synthetic regions and runs (default: a temporary folder, removed afterwards).")
@click.option("--base", type=int, default=1344, show_default=True,
              help="Side of the 1x region in pixels; the 16x region is 4 times as wide (multiples of 448 keep "
                   "the halo share equal).")
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Checkpoint to time (default: a U-Net/ResNet-18 trained briefly on the 1x region).")
@click.option("--train-epochs", type=click.IntRange(min=0), default=12, show_default=True,
              help="Epochs for the default model (0: random weights); a fixed count gives the same model, and so "
                   "the same masks to polygonise and count, on every run.")
@click.option("--train-minutes", type=float, default=None,
              help="Stop the default model's training after this many minutes (0: random weights).")
@click.option("--gpu", is_flag=True, help="Also measure the GPU figures (needs CUDA).")
@click.option("--repeats", type=click.IntRange(min=1), default=2, show_default=True,
              help="Times each run-sized job (workflow runs and their baselines) is timed; the fastest counts.")
@click.option("--record/--no-record", default=True, show_default=True,
              help="Also keep the results as a dated record next to --out (bench-<date>-<device>.json), which "
                   "later runs on the same device compare against.")
@click.option("--against", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Compare with this earlier results file (any device) instead of the newest record of this "
                   "device and region size next to --out.")
def bench(out: Path, work: Path | None, base: int, model_dir: Path | None, train_epochs: int,
          train_minutes: float | None, gpu: bool, repeats: int, record: bool, against: Path | None) -> None:
    """Measure pipeline speed and memory against baselines and print one table.

    Each figure is a ratio of two timings (or memory peaks) taken side by side in this
    run, with its target; the same rows go to --out as JSON. About 6 minutes on 2 CPU
    cores with the default sizes. The "was" column holds the ratios of the newest earlier
    record of this device and region size in --out's folder (or of --against), and the last
    line names the figures that got worse by more than 10 %.

    \b
    Examples:
        geoseg bench
        geoseg bench --base 448 --out /tmp/bench.json      # quicker, smaller regions
        geoseg bench --gpu --model models/punjab
        geoseg bench --against benchmarks/results/bench-20261126T1236Z-2-cpu-cores-amd-epyc-bf16.json
    """
    # deferred: it loads torch, which `geoseg --help` and the other commands do not need
    from geoseg.bench import load_result, run_bench, save_result

    reference = load_result(against) if against is not None else None  # a wrong file fails now, not after the run

    quiet = is_quiet()  # read here: say may run in other threads, outside click's context

    def say(s: str) -> None:
        if not quiet:
            click.echo(s, err=True)

    place = tempfile.TemporaryDirectory(prefix="geoseg-bench-") if work is None else nullcontext(str(work))
    with place as where:  # a temporary folder is removed afterwards
        result = run_bench(where, base=base, model=model_dir, train_epochs=train_epochs, train_minutes=train_minutes,
                           gpu=gpu, repeats=repeats, say=say)
    table, kept = save_result(result, out, record=record,
                              against=(against, reference) if reference is not None else None)
    click.echo(table)
    click.echo(f"results: {out}" + (f"; record: {kept}" if kept else ""))
