"""Test-time augmentation: the averaged logits equal a plain numpy computation of the same
average, an equivariant model is unchanged by it, and it reaches predict, evaluate, the CLI and
the workflow's workers; bad modes fail with the list of good ones."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.cli.main import cli
from geoseg.errors import ConfigError
from geoseg.ml.evaluate import evaluate
from geoseg.ml.tta import TTA_MODES, TestTimeAugmented, check_tta, with_tta
from geoseg.ops.predict import predict_scene
from geoseg.workflow.config import load_workflow
from geoseg.workflow.run import run_workflow

from ..workflow_helpers import write_model, write_scene, write_workflow

TRANSFORM = rasterio.Affine(10, 0, 560000, 0, -10, 3420000)


def _net(seed: int = 0) -> torch.nn.Module:
    """A small conv net that is not flip-equivariant (3x3 kernels with random weights)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 5, 3, padding=1)).eval()


def _numpy_reference(net: torch.nn.Module, x: np.ndarray, mode: str) -> np.ndarray:
    """The average computed with numpy's own flips and rotations, one transform at a time."""
    outs = []
    for k, flip in TTA_MODES[mode]:
        t = np.rot90(x, k, axes=(-2, -1))
        t = t[..., ::-1] if flip else t
        with torch.no_grad():
            y = net(torch.from_numpy(np.ascontiguousarray(t))).numpy()
        y = y[..., ::-1] if flip else y
        outs.append(np.rot90(y, -k, axes=(-2, -1)))
    return np.mean(outs, axis=0)


@settings(max_examples=25, deadline=None)
@given(h=st.integers(4, 24), w=st.integers(4, 24), mode=st.sampled_from(["flips", "d4"]), seed=st.integers(0, 9))
def test_averaged_logits_equal_a_numpy_computation(h: int, w: int, mode: str, seed: int) -> None:
    net = _net(seed)
    x = np.random.default_rng(seed).normal(size=(2, 3, h, w)).astype(np.float32)
    with torch.no_grad():
        got = TestTimeAugmented(net, mode)(torch.from_numpy(x)).numpy()
    assert got.shape == (2, 5, h, w)
    np.testing.assert_allclose(got, _numpy_reference(net, x, mode), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        plain = net(torch.from_numpy(x)).numpy()
    assert np.abs(got - plain).max() > 1e-4  # the net is not equivariant: the average differs


def test_an_equivariant_model_is_unchanged() -> None:
    torch.manual_seed(1)
    net = torch.nn.Conv2d(3, 4, 1).eval()  # a 1x1 convolution commutes with every flip and rotation
    x = torch.randn(1, 3, 16, 32)
    with torch.no_grad():
        np.testing.assert_allclose(with_tta(net, "d4")(x).numpy(), net(x).numpy(), rtol=1e-5, atol=1e-6)


def test_modes_and_bad_modes() -> None:
    net = _net()
    assert with_tta(net, None) is net and with_tta(net, "none") is net
    wrapped = with_tta(net, "flips")
    assert len(wrapped.transforms) == 4 and not wrapped.training
    assert len(with_tta(net, "d4").transforms) == 8
    for bad in ("rot", "", 4):
        with pytest.raises(ConfigError, match=r"tta .*: expected one of none, flips, d4"):
            check_tta(bad)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("tta")
    write_scene(d / "scene.tif", 128, 160, TRANSFORM)
    write_model(d / "model")
    return d


def _read(path) -> np.ndarray:  # type: ignore[no-untyped-def]
    with rasterio.open(path) as s:
        return s.read(1)


def test_predict_and_evaluate_take_tta(scene, tmp_path) -> None:  # type: ignore[no-untyped-def]
    plain = predict_scene(scene / "model", scene / "scene.tif", tmp_path / "plain.tif", tile=64, overlap=16)
    flips = predict_scene(scene / "model", scene / "scene.tif", tmp_path / "flips.tif", tile=64, overlap=16,
                          tta="flips")
    assert plain.tiles == flips.tiles
    a, b = _read(tmp_path / "plain.tif"), _read(tmp_path / "flips.tif")
    np.testing.assert_array_equal(a == 255, b == 255)  # nodata does not move
    assert (a != b).mean() > 0.01  # an untrained net is far from equivariant: the average changes classes
    with pytest.raises(ConfigError, match="tta 'rot'"):
        predict_scene(scene / "model", scene / "scene.tif", tmp_path / "x.tif", tta="rot")
    assert not (tmp_path / "x.tif").exists()
    # evaluate with the flips map as labels: the same TTA scores 1.0 where the plain model does not
    ev = evaluate(scene / "model", scene / "scene.tif", tmp_path / "flips.tif", tile=64, overlap=16, tta="flips",
                  device="cpu")
    assert ev.scores.pixel_accuracy == 1.0
    ev0 = evaluate(scene / "model", scene / "scene.tif", tmp_path / "flips.tif", tile=64, overlap=16, device="cpu")
    assert ev0.scores.pixel_accuracy < 0.99


def test_the_cli_takes_tta(scene, tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = CliRunner().invoke(cli, ["predict", "--model", str(scene / "model"), str(scene / "scene.tif"),
                                   "--out", str(tmp_path / "m.tif"), "--tile", "64", "--overlap", "16",
                                   "--tta", "d4"])
    assert res.exit_code == 0, res.output
    ref = predict_scene(scene / "model", scene / "scene.tif", tmp_path / "ref.tif", tile=64, overlap=16, tta="d4")
    assert ref.tiles > 0
    np.testing.assert_array_equal(_read(tmp_path / "m.tif"), _read(tmp_path / "ref.tif"))
    bad = CliRunner().invoke(cli, ["predict", "--model", str(scene / "model"), str(scene / "scene.tif"),
                                   "--out", str(tmp_path / "n.tif"), "--tta", "rot"])
    assert bad.exit_code == 2 and "'rot' is not one of 'none', 'flips', 'd4'" in bad.output


def test_a_workflow_run_uses_tta_on_its_workers(scene, tmp_path) -> None:  # type: ignore[no-untyped-def]
    for name in ("scene.tif", "model"):
        (tmp_path / name).symlink_to(scene / name)
    write_workflow(tmp_path / "wf.yaml", tta="flips")
    cfg = load_workflow(tmp_path / "wf.yaml")
    assert cfg.tta == "flips"
    res = run_workflow(cfg)
    mask = _read(next(res.run_dir.glob("*mask*.tif")))
    ref = predict_scene(scene / "model", scene / "scene.tif", tmp_path / "ref.tif", tile=64, overlap=16,
                        tta="flips")
    assert ref.tiles > 0
    agree = (mask == _read(tmp_path / "ref.tif")).mean()
    plain = predict_scene(scene / "model", scene / "scene.tif", tmp_path / "plain.tif", tile=64, overlap=16)
    assert plain.tiles > 0
    assert agree > 0.999 and agree > (mask == _read(tmp_path / "plain.tif")).mean() + 0.01
    write_workflow(tmp_path / "bad.yaml", tta="rot")
    with pytest.raises(ConfigError, match=r"bad\.yaml: key 'tta': 'rot'; expected none, flips"):
        load_workflow(tmp_path / "bad.yaml")
