"""Hostile model checkpoints (issue 17): a card that contradicts itself or its weights, a card
without the weights hash, weights holding NaN, and a model whose outputs overflow.

Each is refused with one line naming the file, what was found, what was expected and the fix,
before any large allocation; the messages asserted are those listed in docs/errors.md (Models).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from affine import Affine
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from geoseg.classes import default_classes
from geoseg.cli.main import cli
from geoseg.errors import CheckpointError
from geoseg.ml.infer import predict_batch
from geoseg.ml.model import ModelCard, build_from_card, load_checkpoint, read_card, save_checkpoint, sha256_file

from ..workflow_helpers import write_model, write_scene

TF = Affine(10, 0, 560000, 0, -10, 3420000)
#: Peak memory a refused load may add to a process that has imported torch and smp.
MAX_GROWTH_MB = 300


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-band U-Net checkpoint and a 64 x 64 px scene (3 nodata rows), shared read-only."""
    d = tmp_path_factory.mktemp("base")
    write_model(d / "model")
    write_scene(d / "scene.tif", 64, 64, TF)
    return d


@pytest.fixture
def model(base: Path, tmp_path: Path) -> Path:
    """A copy of the checkpoint that a test may damage."""
    return Path(shutil.copytree(base / "model", tmp_path / "model"))


def _edit_card(model_dir: Path, **changes: Any) -> Path:
    """Change keys of ``model.json`` (a value of ``...`` deletes the key); the weights hash is left as it was."""
    p = model_dir / "model.json"
    card = json.loads(p.read_text())
    for k, v in changes.items():
        if v is ...:
            del card[k]
        else:
            card[k] = v
    p.write_text(json.dumps(card))  # NaN is written as the JSON literal NaN, which Python's reader takes
    return p


def _edit_weights(model_dir: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    """Change tensors of ``model.safetensors`` and record the new file's sha256 in ``model.json``."""
    w = model_dir / "model.safetensors"
    state = dict(load_file(str(w)))
    change(state)
    save_file(state, str(w), metadata={"format": "pt"})
    _edit_card(model_dir, weights_sha256=sha256_file(w))


def _error_line(*args: object) -> str:
    """Run the CLI; check it fails with one ``Error:`` line, exit 1 and no traceback; return that line."""
    res = CliRunner().invoke(cli, [str(a) for a in args])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 1, res.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    assert "Traceback" not in res.output and "internal error" not in res.output
    return lines[0]


def _predict_error(model_dir: Path, base: Path, tmp_path: Path) -> str:
    line = _error_line("predict", "--model", model_dir, base / "scene.tif", "--out", tmp_path / "m.tif", "--tile", 64)
    assert not (tmp_path / "m.tif").exists()
    return line


EDITED = "model.json was edited or damaged - restore the checkpoint from its source"
STD = "(the band's standard deviation divides its pixels)"

# (change to model.json, the message after "Error: <dir>/model.json: ")
BAD_CARDS = [
    ({"band_mean": [1000.0] * 3},
     "in_channels is 4, but bands names 4, band_mean holds 3 and band_std 4; expected the same count in each "
     f"(one name, mean and std per input band; bands may be empty) - {EDITED}"),
    ({"in_channels": 1000000},
     "in_channels is 1000000, but bands names 4, band_mean holds 4 and band_std 4; expected the same count in each "
     f"(one name, mean and std per input band; bands may be empty) - {EDITED}"),
    ({"bands": ["B", "G", "R"]},
     "in_channels is 4, but bands names 3, band_mean holds 4 and band_std 4; expected the same count in each "
     f"(one name, mean and std per input band; bands may be empty) - {EDITED}"),
    ({"band_std": [600.0, 0.0, 600.0, 600.0]},
     f"band_std[1] is 0.0; expected a finite number above 0 {STD} - {EDITED}"),
    ({"band_std": [600.0, 600.0, -1.0, 600.0]},
     f"band_std[2] is -1.0; expected a finite number above 0 {STD} - {EDITED}"),
    ({"band_mean": [1000.0, math.nan, 1000.0, 1000.0]},
     f"band_mean[1] is nan; expected a finite number (the band's mean) - {EDITED}"),
    ({"band_std": [600.0, 600.0, 600.0, math.inf]},
     f"band_std[3] is inf; expected a finite number above 0 {STD} - {EDITED}"),
    ({"band_mean": "1000"},
     f"band_mean is '1000'; expected a list of numbers, one per input band - {EDITED}"),
    ({"in_channels": "4"},
     f"in_channels is '4'; expected a whole number of input bands, at least 1 - {EDITED}"),
    ({"in_channels": 0},
     f"in_channels is 0; expected a whole number of input bands, at least 1 - {EDITED}"),
    ({"in_channels": True},
     f"in_channels is True; expected a whole number of input bands, at least 1 - {EDITED}"),
    ({"arch": "pspnet"},
     f"arch is 'pspnet'; expected one of ['deeplabv3plus', 'segformer', 'unet', 'utae'] - {EDITED}"),
    ({"arch_kwargs": [128, 64]},
     f"arch_kwargs is [128, 64]; expected a mapping of options for the architecture (e.g. encoder_depth) - {EDITED}"),
    ({"overlap": 32},
     f"overlap is 32 with tile 64; expected less than half the tile (32), so that each tile keeps a core - {EDITED}"),
    ({"valid_rule": "most"},
     f"valid_rule is 'most'; expected 'all' or 'any' - {EDITED}"),
    ({"format_version": "1"},
     f"format_version is '1'; expected a whole number, at least 1 - {EDITED}"),
    ({"weights_sha256": "abc"},
     f"weights_sha256 is 'abc'; expected 64 hex digits (the sha256 of model.safetensors) - {EDITED}"),
]


@pytest.mark.parametrize(("change", "message"), BAD_CARDS,
                         ids=[f"{next(iter(c))}-{i}" for i, (c, _) in enumerate(BAD_CARDS)])
def test_a_card_that_contradicts_itself_is_refused_when_read(model: Path, base: Path, tmp_path: Path,
                                                             change: dict[str, Any], message: str) -> None:
    card = _edit_card(model, **change)
    with pytest.raises(CheckpointError) as e:
        read_card(model)
    assert str(e.value) == f"{card}: {message}"
    assert _predict_error(model, base, tmp_path) == f"Error: {card}: {message}"


@pytest.mark.parametrize("missing", [..., ""], ids=["key-absent", "empty"])
def test_a_card_without_the_weights_hash_is_refused(model: Path, base: Path, tmp_path: Path, missing: Any) -> None:
    card = _edit_card(model, weights_sha256=missing)
    w = model / "model.safetensors"
    want = (f"{card}: has no weights_sha256, so {w} cannot be checked against it; expected the sha256 that geoseg "
            f"records with every checkpoint - if you trust these weights, run `sha256sum {w}` and add the 64 hex "
            f"digits to {card} as \"weights_sha256\"")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(model)
    assert str(e.value) == want
    assert _predict_error(model, base, tmp_path) == f"Error: {want}"


def test_every_checkpoint_geoseg_writes_records_the_weights_hash(tmp_path: Path) -> None:
    card = ModelCard(arch="unet", encoder="resnet18", in_channels=2, classes=default_classes(),
                     band_mean=[0.0, 0.0], band_std=[1.0, 1.0])
    assert card.weights_sha256 == ""  # a card made in memory has none until it is saved
    written = save_checkpoint(tmp_path / "m", build_from_card(card), card)
    assert written.weights_sha256 == sha256_file(tmp_path / "m" / "model.safetensors")
    assert read_card(tmp_path / "m").weights_sha256 == written.weights_sha256


# A card consistent in itself that describes a far larger network than its weights: before the fix,
# loading built it (in_channels 100000: 1.3 GB for the first convolution alone) and only then compared.
# The loads run one after another in a process that has imported torch and smp; its peak resident
# memory is reset to the current one before each (Linux: /proc/self/clear_refs), so a figure is what
# the load itself added at its peak.
_MEASURE = textwrap.dedent("""
    import json, sys, time
    import segmentation_models_pytorch, torch  # imported first: their memory is not the load's
    from geoseg.ml.model import load_checkpoint, read_card

    def mb(key):
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith(key + ":")) / 1024

    out = []
    for d in sys.argv[1:]:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # peak RSS := current RSS
        before, t0 = mb("VmRSS"), time.perf_counter()
        try:
            read_card(d).multiple  # what planning a run or a prediction asks first
            load_checkpoint(d)
            msg = "loaded"
        except Exception as e:
            msg = f"{type(e).__name__}: {e}"
        out.append({"msg": msg, "seconds": round(time.perf_counter() - t0, 2), "rss_before_mb": round(before),
                    "growth_mb": round(mb("VmHWM") - before, 1)})
    print(json.dumps(out))
""")


def _file_values(model_dir: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


def test_a_card_describing_a_larger_network_is_refused_before_it_is_built(base: Path, tmp_path: Path) -> None:
    wide = Path(shutil.copytree(base / "model", tmp_path / "wide"))
    n = 100_000
    _edit_card(wide, in_channels=n, bands=[], band_mean=[1000.0] * n, band_std=[600.0] * n)
    deep = Path(shutil.copytree(base / "model", tmp_path / "deep"))
    # without size_multiple, the card's tile multiple is worked out by building its architecture
    _edit_card(deep, arch_kwargs={"encoder_depth": 4, "decoder_channels": [2048] * 4}, size_multiple=...)
    seg = tmp_path / "seg"
    card = ModelCard(arch="segformer", encoder="mit_b0", in_channels=4, classes=default_classes(),
                     bands=["B", "G", "R", "NIR"], band_mean=[1000.0] * 4, band_std=[600.0] * 4, tile=64, overlap=16)
    torch.manual_seed(0)
    save_checkpoint(seg, build_from_card(card), card)
    _edit_card(seg, arch_kwargs={"decoder_segmentation_channels": 8000})
    good = base / "model"

    res = subprocess.run([sys.executable, "-c", _MEASURE, str(wide), str(deep), str(seg), str(good)],
                         capture_output=True, text=True, check=True, timeout=600)
    runs = json.loads(res.stdout.strip().splitlines()[-1])
    print(json.dumps(runs, indent=1))  # the figures, for the record (pytest -s)
    assert [r["growth_mb"] < MAX_GROWTH_MB for r in runs[:3]] == [True] * 3, runs

    fits = "the weights and model.json come from different models: restore the checkpoint from its source " \
           "(was model.json edited?)"
    n_file = _file_values(good)
    n_wide = n_file + 64 * 7 * 7 * (n - 4)  # only the first convolution takes the bands
    assert runs[0]["msg"] == (
        f"CheckpointError: {wide / 'model.safetensors'}: weights do not fit the architecture in model.json: "
        f"1 of another shape (e.g. encoder.conv1.weight: (64, 4, 7, 7) vs (64, {n}, 7, 7)); model.json describes "
        f"a network of {n_wide:,} values, the weights hold {n_file:,} - {fits}")
    assert runs[1]["msg"].startswith(
        f"CheckpointError: {deep / 'model.safetensors'}: weights do not fit the architecture in model.json: "
        f"41 of another shape (e.g. decoder.blocks.0.conv1.0.weight: (128, 384, 3, 3) vs (2048, 384, 3, 3)); "
        f"model.json describes a network of ")
    assert runs[1]["msg"].endswith(f" values, the weights hold {n_file:,} - {fits}")
    assert runs[2]["msg"].startswith(
        f"CheckpointError: {seg / 'model.safetensors'}: weights do not fit the architecture in model.json: ")
    assert runs[2]["msg"].endswith(f" values, the weights hold {_file_values(seg):,} - {fits}")
    assert runs[3]["msg"] == "loaded"


@pytest.mark.parametrize(("change", "message"), [
    ({"encoder": "resnet19"},
     "unknown encoder 'resnet19'; use an smp encoder name (e.g. ['resnet18', 'resnet34', 'resnet50', 'resnet101', "
     "'resnet152', 'resnext50_32x4d', 'resnext101_32x4d', 'resnext101_32x8d']) or a timm encoder as 'tu-<name>'"),
    ({"arch_kwargs": {"encoder_depth": 4, "decoder_channels": [64, 32]}},
     "cannot build unet with encoder 'resnet18' and options {'encoder_depth': 4, 'decoder_channels': [64, 32]}: "
     "Model depth is 4, but you provide `decoder_channels` for 2 blocks."),
], ids=["encoder", "arch_kwargs"])
def test_a_card_that_cannot_be_built_is_named(model: Path, change: dict[str, Any], message: str) -> None:
    card = _edit_card(model, **change)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(model)
    assert str(e.value) == f"{card}: {message} - {EDITED}"


@pytest.mark.parametrize("arch", ["unet", "deeplabv3plus", "segformer"])
def test_each_architecture_passes_the_shape_check_before_loading(tmp_path: Path, arch: str) -> None:
    """The shapes are worked out without allocating them, for every architecture geoseg builds."""
    card = ModelCard(arch=arch, encoder="mit_b0" if arch == "segformer" else "resnet18", in_channels=5,
                     classes=default_classes(), band_mean=[0.0] * 5, band_std=[1.0] * 5, tile=64, overlap=16)
    torch.manual_seed(0)
    saved = build_from_card(card).eval()
    save_checkpoint(tmp_path / "m", saved, card)
    before = torch.random.get_rng_state()
    loaded, _ = load_checkpoint(tmp_path / "m")
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's random stream is left alone
    for (k, a), (k2, b) in zip(saved.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and a.device.type == b.device.type == "cpu" and torch.equal(a, b), k


def test_weights_holding_nan_are_refused_at_load(model: Path, base: Path, tmp_path: Path) -> None:
    def poison(state: dict[str, torch.Tensor]) -> None:
        state["encoder.conv1.weight"][0, 0, :2, :3] = math.nan  # 6 of 64 x 4 x 7 x 7 = 12544
        state["decoder.blocks.3.conv2.1.running_var"][5] = math.inf

    _edit_weights(model, poison)
    w = model / "model.safetensors"
    want = (f"{w}: 2 tensors hold non-finite values (NaN or infinity): decoder.blocks.3.conv2.1.running_var (1 of 16), "
            f"encoder.conv1.weight (6 of 12544); expected finite weights - the training diverged or "
            f"the file is damaged: retrain the model (e.g. with a lower learning rate) or restore the checkpoint "
            f"from its source")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(model)
    assert str(e.value) == want
    # before: "every pixel is nodata - check the nodata value" on a scene that is 95 % valid
    assert _predict_error(model, base, tmp_path) == f"Error: {want}"


def _outputs_message(where: str, bad: int, valid: int) -> str:
    return (f"{where}the model produced non-finite outputs (NaN or infinity) for {bad} of the {valid} valid pixels "
            f"of a batch, so they cannot be classified; this is not a nodata problem: the model overflows on this "
            f"input or its weights are damaged - check that the image is on the scale the model was trained on "
            f"(band_mean and band_std in model.json), else retrain the model or restore it from its source")


def test_a_model_whose_outputs_overflow_is_named_not_blamed_on_nodata(model: Path, base: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOSEG_PRECISION", "fp32")

    def overflow(state: dict[str, torch.Tensor]) -> None:  # finite weights that overflow float32 at once
        state["encoder.bn1.bias"].fill_(3e38)

    _edit_weights(model, overflow)
    load_checkpoint(model)  # the weights themselves are finite
    # one batch of 4 tiles (64 px windows, 16 px halos, over a 64 x 64 px scene): 8928 of their pixels lie
    # inside the scene and below its 3-row nodata collar, and the model's output is NaN at every one
    valid = 8928
    assert _predict_error(model, base, tmp_path) == "Error: " + _outputs_message(f"{model}: ", valid, valid)


class _NaNWhere(torch.nn.Module):
    """Logits of 3 classes, NaN where ``mask`` is set."""

    def __init__(self, mask: np.ndarray) -> None:
        super().__init__()
        self.mask = torch.from_numpy(mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x[:, :3].clone()
        return out.masked_fill(self.mask[:, None], math.nan)


def test_non_finite_outputs_only_at_nodata_pixels_are_no_error() -> None:
    arrays = np.random.default_rng(0).integers(1, 3000, (2, 4, 8, 8)).astype("uint16")
    valid = np.ones((2, 8, 8), bool)
    valid[1, :2] = False
    nan_at = ~valid
    classes, conf = predict_batch(_NaNWhere(nan_at), arrays, valid, [1000.0] * 4, [500.0] * 4)
    assert (classes[~valid] == 255).all() and (conf[~valid] == 0).all()
    assert (classes[valid] < 3).all() and (conf[valid] >= 85).all()
    nan_at[0, 3, 4] = nan_at[1, 7, :] = True  # 1 + 8 valid pixels
    with pytest.raises(CheckpointError) as e:
        predict_batch(_NaNWhere(nan_at), arrays, valid, [1000.0] * 4, [500.0] * 4)
    assert str(e.value) == _outputs_message("", 9, 112).replace("the", "The", 1)
