"""The per-pixel forest fused with the network: both walks equal scikit-learn's
``predict_proba``, the fused output equals a plain numpy mix of the network's and scikit-learn's
probabilities, damaged forest files are refused by name, the weight is the best on the
validation pixels, and the forest reaches train, predict, evaluate, the CLI and the workflow's
workers (and stays off with --no-forest)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file
from sklearn.ensemble import RandomForestClassifier

from geoseg.cli.main import cli
from geoseg.core.metrics import confusion_matrix, scores
from geoseg.errors import CheckpointError
from geoseg.ml.evaluate import evaluate
from geoseg.ml.forest import (
    MAX_DEPTH,
    WEIGHTS,
    card_forest,
    choose_weight,
    fit_forest,
    forest_proba,
    load_forest,
    mix_loss,
    with_forest,
)
from geoseg.ml.infer import normalise
from geoseg.ml.model import FOREST, load_checkpoint, read_card, save_checkpoint, sha256_file
from geoseg.ml.train import train
from geoseg.ops.predict import predict_scene
from geoseg.synth import synthesize
from geoseg.workflow.config import load_workflow
from geoseg.workflow.run import run_workflow

from ..workflow_helpers import write_model, write_scene, write_workflow

TRANSFORM = rasterio.Affine(10, 0, 560000, 0, -10, 3420000)
FAST = {"tile": 64, "chips_per_epoch": 32, "batch_size": 8}


def _pixels(seed: int, n: int, c: int, k: int, nan: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixels whose class follows two of their values, with noise, NaN at share ``nan`` and
    class 0 left out (so the forest's columns must be mapped onto the model's classes)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, c)).astype(np.float32)
    y = 1 + (np.digitize(x[:, 0], [-0.5, 0.5]) + (x[:, -1] > 0) + (rng.random(n) < 0.1)) % (k - 1)
    x[rng.random(x.shape) < nan] = np.nan
    return x, y.astype(np.int64)


def _reference(x: np.ndarray, y: np.ndarray, k: int, seed: int, trees: int, leaves: int, test: np.ndarray) -> np.ndarray:
    rf = RandomForestClassifier(trees, max_leaf_nodes=leaves, max_depth=MAX_DEPTH, random_state=seed).fit(x, y)
    out = np.zeros((test.shape[0], k))
    out[:, rf.classes_] = rf.predict_proba(test)
    return out


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), c=st.integers(1, 6), k=st.integers(3, 6), nan=st.sampled_from([0.0, 0.05]),
       h=st.integers(1, 9), w=st.integers(1, 9))
def test_both_walks_equal_scikit_learn(seed: int, c: int, k: int, nan: float, h: int, w: int) -> None:
    x, y = _pixels(seed, 600, c, k, nan)
    forest = fit_forest(x, y, k, seed, trees=6, max_leaves=40)
    test, _ = _pixels(seed + 1, 2 * h * w, c, k, nan)
    ref = _reference(x, y, k, seed, 6, 40, test)
    img = torch.from_numpy(np.ascontiguousarray(test.reshape(2, h, w, c).transpose(0, 3, 1, 2)))
    for walk in ("sklearn", "torch"):
        p = forest_proba(forest, img, walk).permute(0, 2, 3, 1).reshape(-1, k).numpy()
        np.testing.assert_allclose(p, ref, atol=1e-6, err_msg=walk)


def test_fused_output_is_the_mix_of_the_two_probabilities() -> None:
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 4, 3, padding=1).eval()
    x, y = _pixels(1, 2000, 3, 4, 0.0)
    forest = fit_forest(x, y, 4, 0, trees=10, max_leaves=64)
    img = torch.from_numpy(np.ascontiguousarray(_pixels(2, 2 * 12 * 10, 3, 4, 0.0)[0].reshape(2, 12, 10, 3)
                                                .transpose(0, 3, 1, 2)))
    assert with_forest(net, forest, 0.0) is net and with_forest(net, None, 0.7) is net
    fused = with_forest(net, forest, 0.3)
    with torch.inference_mode():
        got = torch.softmax(fused(img), dim=1).numpy()
        p_net = torch.softmax(net(img), dim=1).numpy()
    pixels = img.permute(0, 2, 3, 1).reshape(-1, 3).numpy()
    p_forest = _reference(x, y, 4, 0, 10, 64, pixels).reshape(2, 12, 10, 4).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, 0.7 * p_net + 0.3 * p_forest, atol=1e-5)


def test_the_weight_has_the_lowest_class_balanced_brier_score() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    net = rng.dirichlet(np.ones(3), 400)
    trees = rng.dirichlet(np.ones(3), 400)
    net[:200][np.arange(200), y[:200]] += 2 * rng.random(200)  # each knows what the other does not
    trees[200:][np.arange(200), y[200:]] += 2 * rng.random(200)
    net /= net.sum(axis=1, keepdims=True)
    trees /= trees.sum(axis=1, keepdims=True)
    w, loss, miou = choose_weight(net, trees, y, ["a", "b", "c"])
    assert set(loss) == set(miou) == set(WEIGHTS)
    for v in WEIGHTS:  # each weight's scores, computed plainly
        p = (1 - v) * net + v * trees
        pred = p.argmax(axis=1)
        ious = [((pred == c) & (y == c)).sum() / ((pred == c) | (y == c)).sum() for c in range(3)]
        assert miou[v] == pytest.approx(np.mean(ious))
        onehot = np.eye(3)[y]
        assert loss[v] == pytest.approx(np.mean([((p - onehot)[y == c] ** 2).sum(axis=1).mean() for c in range(3)]))
        assert mix_loss(p, y, 3) == pytest.approx(loss[v])
    assert loss[w] == min(loss.values()) and 0 < w < 1
    # a confidently wrong network: the more forest, the better
    wrong = np.full((300, 3), 0.05)
    yy = np.arange(300) % 3
    wrong[np.arange(300), (yy + 1) % 3] = 0.9
    right = np.full((300, 3), 0.2)
    right[np.arange(300), yy] = 0.6
    w, loss, miou = choose_weight(wrong, right, yy, ["a", "b", "c"])
    assert w == 1.0 and miou[1.0] == 1.0 and miou[0.5] < 0.5
    same = np.eye(3)[y]  # both perfect: every weight ties, and the even mix is taken
    assert choose_weight(same, same, y, ["a", "b", "c"])[0] == 0.5


def _forest_file(tmp_path, **change) -> str:  # type: ignore[no-untyped-def]
    x, y = _pixels(0, 500, 3, 4, 0.0)
    arrays = fit_forest(x, y, 4, 0, trees=3, max_leaves=16).tensors()
    arrays.update(change)
    path = tmp_path / "f.safetensors"
    save_file(arrays, str(path))
    return str(path)


def test_damaged_forest_files_are_refused_by_name(tmp_path) -> None:  # type: ignore[no-untyped-def]
    good = load_forest(_forest_file(tmp_path), 3, 4)
    assert good.n_trees == 3 and good.n_classes == 4
    ch = good.children.copy()
    inner = np.flatnonzero(ch[:, 0] != np.arange(len(ch)))
    ch[inner[1], 0] = 0  # a child before its parent: a walk could loop
    cases = [
        ({"children": ch}, "child rows that are not after their parent"),
        ({"feature": np.where(good.feature > 0, 7, 0).astype(np.int32)}, "split channels up to 7, but the model reads 3"),
        ({"threshold": good.threshold.astype(np.float64)}, "threshold is float64, expected float32"),
        ({"depth": np.array([good.depth + 3], np.int32)}, f"stated depth of {good.depth + 3}"),
        ({"value": good.value[:, :2].copy()}, "expected trees of 4 classes"),
    ]
    for change, message in cases:
        path = _forest_file(tmp_path, **change)
        with pytest.raises(CheckpointError, match=message) as e:
            load_forest(path, 3, 4)
        assert str(e.value).startswith(path) and "--no-forest" in str(e.value)
    (tmp_path / "junk.safetensors").write_bytes(b"not a forest")
    with pytest.raises(CheckpointError, match="junk.safetensors: not a readable safetensors file"):
        load_forest(tmp_path / "junk.safetensors", 3, 4)


@pytest.fixture(scope="module")
def region(tmp_path_factory):  # type: ignore[no-untyped-def]
    return synthesize(tmp_path_factory.mktemp("region"), height=192, width=256, seed=5)


@pytest.fixture(scope="module")
def fused(region, tmp_path_factory):  # type: ignore[no-untyped-def]
    return train(region.scene, region.labels, region.classes, tmp_path_factory.mktemp("m") / "m", epochs=2,
                 seed=0, **FAST)


def test_training_fits_keeps_and_records_the_forest(region, fused, tmp_path) -> None:  # type: ignore[no-untyped-def]
    card = fused.card
    rec = card.training["forest"]
    assert 0 < card.forest["weight"] == rec["weight"] <= 1
    assert card.forest["sha256"] == sha256_file(fused.model_dir / FOREST)
    assert set(rec["miou_by_weight"]) == set(rec["brier_by_weight"]) == {f"{w:.1f}" for w in WEIGHTS}
    assert rec["brier_by_weight"][f"{rec['weight']:.1f}"] == min(rec["brier_by_weight"].values())
    assert rec["pixels_refit"] > rec["pixels"]  # fitted again with the validation blocks' pixels
    assert rec["fused_miou"] == rec["miou_by_weight"][f"{rec['weight']:.1f}"] == pytest.approx(card.metrics["miou"],
                                                                                             abs=1e-6)
    assert rec["network_miou"] == rec["miou_by_weight"]["0.0"]
    assert card.metrics["network_miou"] == pytest.approx(rec["network_miou"], abs=1e-6)
    assert rec["pixels"] > 1000 and rec["validation_pixels"] > 1000
    assert "fused with a per-pixel forest" in fused.summary()
    forest = card_forest(fused.model_dir, card)
    assert forest is not None and forest.n_trees == rec["trees"]
    # predict and evaluate use it; the mask it gives is what evaluate scores as perfect
    a = predict_scene(fused.model_dir, region.scene, tmp_path / "fused.tif", tile=64, overlap=8)
    b = predict_scene(fused.model_dir, region.scene, tmp_path / "net.tif", tile=64, overlap=8, forest=False)
    assert a.tiles == b.tiles
    with rasterio.open(tmp_path / "fused.tif") as s, rasterio.open(tmp_path / "net.tif") as t:
        fa, fb = s.read(1), t.read(1)
    np.testing.assert_array_equal(fa == 255, fb == 255)
    assert (fa != fb).mean() > 0.01
    assert evaluate(fused.model_dir, region.scene, tmp_path / "fused.tif").scores.pixel_accuracy == 1.0
    assert evaluate(fused.model_dir, region.scene, tmp_path / "fused.tif", forest=False).scores.pixel_accuracy < 0.99


def test_a_changed_or_missing_forest_file_is_refused(fused, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    d = tmp_path / "m"
    shutil.copytree(fused.model_dir, d)
    with (d / FOREST).open("r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x01")
    with pytest.raises(CheckpointError, match=r"forest\.safetensors: sha256 .* does not match model\.json"):
        card_forest(d, read_card(d))
    (d / FOREST).unlink()
    with pytest.raises(CheckpointError, match=r"forest\.safetensors: missing, but model\.json fuses a forest"):
        predict_scene(d, fused.card.training["images"][0], tmp_path / "x.tif")
    assert not (tmp_path / "x.tif").exists()
    assert predict_scene(d, fused.card.training["images"][0], tmp_path / "y.tif", forest=False).tiles > 0
    bad = json.loads((d / "model.json").read_text())
    bad["forest"] = {"weight": 1.5, "sha256": "0" * 64}
    (d / "model.json").write_text(json.dumps(bad))
    with pytest.raises(CheckpointError, match=r"forest is .*; expected \{\} \(no forest\) or a mapping with weight"):
        read_card(d)


def test_no_forest_trains_and_maps_the_network_alone(region, tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = CliRunner().invoke(cli, ["train", "--image", str(region.scene), "--labels", str(region.labels),
                                   "--classes", str(region.classes), "--out", str(tmp_path / "m"), "--tile", "64",
                                   "--epochs", "1", "--batch-size", "2", "--no-forest"])
    assert res.exit_code == 0, res.output
    card = read_card(tmp_path / "m")
    assert card.forest == {} and "forest" not in card.training and not (tmp_path / "m" / FOREST).exists()
    assert "per-pixel forest" not in res.output


@pytest.fixture(scope="module")
def forest_model(tmp_path_factory):  # type: ignore[no-untyped-def]
    """An untrained network with a forest at weight 1 whose classes follow the first band: the fused
    map must be the forest's, pixel for pixel."""
    d = tmp_path_factory.mktemp("fm")
    write_scene(d / "scene.tif", 128, 160, TRANSFORM)
    write_model(d / "net")
    model, card = load_checkpoint(d / "net")
    with rasterio.open(d / "scene.tif") as s:
        a = s.read()
    valid = (a != 0).all(axis=0)
    x = normalise(a, valid, card.band_mean, card.band_std).reshape(4, -1).T[valid.reshape(-1)]
    y = np.digitize(x[:, 0], np.quantile(x[:, 0], [0.3, 0.7])).astype(np.int64) + 1
    forest = fit_forest(np.ascontiguousarray(x), y, len(card.classes), 0, trees=8)
    save_checkpoint(d / "model", model, dataclasses.replace(card, forest={"weight": 1.0}), forest=forest)
    expected = np.full(valid.shape, 255, np.uint8)
    expected[valid] = forest_proba(forest, torch.from_numpy(np.ascontiguousarray(x.T[None, :, :, None]))
                                   )[0, :, :, 0].argmax(dim=0).numpy()
    return d, expected


def test_the_cli_and_a_workflow_use_the_forest(forest_model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, expected = forest_model
    res = CliRunner().invoke(cli, ["predict", "--model", str(d / "model"), str(d / "scene.tif"),
                                   "--out", str(tmp_path / "m.tif")])
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "m.tif") as s:
        np.testing.assert_array_equal(s.read(1), expected)
    for name in ("scene.tif", "model"):
        (tmp_path / name).symlink_to(d / name)
    run = run_workflow(load_workflow(write_workflow(tmp_path / "wf.yaml")))
    with rasterio.open(next(run.run_dir.glob("*mask*.tif"))) as s:
        np.testing.assert_array_equal(s.read(1), expected)
    cfg = load_workflow(write_workflow(tmp_path / "off.yaml", name="off", forest=False))
    assert cfg.forest is False
    with rasterio.open(next(run_workflow(cfg).run_dir.glob("*mask*.tif"))) as s:
        off = s.read(1)
    assert (off != expected).mean() > 0.05  # the untrained network alone
    write_workflow(tmp_path / "bad.yaml", forest="yes")
    with pytest.raises(Exception, match=r"bad\.yaml: key 'forest': expected bool, found str 'yes'"):
        load_workflow(tmp_path / "bad.yaml")


def test_scores_helper_matches_choose_weight_at_the_ends() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 300)
    net, trees = rng.dirichlet(np.ones(4), 300), rng.dirichlet(np.ones(4), 300)
    _, _, found = choose_weight(net, trees, y, list("abcd"))
    assert found[0.0] == scores(confusion_matrix(net.argmax(1), y, 4), list("abcd")).miou
    assert found[1.0] == scores(confusion_matrix(trees.argmax(1), y, 4), list("abcd")).miou
