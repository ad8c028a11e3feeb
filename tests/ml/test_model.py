"""Model registry, shapes, the checkpoint format, and refusing anything that could run code."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch

from geoseg.classes import default_classes
from geoseg.core.grid import tile_grid
from geoseg.errors import CheckpointError, ConfigError, TileError
from geoseg.ml.infer import (
    _logits,
    cpu_has_native_bf16,
    forward_logits,
    inference_precision,
    normalise,
    normalise_tensor,
    predict_batch,
)
from geoseg.ml.model import (
    ModelCard,
    build_from_card,
    build_model,
    load_checkpoint,
    load_state_dict_file,
    read_card,
    save_checkpoint,
    tile_multiple,
)


def _card(**kw):  # type: ignore[no-untyped-def]
    base = dict(arch="unet", encoder="resnet18", in_channels=4, classes=default_classes(),
                arch_kwargs={"encoder_depth": 4, "decoder_channels": [128, 64, 32, 16]},
                bands=["B", "G", "R", "NIR"], band_mean=[1000.0] * 4, band_std=[500.0] * 4)
    base.update(kw)
    return ModelCard(**base)


@pytest.mark.parametrize("arch", ["unet", "deeplabv3plus", "segformer"])
def test_each_architecture_keeps_a_non_square_tile_shape(arch):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = build_model(arch, in_channels=16, num_classes=7).eval()
    x = torch.randn(2, 16, 64, 96)
    with torch.inference_mode():
        y = forward_logits(model, x)
    assert tuple(y.shape) == (2, 7, 64, 96)


def test_reduced_resolution_output_is_upsampled_before_argmax():
    class Quarter(torch.nn.Module):
        def forward(self, x):  # type: ignore[no-untyped-def]
            return torch.nn.functional.avg_pool2d(x[:, :3], 4)

    y = forward_logits(Quarter(), torch.randn(1, 4, 32, 48))
    assert tuple(y.shape) == (1, 3, 32, 48)


def test_tile_multiples_follow_the_encoder_output_stride():
    assert tile_multiple("unet") == 16
    assert tile_multiple("deeplabv3plus") == 16
    assert tile_multiple("segformer") == 32
    assert tile_multiple("unet", "resnet18", {"encoder_depth": 5}) == 32
    with pytest.raises(TileError, match=r"not divisible by 32; use 32 or 64"):
        tile_grid((100, 100), size=48, overlap=8, multiple=tile_multiple("segformer"))


def test_unknown_architecture_and_encoder_list_the_choices():
    with pytest.raises(ConfigError, match=r"unknown architecture 'pspnet'; choose one of \['deeplabv3plus', 'segformer', 'unet', 'utae'\]"):
        build_model("pspnet")
    with pytest.raises(ConfigError, match=r"unknown encoder 'resnet19'; use an smp encoder name \(e\.g\. \[.*'resnet18'"):
        build_model("unet", "resnet19")


def test_build_never_downloads(monkeypatch):  # type: ignore[no-untyped-def]
    import huggingface_hub

    def boom(*a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("download attempted")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", boom)
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    build_model("unet", "resnet18", 16, 7)
    build_model("segformer", "mit_b0", 16, 7)


def test_checkpoint_round_trip_keeps_weights_and_card(tmp_path):  # type: ignore[no-untyped-def]
    torch.manual_seed(1)
    card = _card(metrics={"miou": 0.5}, tile=128, overlap=16)
    model = build_from_card(card).eval()
    written = save_checkpoint(tmp_path / "m", model, card)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "model.safetensors"]
    assert len(written.weights_sha256) == 64 and written.geoseg_version
    loaded, card2 = load_checkpoint(tmp_path / "m")
    assert card2 == written
    assert card2.classes.names == default_classes().names and card2.band_mean == [1000.0] * 4
    x = torch.randn(1, 4, 64, 64)
    with torch.inference_mode():
        np.testing.assert_array_equal(model(x).numpy(), loaded(x).numpy())
    # Nothing temporary left beside it.
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_the_card_records_the_tile_multiple_so_planning_needs_no_torch(tmp_path):  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    from affine import Affine

    from tests.workflow_helpers import write_scene, write_workflow

    card = _card(arch="segformer", encoder="mit_b0", arch_kwargs={})
    written = save_checkpoint(tmp_path / "m", build_from_card(card), card)
    assert written.size_multiple == 32 == tile_multiple("segformer")
    assert read_card(tmp_path / "m").multiple == 32
    # a card from before the value was recorded still answers, by building the architecture
    old = json.loads((tmp_path / "m" / "model.json").read_text())
    del old["size_multiple"]
    assert ModelCard.from_json(json.dumps(old)).multiple == 32
    # reading a workflow (which checks its tile against the model) imports neither torch nor smp
    write_scene(tmp_path / "scene.tif", 64, 64, Affine(10, 0, 500000, 0, -10, 3400000))  # the card's 4 bands
    wf = write_workflow(tmp_path / "wf.yaml", scenes=[str(tmp_path / "scene.tif")], model=str(tmp_path / "m"),
                        tile=256)
    code = ("import sys; from geoseg.workflow.config import load_workflow; "
            f"load_workflow({str(wf)!r}); print(sorted(m for m in ('torch', 'segmentation_models_pytorch') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_edited_tile_multiple_is_refused(tmp_path):  # type: ignore[no-untyped-def]
    save_checkpoint(tmp_path / "m", build_from_card(_card()), _card())
    p = tmp_path / "m" / "model.json"
    d = json.loads(p.read_text())
    assert d["size_multiple"] == 16
    d["size_multiple"] = 8
    p.write_text(json.dumps(d))
    with pytest.raises(CheckpointError, match=r"model\.json: size_multiple is 8, but unet/resnet18 with these "
                                              r"options needs tile sides divisible by 16; the card was edited"):
        load_checkpoint(tmp_path / "m")


def test_tampered_weights_are_refused(tmp_path):  # type: ignore[no-untyped-def]
    save_checkpoint(tmp_path / "m", build_from_card(_card()), _card())
    w = tmp_path / "m" / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: sha256 .* does not match model\.json"):
        load_checkpoint(tmp_path / "m")


def test_missing_files_and_bad_json_are_named(tmp_path):  # type: ignore[no-untyped-def]
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        read_card(tmp_path / "none")
    save_checkpoint(tmp_path / "m", build_from_card(_card()), _card())
    (tmp_path / "m" / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"model\.json: not valid JSON"):
        read_card(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors is missing"):
        read_card(tmp_path / "m")


def test_weights_of_another_architecture_name_the_keys(tmp_path):  # type: ignore[no-untyped-def]
    save_checkpoint(tmp_path / "m", build_from_card(_card()), _card())
    card = json.loads((tmp_path / "m" / "model.json").read_text())
    card["in_channels"] = 16  # the weights were trained on 4 bands (the card is otherwise consistent)
    card["bands"], card["band_mean"], card["band_std"] = [f"b{i}" for i in range(16)], [1000.0] * 16, [500.0] * 16
    (tmp_path / "m" / "model.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match=r"weights do not fit the architecture in model\.json: .*of another shape \(e\.g\. encoder\.conv1\.weight: \(64, 4, 7, 7\) vs \(64, 16, 7, 7\)\)"):
        load_checkpoint(tmp_path / "m")


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_runs_code_is_refused(tmp_path):  # type: ignore[no-untyped-def]
    marker = tmp_path / "pwned"
    bad = tmp_path / "encoder.pth"
    with open(bad, "wb") as f:
        pickle.dump({"conv1.weight": _Evil(str(marker))}, f)
    with pytest.raises(CheckpointError, match=r"encoder\.pth: refused to load .*weights_only=True"):
        load_state_dict_file(bad)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=r"a pickle-based weights file"):
        load_checkpoint(bad)


def test_plain_tensor_state_dicts_load(tmp_path):  # type: ignore[no-untyped-def]
    sd = {"w": torch.ones(2, 2)}
    torch.save(sd, tmp_path / "sd.pt")
    torch.save({"state_dict": sd}, tmp_path / "wrapped.pt")
    assert torch.equal(load_state_dict_file(tmp_path / "sd.pt")["w"], sd["w"])
    assert torch.equal(load_state_dict_file(tmp_path / "wrapped.pt")["w"], sd["w"])


def test_predict_batch_marks_nodata_and_scales_confidence(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("GEOSEG_PRECISION", "fp32")  # compared with a plain float32 forward below
    torch.manual_seed(0)
    model = build_model("unet", "resnet18", 4, 7).eval()
    arrays = np.random.default_rng(0).integers(1, 3000, (2, 4, 32, 32)).astype("uint16")
    valid = np.ones((2, 32, 32), bool)
    valid[0, :5] = False
    classes, conf = predict_batch(model, arrays, valid, [1000.0] * 4, [500.0] * 4)
    assert classes.dtype == np.uint8 and conf.dtype == np.uint8
    assert (classes[~valid] == 255).all() and (classes[valid] < 7).all()
    assert (conf[~valid] == 0).all() and conf[valid].min() >= 255 // 7
    x = normalise(arrays, valid, [1000.0] * 4, [500.0] * 4)
    with torch.inference_mode():
        probs = torch.softmax(model(torch.from_numpy(x)), 1)
    np.testing.assert_array_equal(classes[valid], probs.argmax(1).numpy().astype("uint8")[valid])
    np.testing.assert_allclose(conf[valid], np.round(probs.max(1).values.numpy() * 255)[valid], atol=1)


def test_inference_precision_follows_the_environment_and_the_cpu(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.delenv("GEOSEG_PRECISION", raising=False)
    assert inference_precision("cuda") == "bf16"
    assert inference_precision("cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")
    monkeypatch.setenv("GEOSEG_PRECISION", "FP32")
    assert inference_precision("cuda") == "fp32" and inference_precision("cpu") == "fp32"
    monkeypatch.setenv("GEOSEG_PRECISION", "bf16")
    assert inference_precision("cpu") == "bf16"
    monkeypatch.setenv("GEOSEG_PRECISION", "half")
    with pytest.raises(ConfigError, match=r"GEOSEG_PRECISION='half'; expected one of auto, fp32, bf16"):
        inference_precision("cpu")


def test_bf16_and_fp32_predictions_agree_closely(monkeypatch):  # type: ignore[no-untyped-def]
    """bf16 autocast changes only near-tied pixels (an untrained model has many; a trained one few)."""
    torch.manual_seed(0)
    model = build_model("unet", "resnet18", 4, 7).eval()
    arrays = np.random.default_rng(0).integers(1, 3000, (2, 4, 64, 64)).astype("uint16")
    valid = np.ones((2, 64, 64), bool)
    out = {}
    for p in ("fp32", "bf16"):
        monkeypatch.setenv("GEOSEG_PRECISION", p)
        out[p] = predict_batch(model, arrays, valid, [1000.0] * 4, [500.0] * 4)
    agree = (out["fp32"][0] == out["bf16"][0]).mean()
    assert 0.9 < agree <= 1.0
    diff = np.abs(out["fp32"][1].astype(int) - out["bf16"][1].astype(int))
    assert diff.mean() < 2 and diff.max() <= 32  # confidence in 1/255 steps


@pytest.mark.parametrize("dtype", ["uint16", "int16", "uint8", "float32", "float64", "uint32"])
@pytest.mark.parametrize("batched", [True, False])
def test_device_normalisation_gives_the_same_floats(dtype, batched):  # type: ignore[no-untyped-def]
    """What a GPU worker computes on the device equals the CPU path bit for bit (run here on the CPU),
    over each dtype's whole range: uint16 above 32767 (moved as int16 bits), negatives, NaN and inf."""
    rng = np.random.default_rng(7)
    shape = (3, 4, 16, 16) if batched else (4, 16, 16)
    if np.dtype(dtype).kind == "f":
        a = rng.normal(2000, 900, shape).astype(dtype)
        a.flat[::37] = np.nan
        a.flat[::53] = np.inf
    else:
        info = np.iinfo(dtype)
        a = rng.integers(info.min, int(info.max) + 1, shape, dtype=np.int64 if dtype != "uint32" else np.uint64).astype(dtype)
    valid = rng.random(shape[:-3] + shape[-2:]) > 0.2
    mean, std = [1000.0, -5.0, 30000.0, 0.5], [600.0, 2.0, 0.0, 1e3]  # a zero std is clamped, as on the CPU
    want = normalise(a, valid, mean, std)
    got = normalise_tensor(a, valid, mean, std, "cpu").numpy()
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert (got[..., 0, :, :][~valid] == 0).all()
    with pytest.raises(ValueError, match="3 means / 3 stds for 4 bands"):
        normalise_tensor(a, valid, mean[:3], std[:3], "cpu")


def test_the_model_gets_dense_channels_last_strides_whatever_the_batch_axis_carries():
    """numpy's x[None] gives the batch axis a stride of 0; a size-1 axis may carry any stride,
    but oneDNN then takes a slow path (86 ms against 53 ms for one 512 px tile here), so the
    tensor reaching the model has the dense channels-last strides, with the same values."""

    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x):  # type: ignore[no-untyped-def]
            seen.append((x.stride(), x.detach().clone()))
            return x[:, :3] * 2

    rng = np.random.default_rng(3)
    a = rng.integers(0, 5000, (4, 8, 12), dtype=np.uint16)
    x = normalise(a, np.ones((8, 12), bool), [100.0] * 4, [50.0] * 4)
    for batch in (x[None], np.stack([x, x]), np.ascontiguousarray(x[None])):
        seen.clear()
        out = _logits(Spy(), batch, "cpu")
        stride, got = seen[0]
        n = batch.shape[0]
        assert stride == (8 * 12 * 4, 1, 12 * 4, 4), (batch.strides, stride)
        np.testing.assert_array_equal(got.float().numpy(), batch.astype(np.float32))
        assert tuple(out.shape) == (n, 3, 8, 12)


@pytest.mark.parametrize("dtype", ["uint16", "int16", "uint8", "float32", "float64", "uint32", "int64"])
def test_normalised_batches_come_channels_last_with_the_plain_formulas_values(dtype):  # type: ignore[no-untyped-def]
    """normalise lays its result out channels-last (what the model runs in, so torch takes it
    without reordering) and its floats are bit for bit those of the plain NCHW formula, with
    per-pixel and per-band validity, NaN/inf, a zero std and reversed axes."""
    rng = np.random.default_rng(11)
    shape = (2, 5, 12, 20)
    if np.dtype(dtype).kind == "f":
        a = rng.normal(2000, 900, shape).astype(dtype)
        a.flat[::29] = np.nan
        a.flat[::31] = -np.inf
    else:
        info = np.iinfo(dtype)
        a = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    mean, std = list(rng.normal(0, 100, 5)), [600.0, 2.0, 0.0, 1e3, 0.25]

    def plain(arr, valid):  # type: ignore[no-untyped-def]
        m = np.asarray(mean, np.float32).reshape(-1, 1, 1)
        sd = np.maximum(np.asarray(std, np.float32), np.float32(1e-6)).reshape(-1, 1, 1)
        x = (arr.astype(np.float32) - m) / sd
        bad = ~valid[:, None] if valid.ndim == 3 else ~valid
        return np.where(bad | ~np.isfinite(x), np.float32(0), x)

    for valid in (rng.random((2, 12, 20)) > 0.2, rng.random(shape) > 0.2):
        for arr, v in ((a, valid), (a[:, :, ::-1, ::-1], valid[..., ::-1, ::-1])):
            got = normalise(arr, v, mean, std)
            assert got.dtype == np.float32 and got.shape == arr.shape
            np.testing.assert_array_equal(got.view(np.uint32), plain(arr, v).view(np.uint32))  # -0.0 and NaN too
            assert torch.from_numpy(got).is_contiguous(memory_format=torch.channels_last)
