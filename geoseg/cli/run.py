"""``geoseg run`` and ``geoseg runs``: region-wide batch runs and their catalog."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from geoseg.cli.options import LocalParam, is_quiet
from geoseg.cli.progress import progress_bar
from geoseg.errors import GeosegError
from geoseg.io.objects import is_object_url, join
from geoseg.report.summary import area_lines, run_summary
from geoseg.rundir import CATALOG, LOCK, Catalog, read_manifest, run_outputs, run_status
from geoseg.rundir_store import ObjectCatalog, read_remote_manifest, remote_run_status
from geoseg.workflow.config import load_workflow
from geoseg.workflow.run import run_workflow


@click.command("run")
@click.argument("workflow", type=LocalParam("the workflow file"))
@click.option("--resume", is_flag=True, help="Continue the newest unfinished run of this workflow.")
@click.option("--scheduler", help="Dask scheduler address (tcp://HOST:PORT); overrides cluster.scheduler.")
@click.option("--runs-dir", help="Where runs are recorded: a folder, or an object-store URL (s3://bucket/runs).")
@click.option("--store", help="Tile store root: a folder (default tiles/) or an object-store URL (s3://bucket/tiles).")
@click.option("--quiet", is_flag=True, help="Print only the run directory.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON summary (run_id, run_dir, status, tiles, timings, outputs, district x crop "
                   "hectares) instead of the text lines.")
def run(workflow: Path, resume: bool, scheduler: str | None, runs_dir: str | None, store: str | None,
        quiet: bool, as_json: bool) -> None:
    """Run a workflow on Dask; the last line printed is the run directory (--json: one JSON object).

    \b
    Examples:
        geoseg run workflows/demo.yaml
        geoseg run workflows/example-punjab.yaml --scheduler tcp://10.0.0.5:8786
        geoseg run workflows/demo.yaml --resume        # after a failure or a kill
        geoseg run workflows/demo.yaml --json | jq .district_crop_ha
    \b
    Exit status: 0 done, 1 failed (one line on stderr says why), 130 interrupted.
    """
    cfg = load_workflow(workflow, runs_dir=runs_dir, store=store, scheduler=scheduler)
    say = (lambda s: None) if quiet or as_json or is_quiet() else (lambda s: click.echo(s, err=True))
    with progress_bar("tiles") as advance:
        res = run_workflow(cfg, resume=resume, progress=advance, say=say)
    if as_json:
        click.echo(json.dumps(run_summary(res), indent=2))
        return
    if not quiet:
        if res.stale_lock and not is_quiet():
            click.echo(f"note: took over a stale lock from pid {res.stale_lock.get('pid')}", err=True)
        click.echo(f"run {res.run_id}: {res.tiles} tiles ({res.tiles_skipped} reused from the store)")
        click.echo("stage timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in res.timings.items()))
        for k, v in res.outputs.items():
            click.echo(f"  {k}: {v}")
        lines = area_lines(res.outputs)
        if lines:
            click.echo("crop area per district (hectares):")
            for line in lines:
                click.echo("  " + line)
    click.echo(res.run_url or str(res.run_dir))


@click.group("runs", invoke_without_command=True)
@click.option("--runs-dir", default="runs", show_default=True,
              help="The runs folder: a folder, or an object-store URL (s3://bucket/runs).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def runs(ctx: click.Context, runs_dir: str, as_json: bool) -> None:
    """List recorded runs (name, id, status, scenes, tiles, duration).

    A run recorded as running whose process is gone (killed, or its machine restarted) is
    listed as interrupted; `geoseg run WORKFLOW --resume` continues it. Without a catalog,
    it is rebuilt from the runs' manifests.

    \b
    Examples:
        geoseg runs
        geoseg runs show 20261124T2130
        geoseg runs --runs-dir s3://bucket/runs
    """
    ctx.ensure_object(dict)
    ctx.obj["runs_dir"] = runs_dir
    if ctx.invoked_subcommand is not None:
        return

    catalog = _catalog(runs_dir)
    if isinstance(catalog, Catalog) and not catalog.path.exists():
        catalog.rebuild()
    rows = catalog.list()
    if not rows and isinstance(catalog, ObjectCatalog) and catalog.rebuild():
        rows = catalog.list()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no runs recorded under {runs_dir}")
        return
    table = Table("name", "run id", "status", "scenes", "tiles", "duration")
    for r in rows:
        secs = r["seconds"]
        table.add_row(r["name"], r["run_id"], r["status"], str(r["scenes"] or ""),
                      f"{r['tiles_done'] or 0}/{r['tiles_total'] or 0}", f"{secs:.0f} s" if secs else "")
    Console().print(table)


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
@click.pass_context
def show(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """Print the manifest summary of one run (a unique prefix of the id is enough)."""
    runs_dir = ctx.obj["runs_dir"]
    row = _catalog(runs_dir).get(run_id)
    if is_object_url(runs_dir):
        m = read_remote_manifest(row["run_dir"])
        if m is None:
            raise GeosegError(f"{row['run_dir']}: no manifest; the run folder on the store is damaged or gone")
        run_dir: Path | str = row["run_dir"]
        status = remote_run_status(m["status"], join(runs_dir, m["name"], LOCK), m["run_id"])
    else:
        run_dir = Path(row["run_dir"])
        m = read_manifest(run_dir)
        status = run_status(m["status"], Path(runs_dir) / m["name"] / LOCK, m["run_id"])
    if as_json:
        click.echo(json.dumps(m, indent=2))
        return
    if status != m["status"]:
        status += (f" (recorded as {m['status']}; its process is gone - `geoseg run WORKFLOW --resume` "
                   f"continues it)")
    click.echo(f"run {m['run_id']} of {m['name']}: {status}")
    click.echo(f"workflow: {m['workflow']} (sha256 {m['workflow_sha256'][:12]})")
    click.echo(f"model: {m['model']['path']} ({m['model']['arch']}/{m['model']['encoder']}, "
               f"sha256 {m['model']['weights_sha256'][:12]})")
    click.echo(f"started {m.get('started')}, ended {m.get('ended', '-')}, resumed {m.get('resumed', 0)} time(s)")
    if m.get("error"):
        click.echo(f"error: {m['error']}")
    for k, v in (m.get("timings") or {}).items():
        click.echo(f"  {k}: {v:.1f} s")
    if isinstance(run_dir, str):
        for k, v in (m.get("outputs") or {}).items():
            click.echo(f"  {k}: {v if Path(v).is_absolute() else join(run_dir, v)}")
        return
    for k, p in run_outputs(run_dir, m).items():  # stored relative to the run folder, wherever it now is
        click.echo(f"  {k}: {p}")


def _catalog(runs_dir: str) -> Catalog | ObjectCatalog:
    return ObjectCatalog(runs_dir) if is_object_url(runs_dir) else Catalog(Path(runs_dir) / CATALOG)
