"""The demo: the main job end to end on a bundled synthetic region.

1. Synthesise the region a demo workflow names over real Punjab districts, with known
   per-district crop areas - and, for a workflow whose scene is a season (``workflows/demo.yaml``),
   the region's season of Sentinel-2 L2A products in the layout its sources name
   (``<region>/products/stac``: Earth Search items, per-band COGs, SCL clouds, processing
   baselines before and after the January 2022 offset change).
2. If the workflow's model directory holds no checkpoint, train one with ``geoseg train``'s
   defaults and that region's field polygons (``--fields``: the model learns field edges too)
   on a *second, differently seeded* region (so that what the demo reports is
   out-of-sample), within a time limit; for a season workflow its input is that region's
   products composited by the workflow's own season spec (``geoseg composite``).
3. Run the workflow on Dask exactly as ``geoseg run`` does: the season composited on the
   cluster, tiles, inference on workers, tile store, mask COG, confidence, field polygons,
   district areas, run record.
4. Score the run against the truth: the mask against ``labels.tif`` (mIoU, per-class IoU,
   streamed block by block), the district table against ``truth.csv`` (hectares per
   district and crop, and the error of each) and the run's fields against the region's true
   field polygons (object precision, recall and F1 at IoU > 0.5: :func:`geoseg.field_scores`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from rasterio.windows import Window

from geoseg.classes import load_classes
from geoseg.core.metrics import ConfusionAccumulator, Scores, scores
from geoseg.errors import ConfigError
from geoseg.io.raster import open_raster
from geoseg.core.objects import ObjectScores
from geoseg.ml.train import TrainResult, train
from geoseg.ops.field_scores import field_scores
from geoseg.ops.composite import composite_season
from geoseg.ops.estimate import Estimates, estimate_file
from geoseg.ops.sample import sample_file
from geoseg.report import write_run_report
from geoseg.rundir import QUICKLOOK_PREFIX, RunPaths, RunResult
from geoseg.strict_yaml import load_yaml
from geoseg.synth import SynthRegion, synthesize
from geoseg.synth.products import LAYOUTS as PRODUCT_LAYOUTS
from geoseg.workflow.config import SeasonSpec, load_workflow, read_scenes
from geoseg.workflow.run import run_workflow

__all__ = ["DEMO_WORKFLOW", "DemoResult", "compare_areas", "demo_paths", "run_demo", "score_mask"]

#: The workflow ``geoseg demo`` runs by default (relative to the working directory).
DEMO_WORKFLOW = Path("workflows/demo.yaml")
#: Seeds of the region the demo maps and of the region its model is trained on.
MAP_SEED, TRAIN_SEED = 0, 1
#: Fraction of pixels under cloud on some date in the demo regions' scene.tif (they become nodata).
CLOUD_FRACTION = 0.02
#: The demo season: products every SPACING days from 15 June of SEASON_YEAR (ACQUISITIONS of them),
#: across Sentinel-2's January 2022 offset change.
SEASON_YEAR, ACQUISITIONS, SPACING = 2021, 25, 10


@dataclass(frozen=True, slots=True)
class DemoPaths:
    """Where a demo workflow expects its region and model; ``layout`` is the products' layout of a
    season workflow (``None``: the scene is the region's ``scene.tif``)."""

    workflow: Path
    region_dir: Path
    model_dir: Path
    train_dir: Path
    layout: str | None = None


def demo_paths(workflow: str | Path) -> DemoPaths:
    """Read the scene and model paths of a demo workflow (before they exist).

    The workflow must name exactly one scene by ``path``; the region is synthesised into
    that scene's folder (``scene.tif``, ``labels.tif``, ``districts.gpkg``, ...) and a
    training region beside it (``<folder>-train``).
    """
    p = Path(workflow)
    try:
        data = load_yaml(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{p}: workflow file not found; run the demo from the project folder (it uses workflows/demo.yaml) "
            f"or pass --workflow PATH"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: YAML syntax error ({str(e).splitlines()[0]}); fix the syntax") from None
    scenes = data.get("scenes") if isinstance(data, dict) else None
    one = scenes[0] if isinstance(scenes, list) and len(scenes) == 1 and isinstance(scenes[0], dict) else {}
    season = one.get("season") if isinstance(one.get("season"), dict) else None
    if "path" not in one and season is None:
        raise ConfigError(f"{p}: key 'scenes': a demo workflow names exactly one scene, by 'path' or as a 'season' "
                          f"(see workflows/demo.yaml)")
    if not isinstance(data.get("model"), str):
        raise ConfigError(f"{p}: key 'model': expected the model directory the demo trains into")
    base = p.resolve().parent
    model = (base / data["model"]).resolve()
    if season is not None:
        sources = season.get("sources")
        first = sources[0] if isinstance(sources, list) and sources else sources
        folder = (base / str(first)).resolve() if isinstance(first, str) else None
        if folder is None or folder.parent.name != "products" or folder.name not in PRODUCT_LAYOUTS:
            raise ConfigError(f"{p}: key 'scenes[0].season.sources': the demo writes <region>/products/<layout> "
                              f"({', '.join(PRODUCT_LAYOUTS)}) and composites it; found {first!r}")
        region = folder.parent.parent
        return DemoPaths(p, region, model, region.with_name(region.name + "-train"), folder.name)
    scene = (base / one["path"]).resolve()
    if scene.name != "scene.tif":
        raise ConfigError(f"{p}: key 'scenes': the demo writes <folder>/scene.tif, found {scene.name!r}")
    region = scene.parent
    return DemoPaths(p, region, model, region.with_name(region.name + "-train"))


def _region(paths: DemoPaths, folder: Path, size: int, seed: int) -> SynthRegion:
    """A demo region, with its season of products when the workflow composites one."""
    if paths.layout is None:
        return synthesize(folder, height=size, width=size, seed=seed, cloud_fraction=CLOUD_FRACTION)
    # the products carry their own clouds (SCL); labels.tif is then nodata on the collar only
    return synthesize(folder, height=size, width=size, seed=seed, cloud_fraction=0.0,
                      season_year=SEASON_YEAR, products=paths.layout, acquisitions=ACQUISITIONS, spacing=SPACING)


def score_mask(mask: str | Path, labels: str | Path, class_names: list[str], rows: int = 512) -> Scores:
    """Confusion of ``mask`` against ``labels`` (same grid; 255 ignored), streamed in row blocks."""
    acc = ConfusionAccumulator(len(class_names))
    with open_raster(mask) as m, open_raster(labels) as lab:
        if (m.width, m.height, m.transform) != (lab.width, lab.height, lab.transform):
            raise ConfigError(f"{mask}: not on the grid of {labels}; cannot score it pixel by pixel")
        for r0 in range(0, m.height, rows):
            w = Window(0, r0, m.width, min(rows, m.height - r0))
            pred, truth = m.read(1, window=w), lab.read(1, window=w)
            acc.update(pred, truth, valid=pred != 255)
    return scores(acc.matrix, class_names)


def compare_areas(predicted: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Join a district table (``geoseg areas``) with a synthetic ``truth.csv`` table.

    Returns one row per (district, crop) present in either, with ``truth_ha``,
    ``predicted_ha``, ``error_ha`` and ``error_pct`` (of the truth; NaN where the truth is 0).
    """
    t = truth.groupby(["district", "class_id", "crop"], as_index=False)["hectares"].sum()
    t = t.rename(columns={"hectares": "truth_ha"})
    p = predicted[["district", "class_id", "crop", "area_ha"]].rename(columns={"area_ha": "predicted_ha"})
    out = pd.merge(t, p, on=["district", "class_id", "crop"], how="inner")
    out["error_ha"] = out["predicted_ha"] - out["truth_ha"]
    out["error_pct"] = 100 * out["error_ha"] / out["truth_ha"].where(out["truth_ha"] > 0)
    return out.sort_values(["district", "class_id"]).reset_index(drop=True)


@dataclass
class DemoResult:
    """What the demo did, where its outputs are and how they score against the truth."""

    paths: DemoPaths
    region: SynthRegion
    trained: TrainResult | None
    run: RunResult
    scores: Scores
    areas: pd.DataFrame
    crop_ids: list[int]
    seconds: dict[str, float] = field(default_factory=dict)
    #: The run's fields against the region's true field polygons, object by object.
    fields: ObjectScores | None = None
    #: Areas estimated from a reference sample of the run, labelled from the truth.
    estimate: Estimates | None = None
    #: The truth's hectares per crop (all districts), for the estimate's lines.
    truth_ha: dict[str, float] = field(default_factory=dict)

    def lines(self) -> list[str]:
        s = self.scores
        iou = ", ".join(f"{n} {v:.3f}" for n, v in zip(s.class_names, s.iou))
        out = [self.region.summary(), ""]
        if self.trained is not None:
            t = self.trained
            out.append(f"trained {self.paths.model_dir} on {self.paths.train_dir} (seed {TRAIN_SEED}): "
                       f"{t.epochs_run} epochs in {t.seconds:.0f} s ({t.stop_reason}), "
                       f"validation mIoU {t.card.metrics.get('miou', float('nan')):.3f}")
        else:
            out.append(f"model: {self.paths.model_dir} (already trained; delete it to retrain)")
        r = self.run
        out += [
            f"ran {self.paths.workflow} on Dask: run {r.run_id}, {r.tiles} tiles "
            f"({r.tiles_skipped} reused from the store)",
            "stage timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in r.timings.items()),
            "",
            f"mask vs labels.tif ({s.pixels:,} observed pixels): mIoU {s.miou:.3f}; per class: {iou}; "
            f"pixel accuracy {s.pixel_accuracy:.3f}",
        ]
        if self.fields is not None:
            out.append(f"fields vs the {self.fields.true_fields:,} true fields: " + self.fields.line().split(": ", 1)[1])
        crops = self.areas[self.areas.class_id.isin(self.crop_ids)]
        out.append("crop area per district (predicted from the mask vs the generator's truth):")
        out.append(f"  {'district':<22} {'crop':<10} {'truth ha':>10} {'predicted ha':>13} {'error':>8}")
        for row in crops.itertuples():
            err = f"{row.error_pct:+.1f}%" if np.isfinite(row.error_pct) else "n/a"
            out.append(f"  {row.district:<22} {row.crop:<10} {row.truth_ha:>10,.1f} {row.predicted_ha:>13,.1f} {err:>8}")
        tot_t, tot_p = crops.truth_ha.sum(), crops.predicted_ha.sum()
        big = crops[crops.truth_ha >= 100]
        if len(big):
            worst = big.loc[big.error_pct.abs().idxmax()]
            out.append(f"  all crops: truth {tot_t:,.1f} ha, predicted {tot_p:,.1f} ha ({100 * (tot_p - tot_t) / tot_t:+.2f}%); "
                       f"largest error among district crops of >= 100 ha: {worst.district} {worst.crop} "
                       f"{worst.error_pct:+.1f}%")
        if self.estimate is not None:
            e = self.estimate
            head = (f"reference sample ({e.summary['points_labelled']:,} points, labelled from labels.tif as a "
                    f"field team would): overall accuracy {e.summary['overall_accuracy']:.3f}; estimated hectares "
                    f"with 95 % CIs:")
            out += ["", head, f"  {'crop':<10} {'truth ha':>10} {'mapped ha':>10} {'estimated ha':>13} {'95 % CI':>21}"]
            for row in e.areas[e.areas.class_id.isin(self.crop_ids)].itertuples():
                ci = f"{row.ci_low_ha:,.0f} - {row.ci_high_ha:,.0f}"
                out.append(f"  {row.crop:<10} {self.truth_ha.get(row.crop, float('nan')):>10,.1f} "
                           f"{row.mapped_ha:>10,.1f} {row.estimated_ha:>13,.1f} {ci:>21}")
        out += ["", f"outputs in {r.run_dir}:"]
        out += [f"  {k}: {v}" for k, v in r.outputs.items()]
        out.append("demo timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items()))
        look = [f"report: {r.outputs['report_html']}"] if r.outputs.get("report_html") else []
        look += [f"quicklook: {v}" for k, v in r.outputs.items() if k.startswith(QUICKLOOK_PREFIX)]
        if look:
            out += ["", "see the result:"] + ["  " + line for line in look]
        return out


def _season_spec(paths: DemoPaths) -> SeasonSpec:
    """The season spec of the demo workflow (read once its region's products exist)."""
    season = read_scenes(paths.workflow)[0].season
    if season is None:  # demo_paths said otherwise
        raise ConfigError(f"{paths.workflow}: key 'scenes[0]': expected a season")
    return season


def run_demo(
    workflow: str | Path = DEMO_WORKFLOW,
    *,
    size: int = 2048,
    train_minutes: float = 4.0,
    train_epochs: int = 40,
    retrain: bool = False,
    say: Callable[[str], None] = lambda s: None,
    progress: Callable[[int, int], None] | None = None,
    epoch: Callable[[int, int, dict[str, Any]], None] | None = None,
) -> DemoResult:
    """Run the demo workflow end to end (see the module notes) and score it.

    Parameters
    ----------
    workflow : path
        A demo workflow (one scene named by ``path``; default ``workflows/demo.yaml``).
    size : int
        Height and width of the synthetic regions in pixels (10 m).
    train_minutes, train_epochs : float, int
        Limits for training the demo model (only when the model directory has none).
    retrain : bool
        Train the model even if one exists.
    say, progress, epoch
        Status lines; tile progress ``(done, total)``; per-epoch training records.
    """
    paths = demo_paths(workflow)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    say(f"synthesising {size} x {size} px region into {paths.region_dir}"
        + (f" with a season of {paths.layout} products" if paths.layout else ""))
    region = _region(paths, paths.region_dir, size, MAP_SEED)
    seconds["synthesise"] = time.perf_counter() - t

    trained = None
    if retrain or not (paths.model_dir / "model.json").is_file():
        t = time.perf_counter()
        say(f"no model in {paths.model_dir}: training one on a second region (seed {TRAIN_SEED}) "
            f"for at most {train_minutes:g} min")
        tr = _region(paths, paths.train_dir, size, TRAIN_SEED)
        image = tr.scene
        if paths.layout is not None:  # the training input is made as the run will make the map's
            season = _season_spec(paths)
            image = tr.out_dir / "season.tif"
            say(f"compositing the training region's products ({season.periods}, {season.start} .. {season.end})")
            kwargs = season.kwargs()
            kwargs["sources"] = [tr.out_dir / "products" / paths.layout]
            composite_season(image, overwrite=True, **kwargs)
        trained = train(image, tr.labels, tr.classes, paths.model_dir, epochs=train_epochs,
                        time_limit=train_minutes, seed=0, progress=epoch, fields=tr.fields)
        seconds["train"] = time.perf_counter() - t

    t = time.perf_counter()
    cfg = load_workflow(paths.workflow)
    if cfg.districts is None or not cfg.outputs.district_areas:
        raise ConfigError(f"{paths.workflow}: a demo workflow needs districts and outputs.district_areas: true")
    say(f"running {paths.workflow} on Dask")
    res = run_workflow(cfg, progress=progress, say=say)
    seconds["run"] = time.perf_counter() - t

    t = time.perf_counter()
    table = load_classes(region.classes)
    names = [c.name for c in table]
    sc = score_mask(RunPaths(res.run_dir).mask, region.labels, names)
    predicted = pd.read_csv(RunPaths(res.run_dir).district_areas("csv"))
    areas = compare_areas(predicted, region.truth)
    seconds["score"] = time.perf_counter() - t
    crop_ids = [c.id for c in table if c.crop]
    conf = RunPaths(res.run_dir).confidence
    objects = field_scores(RunPaths(res.run_dir).mask, region.fields, classes=table, class_field="crop",
                           confidence=conf if conf.exists() else None)
    seconds["score"] = time.perf_counter() - t
    t = time.perf_counter()
    say("drawing a reference sample from the run and labelling it from the truth (geoseg sample, geoseg estimate)")
    est = reference_estimate(res.run_dir, region.labels, names)
    if res.outputs.get("report_html"):
        write_run_report(res.run_dir)  # the report now shows the estimated areas
    seconds["estimate"] = time.perf_counter() - t
    truth_ha = {str(k): float(v) for k, v in region.truth.groupby("crop")["hectares"].sum().items()}
    return DemoResult(paths, region, trained, res, sc, areas, crop_ids, seconds, objects, est, truth_ha)


def reference_estimate(run_dir: Path, labels: Path, class_names: list[str]) -> Estimates:
    """``geoseg sample`` (class x district strata) on a run, each point labelled with the truth's class
    under it (the field team of a synthetic region), then ``geoseg estimate``; written into the run."""
    folder, _ = sample_file(run_dir, by_district=True, target_se=0.02, minimum=30, seed=0, overwrite=True)
    points = pd.read_csv(folder / "points.csv")
    with open_raster(labels) as src:
        truth = np.array([v[0] for v in src.sample(zip(points.x, points.y, strict=True))])
    points["reference"] = [class_names[v] if v < len(class_names) else "" for v in truth]
    labelled = folder / "labelled_from_truth.csv"
    points.to_csv(labelled, index=False)
    return estimate_file(run_dir, labelled, overwrite=True)[1]
