"""``geoseg``: the command group, shared error handling and logging.

Each subcommand lives in its own module, parses its options, calls one library
function and prints. Errors raised on purpose (:class:`geoseg.errors.GeosegError`)
and OS errors become one clean line on standard error and exit status 1; ``--debug``
shows the full traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from geoseg import __version__
from geoseg.cli import (
    areas,
    bench,
    composite,
    demo,
    estimate,
    evaluate,
    polygonize,
    predict,
    query,
    report,
    run,
    sample,
    stack,
    synth,
    train,
    zonal,
)
from geoseg.errors import GeosegError
from geoseg.parallel import quick_exit

log = logging.getLogger("geoseg")


class GeosegGroup(click.Group):
    """A click group that turns library errors into one line and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("geoseg: interrupted", err=True)
            ctx.exit(130)
        except Exception as e:  # noqa: BLE001 - the CLI boundary: one line, never a traceback
            if (ctx.obj or {}).get("debug"):
                raise
            if isinstance(e, (GeosegError, OSError)):
                msg = str(e)
            else:
                msg = f"internal error {type(e).__name__}: {e} (run with --debug for the traceback and report it)"
            click.echo(f"Error: {msg}", err=True)
            ctx.exit(1)


@click.group(cls=GeosegGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="geoseg")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug logging).")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress bars, information lines or log output below errors; results and errors still print.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: int, quiet: bool) -> None:
    """Turn large satellite GeoTIFFs into per-field crop maps and per-district crop areas.

    Inputs may be local files, URLs (https://, s3://, gs://, az://) or GDAL virtual paths
    (/vsicurl/, /vsis3/, ...); GDAL's AWS_* and GDAL_HTTP_* settings apply. Outputs are local
    files, or - (standard output) for CSV, JSON and GeoJSON.

    \b
    Start with the demo, which makes a synthetic Punjab region and runs the pipeline:
        geoseg demo
    \b
    Examples:
        geoseg -q polygonize https://host/mask.tif --out - > fields.geojson
        geoseg areas s3://bucket/mask.tif --districts /vsicurl/https://host/districts.geojson \\
            --name-field district --out - > areas.csv
    """
    if quiet and verbose:
        raise click.UsageError("--quiet and -v contradict each other; give one")
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    ctx.obj["quiet"] = quiet
    level = logging.ERROR if quiet else logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")
    if verbose < 2:  # Dask's own INFO chatter only with -vv
        # distributed configures its loggers from dask's config when first imported (later than
        # this), in this process and in every worker it spawns: set it through the environment.
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
        for name in ("distributed", "bokeh", "tornado"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _register() -> None:

    cli.add_command(synth.synth)
    cli.add_command(stack.stack)
    cli.add_command(composite.composite)
    cli.add_command(train.train)
    cli.add_command(evaluate.evaluate)
    cli.add_command(predict.predict)
    cli.add_command(polygonize.polygonize)
    cli.add_command(areas.areas)
    cli.add_command(sample.sample)
    cli.add_command(estimate.estimate)
    cli.add_command(zonal.zonal)
    cli.add_command(query.query)
    cli.add_command(run.run)
    cli.add_command(run.runs)
    cli.add_command(demo.demo)
    cli.add_command(report.report)
    cli.add_command(bench.bench)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    quick_exit()  # return to the shell without a slow final collection over torch's many objects
    cli.main(args=argv, prog_name="geoseg")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
