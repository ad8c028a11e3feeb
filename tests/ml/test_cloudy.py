"""Cloudy seasons: models that read the dates map every pixel that saw enough dates, whatever the
clouds took; the temporal model takes any number of dates; bad stacks fail with one clear line.

One cloudy synthetic region (4 dates, clouds on each) and two short trainings (the temporal
U-TAE and a channel-stacked U-Net with date drop-out) serve every test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.features import geometry_mask

from geoseg.cli.main import cli
from geoseg.errors import CheckpointError, ConfigError, DateLayoutError
from geoseg.io.raster import raster_info
from geoseg.ml.chips import simulate_clouds
from geoseg.ml.evaluate import evaluate
from geoseg.ml.infer import date_input
from geoseg.ml.model import ModelCard, load_checkpoint, read_card
from geoseg.ml.train import train
from geoseg.ops.predict import predict_scene
from geoseg.synth import synthesize
from geoseg.workflow.config import load_workflow
from geoseg.workflow.run import run_workflow

from ..workflow_helpers import write_model, write_scene, write_workflow

FAST = dict(tile=64, chips_per_epoch=32, batch_size=8, seed=0)


@pytest.fixture(scope="module")
def region(tmp_path_factory):  # type: ignore[no-untyped-def]
    return synthesize(tmp_path_factory.mktemp("cloudy"), height=256, width=256, seed=3, dates=4, cloud_fraction=0.35)


@pytest.fixture(scope="module")
def temporal(region, tmp_path_factory):  # type: ignore[no-untyped-def]
    return train(region.scene, region.labels, region.classes, tmp_path_factory.mktemp("m") / "utae", arch="utae",
                 epochs=8, patience=8, **FAST)


@pytest.fixture(scope="module")
def stacked(region, tmp_path_factory):  # type: ignore[no-untyped-def]
    return train(region.scene, region.labels, region.classes, tmp_path_factory.mktemp("m") / "unet",
                 date_dropout=0.4, epochs=3, **FAST)


def _dates_seen(scene: Path) -> np.ndarray:
    """Observed dates per pixel, computed plainly: a date is seen where none of its 4 bands is nodata (0)."""
    with rasterio.open(scene) as s:
        a = s.read()
    t = a.shape[0] // 4
    return (a.reshape(t, 4, *a.shape[1:]) != 0).all(axis=1).sum(axis=0)


def _subset(scene: Path, out: Path, dates: list[int], names: bool = True) -> Path:
    """A stack of some of ``scene``'s dates (0-based), band names kept (or dropped)."""
    with rasterio.open(scene) as s:
        prof = s.profile
        idx = [d * 4 + b + 1 for d in dates for b in range(4)]
        a = s.read(idx)
        desc = [s.descriptions[i - 1] for i in idx]
    prof.update(count=len(idx))
    with rasterio.open(out, "w", **prof) as d:
        d.write(a)
        if names:
            for i, n in enumerate(desc, start=1):
                d.set_band_description(i, n)
    return out


def test_the_card_records_the_dates_and_the_network_reads_validity(region, temporal, stacked) -> None:  # type: ignore[no-untyped-def]
    assert temporal.card.arch == "utae" and temporal.card.dates == list(region.dates)
    assert stacked.card.arch == "unet" and stacked.card.dates == list(region.dates)
    assert stacked.card.training["date_dropout"] == 0.4 and temporal.card.training["date_dropout"] == 0.4
    t = len(region.dates)
    model, _ = load_checkpoint(stacked.model_dir)
    assert model.encoder.conv1.weight.shape[1] == 4 * t + t  # the bands, then a validity plane per date
    tm, _ = load_checkpoint(temporal.model_dir)
    assert tm.encoder.conv1.weight.shape[1] == 4 + 1  # one date's bands and its validity
    # a temporal model's statistics are per band, the same on every date
    m = temporal.card.band_mean
    assert all(m[i * 4:(i + 1) * 4] == m[:4] for i in range(t))


def test_the_temporal_model_learns(temporal) -> None:  # type: ignore[no-untyped-def]
    """A few short epochs: well above predicting the commonest class everywhere, and the loss falls
    (benchmarks/cloudy_season.py trains it properly)."""
    cm = np.asarray(temporal.card.metrics["confusion_matrix"])
    rows = cm.sum(axis=1)
    trivial = rows.max() / rows.sum() / (rows > 0).sum()
    assert temporal.card.metrics["miou"] > 2 * trivial, temporal.card.metrics
    losses = [e["loss"] for e in temporal.card.training["history"]]
    assert losses[-1] < 0.9 * losses[0], losses


@pytest.mark.parametrize("min_dates", [1, 2, 4])
def test_a_pixel_is_mapped_exactly_when_it_saw_min_dates(region, temporal, tmp_path, min_dates) -> None:  # type: ignore[no-untyped-def]
    seen = _dates_seen(region.scene)
    assert 0 < (seen == 0).sum() and (seen < len(region.dates)).mean() > 0.5  # clouds took many dates
    predict_scene(temporal.model_dir, region.scene, tmp_path / "m.tif", confidence=tmp_path / "c.tif",
                  min_dates=min_dates)
    with rasterio.open(tmp_path / "m.tif") as m, rasterio.open(tmp_path / "c.tif") as c:
        mask, conf = m.read(1), c.read(1)
        assert c.count == 2 and c.descriptions == ("confidence", "dates_seen") and c.scales == (1 / 255, 1.0)
        dates_seen = c.read(2)
    np.testing.assert_array_equal(mask != 255, seen >= min_dates)
    np.testing.assert_array_equal(conf > 0, seen >= min_dates)
    np.testing.assert_array_equal(dates_seen, seen)


def test_the_stacked_model_with_dropout_maps_pixels_that_missed_dates(region, stacked, tmp_path) -> None:  # type: ignore[no-untyped-def]
    seen = _dates_seen(region.scene)
    predict_scene(stacked.model_dir, region.scene, tmp_path / "m.tif")
    with rasterio.open(tmp_path / "m.tif") as m:
        mask = m.read(1)
    np.testing.assert_array_equal(mask != 255, seen >= 1)
    all_dates = (seen == len(region.dates)).mean()
    assert (mask != 255).mean() > all_dates + 0.3  # today's valid_rule "all" maps only the pixels that saw all


def test_evaluate_scores_every_mapped_pixel(region, temporal) -> None:  # type: ignore[no-untyped-def]
    seen = _dates_seen(region.scene)
    with rasterio.open(region.labels) as s:
        lab = s.read(1)
    res = evaluate(temporal.model_dir, region.scene, region.labels)
    assert int(res.scores.confusion.sum()) == int(((seen >= 1) & (lab != 255)).sum())
    two = evaluate(temporal.model_dir, region.scene, region.labels, min_dates=2)
    assert int(two.scores.confusion.sum()) == int(((seen >= 2) & (lab != 255)).sum())


def test_the_temporal_model_takes_other_dates_and_the_stacked_one_refuses_them(region, temporal, stacked,
                                                                               tmp_path) -> None:  # type: ignore[no-untyped-def]
    three = _subset(region.scene, tmp_path / "three.tif", [0, 1, 3])
    r = predict_scene(temporal.model_dir, three, tmp_path / "m3.tif")
    with rasterio.open(tmp_path / "m3.tif") as m:
        mask = m.read(1)
    np.testing.assert_array_equal(mask != 255, _dates_seen(three) >= 1)
    assert r.tiles > 0
    card = read_card(temporal.model_dir)
    di = date_input(card, raster_info(three))
    assert di is not None and di.days.tolist() == [float(x) for x in np.asarray(
        date_input(card, raster_info(region.scene)).days)[[0, 1, 3]]]
    with pytest.raises(CheckpointError) as e:
        predict_scene(stacked.model_dir, three, tmp_path / "s3.tif")
    msg = str(e.value)
    assert "holds 3 dates of 4 bands" in msg and "trained on 4 dates of 4 bands" in msg and "--arch utae" in msg
    assert not (tmp_path / "s3.tif").exists()


def test_a_temporal_model_needs_dated_band_names(region, temporal, tmp_path) -> None:  # type: ignore[no-untyped-def]
    plain = _subset(region.scene, tmp_path / "plain.tif", [0, 1, 2, 3], names=False)
    with pytest.raises(DateLayoutError, match=r"plain\.tif: band 1 has no name, which carries no date; .*"
                                              r"'2024-06-15 B04'.*temporal model"):
        predict_scene(temporal.model_dir, plain, tmp_path / "m.tif")
    out = CliRunner().invoke(cli, ["predict", "--model", str(temporal.model_dir), str(plain),
                                   "--out", str(tmp_path / "m.tif")])
    assert out.exit_code != 0 and "Traceback" not in out.output
    assert "carries no date" in out.output and len(out.output.strip().splitlines()) == 1, out.output


def test_dates_out_of_order_are_refused(region, temporal, tmp_path) -> None:  # type: ignore[no-untyped-def]
    swapped = _subset(region.scene, tmp_path / "swapped.tif", [1, 0, 2, 3])
    with pytest.raises(DateLayoutError, match="dates out of order"):
        predict_scene(temporal.model_dir, swapped, tmp_path / "m.tif")


def test_min_dates_beyond_the_stack_is_refused(region, temporal, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=r"min_dates 5: expected a whole number of dates from 1 to 4"):
        predict_scene(temporal.model_dir, region.scene, tmp_path / "m.tif", min_dates=5)


def test_a_tile_where_every_date_is_missing_is_nodata(region, temporal, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with rasterio.open(region.scene) as s:
        prof, a = s.profile, s.read()
    a[:, :128, :128] = 0  # a whole 64 px tile and more: no date at all
    with rasterio.open(tmp_path / "holed.tif", "w", **prof) as d:
        d.write(a)
        for i, n in enumerate(region_names(region), start=1):
            d.set_band_description(i, n)
    predict_scene(temporal.model_dir, tmp_path / "holed.tif", tmp_path / "m.tif", tile=64)
    with rasterio.open(tmp_path / "m.tif") as m:
        mask = m.read(1)
    assert (mask[:128, :128] == 255).all()
    np.testing.assert_array_equal(mask != 255, _dates_seen(tmp_path / "holed.tif") >= 1)


def region_names(region) -> list[str]:  # type: ignore[no-untyped-def]
    with rasterio.open(region.scene) as s:
        return list(s.descriptions)


def test_tiled_prediction_agrees_with_whole_image_prediction(region, temporal, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Tiles with a halo, cores stitched, against the one-piece prediction. This fixture's model has had 8
    short epochs and sits near its decision boundaries almost everywhere, so a tile edge flips more pixels
    than it would for a trained model: the bound here is 95 %. A trained temporal model (benchmarks/README.md,
    cloudy_season.py) agrees on 99.86 % of mapped pixels at the default tile and overlap."""
    predict_scene(temporal.model_dir, region.scene, tmp_path / "whole.tif", tile=256, overlap=0)
    with rasterio.open(tmp_path / "whole.tif") as d:
        whole = d.read(1)
    valid = whole != 255
    r = predict_scene(temporal.model_dir, region.scene, tmp_path / "tiled.tif", tile=128, overlap=32)
    assert r.tiles > 4
    with rasterio.open(tmp_path / "tiled.tif") as d:
        tiled = d.read(1)
    np.testing.assert_array_equal(tiled == 255, ~valid)
    agreement = (tiled[valid] == whole[valid]).mean()
    assert agreement >= 0.95, agreement


@settings(max_examples=40, deadline=None)
@given(t=st.integers(1, 8), p=st.floats(0.0, 0.95), seed=st.integers(0, 2**32 - 1), hole=st.floats(0.0, 1.0))
def test_simulated_clouds_only_take_dates_away(t: int, p: float, seed: int, hole: float) -> None:
    rng = np.random.default_rng(seed)
    real = rng.random((t, 48, 40)) >= hole * 0.5  # the real gaps
    out = simulate_clouds(real, p, np.random.default_rng(seed))
    assert out.shape == real.shape and out.dtype == bool
    assert not (out & ~real).any()  # never invents an observation
    # at least one date escapes the whole-date drop: it keeps part of what it saw (blobs cover at most 60 %)
    assert any(out[i].any() for i in range(t)) or not real.any()
    if p == 0:
        assert (out == real).all()


def test_train_cli_options_and_bad_values(region, tmp_path) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    bad = runner.invoke(cli, ["train", "--image", str(region.scene), "--labels", str(region.labels), "--classes",
                              str(region.classes), "--out", str(tmp_path / "m"), "--date-dropout", "1.5"])
    assert bad.exit_code != 0 and "date_dropout 1.5: expected a probability" in bad.output
    assert len(bad.output.strip().splitlines()) == 1, bad.output
    plain = _subset(region.scene, tmp_path / "plain.tif", [0, 1, 2, 3], names=False)
    bad = runner.invoke(cli, ["train", "--image", str(plain), "--labels", str(region.labels), "--classes",
                              str(region.classes), "--out", str(tmp_path / "m"), "--arch", "utae"])
    assert bad.exit_code != 0 and "carries no date" in bad.output and "a temporal model reads them" in bad.output
    assert not (tmp_path / "m").exists()
    helped = runner.invoke(cli, ["predict", "--help"])
    assert "--min-dates" in helped.output


def test_a_model_that_reads_dates_trains_on_64_px_chips_by_default(region, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Without --chip, a date-reading model trains on 64 px chips (it needs many optimiser steps) while
    its card keeps the tile and halo inference uses; a plain model trains on tile-sized chips."""
    opts = {"tile": 128, "chips_per_epoch": 8, "batch_size": 4, "epochs": 1, "seed": 0, "forest": False}
    dated = train(region.scene, region.labels, region.classes, tmp_path / "d", date_dropout=0.4, **opts).card
    assert dated.training["chip"] == 64 and (dated.tile, dated.overlap) == (128, 16)
    plain = train(region.scene, region.labels, region.classes, tmp_path / "p", valid_rule="any", **opts).card
    assert plain.training["chip"] == 128 and (plain.tile, plain.overlap) == (128, 16)
    given = train(region.scene, region.labels, region.classes, tmp_path / "g", date_dropout=0.4, chip=32,
                  **opts).card
    assert given.training["chip"] == 32


def test_card_checks_for_dates(temporal, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = json.loads((temporal.model_dir / "model.json").read_text())
    for change, says in (({"dates": d["dates"][:3]}, "dates in increasing order that divide in_channels"),
                         ({"dates": d["dates"][::-1]}, "dates in increasing order"),
                         ({"dates": []}, "without dates"),
                         ({"dates": ["2024-6-15"] * 4}, "a list of dates as YYYY-MM-DD")):
        with pytest.raises(CheckpointError, match=says):
            ModelCard.from_json(json.dumps({**d, **change}))


def test_a_workflow_run_maps_with_min_dates_and_counts_the_unobserved(region, temporal, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``min_dates`` in a workflow: the mask, the confidence's dates_seen band and the district table's
    unobserved_ha all follow it, through Dask workers and the tile store."""
    shutil.copy(region.scene, tmp_path / "scene.tif")
    shutil.copytree(temporal.model_dir, tmp_path / "model")
    write_workflow(tmp_path / "wf.yaml", min_dates=2, tile=128, overlap=32, districts={
        "path": str(region.districts), "name_field": "district"},
        outputs={"fields": [], "district_areas": True})
    res = run_workflow(load_workflow(tmp_path / "wf.yaml"))
    assert res.status == "done"
    seen = _dates_seen(region.scene)
    with rasterio.open(res.run_dir / "mask.tif") as m, rasterio.open(res.run_dir / "confidence.tif") as c:
        mask, dates_seen = m.read(1), c.read(2)
    np.testing.assert_array_equal(mask != 255, seen >= 2)
    np.testing.assert_array_equal(dates_seen, seen)
    table = pd.read_csv(next(res.run_dir.glob("district_areas*.csv")))
    unobserved = table.groupby("district")["unobserved_ha"].first().sum()
    with rasterio.open(region.scene) as s:
        inside = ~geometry_mask(gpd.read_file(region.districts).geometry, out_shape=(s.height, s.width),
                                transform=s.transform)
    # 10 m pixels: 0.01 ha of grid area each (ground area differs by the UTM scale, well under 1 %)
    expected = float(((seen < 2) & inside).sum()) * 0.01
    assert unobserved == pytest.approx(expected, rel=0.01), (unobserved, expected)


def test_min_dates_in_a_workflow_is_checked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    write_scene(tmp_path / "scene.tif", 64, 64, rasterio.Affine(10, 0, 560000, 0, -10, 3420000))
    write_model(tmp_path / "model")
    write_workflow(tmp_path / "wf.yaml", min_dates=0)
    with pytest.raises(ConfigError, match=r"wf\.yaml: key 'min_dates': must be at least 1, found 0"):
        load_workflow(tmp_path / "wf.yaml")
