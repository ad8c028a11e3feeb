"""Pretrained encoders: band-name adaptation, wrapped state dicts, the cache and its download, training."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.cli.main import cli
from geoseg.errors import CheckpointError, ConfigError
from geoseg.io.weights import MIRROR_ENV, hash_prefix
from geoseg.ml import pretrained as pt
from geoseg.ml.model import build_model, load_checkpoint
from geoseg.ml.pretrained import adapt_first_conv, band_key, freeze_encoder, load_pretrained
from geoseg.ml.train import train
from geoseg.synth import synthesize

from ..remote_servers import GDAL_HTTP_ENV, range_server

FAST = {"tile": 64, "chips_per_epoch": 16, "batch_size": 8, "forest": False}
OLI = ["coastal", "blue", "green", "red", "nir08", "swir16", "swir22"]


@pytest.fixture(scope="module")
def region(tmp_path_factory):  # type: ignore[no-untyped-def]
    return synthesize(tmp_path_factory.mktemp("region"), height=128, width=192, seed=5)


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:  # type: ignore[no-untyped-def]
    """A torchvision ResNet-18 state dict (seeded random weights, ImageNet's form), saved as .pth."""
    torch.manual_seed(11)
    state = torchvision.models.resnet18().state_dict()
    path = tmp_path_factory.mktemp("w") / "rgb.pth"
    torch.save(state, path)
    return path, state


# ------------------------------------------------------------------ first convolution, by band name

@settings(max_examples=60, deadline=None)
@given(st.permutations(OLI), st.lists(st.sampled_from([*OLI, "nir", "rededge1", None]), min_size=1, max_size=9),
       st.integers(0, 2**31 - 1))
def test_adapted_kernel_equals_a_plain_lookup(weight_bands, input_bands, seed) -> None:  # type: ignore[no-untyped-def]
    w = np.random.default_rng(seed).normal(size=(4, 7, 3, 3)).astype(np.float32)
    known = [b for b in input_bands if b is not None and (b in OLI or b == "nir")]
    if not known:
        with pytest.raises(ConfigError, match="none of the stack's bands"):
            adapt_first_conv(w, weight_bands, input_bands)
        return
    out, matched = adapt_first_conv(w, weight_bands, input_bands)
    # reference: each input channel's band looked up by name ("nir" stands in for Landsat's nir08), shared
    # equally among the channels reading the same band; other channels zero
    src = [weight_bands.index("nir08" if b == "nir" else b) if b in known else None for b in input_bands]
    for c, j in enumerate(src):
        expected = np.zeros_like(w[:, 0]) if j is None else w[:, j] / src.count(j)
        np.testing.assert_allclose(out[:, c], expected, rtol=1e-6)
    assert matched == {c: j for c, j in enumerate(src) if j is not None}


def test_band_names_in_every_form() -> None:
    assert [band_key(n) for n in ("B02", "b2", "SR_B2", "blue", "2024-06-15 B", "2024-07_B02")] == ["blue"] * 6
    assert [band_key(n) for n in ("B10", "SR_B7", "swir22", "band 3", "", None)] == [
        "cirrus", "swir22", "swir22", None, None, None]
    with pytest.raises(ConfigError, match=r"band names \['bogus'\] are not band names geoseg knows"):
        adapt_first_conv(np.zeros((1, 2, 1, 1), np.float32), ["red", "bogus"], ["B04"])
    with pytest.raises(ConfigError, match="reads 2 channels, but 3 band names"):
        adapt_first_conv(np.zeros((1, 2, 1, 1), np.float32), ["red", "green", "blue"], ["B04"])


# ------------------------------------------------------------------ loading into the encoder

@pytest.mark.parametrize("wrap", ["plain", "moco", "lightning", "smp"])
def test_a_resnet_state_dict_loads_into_the_encoder_whatever_its_wrapper(resnet_file, tmp_path, wrap) -> None:  # type: ignore[no-untyped-def]
    _, state = resnet_file
    wrapped: dict[str, object] = {
        "plain": dict(state),
        "moco": {"epoch": 100, "state_dict": {f"module.encoder_q.{k}": v for k, v in state.items()}},
        "lightning": {"state_dict": {f"model.backbone.{k}": v for k, v in state.items()}},
        "smp": {f"encoder.{k}": v for k, v in state.items() if not k.startswith("fc.")},
    }[wrap]
    path = tmp_path / "w.pth"
    torch.save(wrapped, path)
    bands = ["2024-06-15 B04", "2024-06-15 B08", "2024-06-15 B02", "2024-07-15 B04", "2024-07-15 B08",
             "2024-07-15 B02", None, None]
    model = build_model("unet", "resnet18", len(bands), 4)
    decoder_before = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    rec = load_pretrained(model, path, bands, ["red", "green", "blue"])
    enc = model.encoder.state_dict()
    for k, v in state.items():
        if k in enc and k != "conv1.weight":
            assert torch.equal(enc[k], v), k
    w = state["conv1.weight"]
    # red and blue, each on two dates: half the slice on each; NIR and the validity planes start at zero
    for c, j in ((0, 0), (3, 0), (2, 2), (5, 2)):
        assert torch.allclose(enc["conv1.weight"][:, c], w[:, j] / 2)
    for c in (1, 4, 6, 7):
        assert not enc["conv1.weight"][:, c].any()
    assert all(torch.equal(model.decoder.state_dict()[k], v) for k, v in decoder_before.items())
    assert rec["matched_bands"] == {"2024-06-15 B04": "red", "2024-06-15 B02": "blue", "2024-07-15 B04": "red",
                                    "2024-07-15 B02": "blue"}
    assert rec["zero_channels"] == ["2024-06-15 B08", "2024-07-15 B08", "None", "None"]
    assert rec["pretrained_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_weights_of_another_encoder_or_without_bands_are_refused(resnet_file, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path, _ = resnet_file
    r50 = build_model("unet", "resnet50", 3, 2)
    with pytest.raises(CheckpointError, match=r"rgb.pth: .*not \d+ of the encoder's|rgb.pth: tensors of another shape"):
        load_pretrained(r50, path, ["red", "green", "blue"], ["red", "green", "blue"])
    with pytest.raises(ConfigError, match=r"rgb.pth: the bands its first convolution reads are not known; .*"
                                          r"--pretrained-bands"):
        load_pretrained(build_model("unet", "resnet18", 3, 2), path, ["red", "green", "blue"])
    with pytest.raises(ConfigError, match="no such file, and not a published name; .*imagenet-resnet18"):
        load_pretrained(build_model("unet", "resnet18", 3, 2), tmp_path / "nope.pth", ["red"], ["red"])
    # only the first convolution may read another number of channels
    _, state = resnet_file
    odd = {**state, "layer1.0.conv1.weight": state["layer1.0.conv1.weight"][:, :32].contiguous()}
    torch.save(odd, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match=r"odd.pth: tensors of another shape .*layer1.0.conv1.weight"):
        load_pretrained(build_model("unet", "resnet18", 3, 2), tmp_path / "odd.pth", ["red"] * 3, ["red", "green", "blue"])
    torch.save({"epoch": 3}, tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="empty.pth: holds no tensors"):
        load_pretrained(build_model("unet", "resnet18", 3, 2), tmp_path / "empty.pth", ["red"], ["red"])
    with pytest.raises(ConfigError, match=r"--pretrained .*rgb.pth: none of the stack's bands \(band 1, band 2\)"):
        load_pretrained(build_model("unet", "resnet18", 2, 2), path, ["band 1", "band 2"], ["red", "green", "blue"])


# ------------------------------------------------------------------ published names: the cache and the download

@pytest.fixture()
def mirror(tmp_path, monkeypatch, resnet_file):  # type: ignore[no-untyped-def]
    """A published entry whose file a web server on 127.0.0.1 serves (GEOSEG_WEIGHTS_MIRROR), an empty cache."""
    path, _ = resnet_file
    data = path.read_bytes()
    name = f"resnet18_test-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    served = tmp_path / "served"
    served.mkdir()
    (served / name).write_bytes(data)
    monkeypatch.setitem(pt.PUBLISHED, "test-resnet18", pt.Published(f"https://example.invalid/w/{name}", "resnet18",
                                                                    ("red", "green", "blue"), "test"))
    monkeypatch.setenv("GEOSEG_CACHE", str(tmp_path / "cache"))
    for k, v in GDAL_HTTP_ENV.items():
        monkeypatch.setenv(k, v)
    return served, name


def test_a_published_name_is_downloaded_once_checked_and_cached(mirror, monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    served, name = mirror
    with range_server(served) as srv:
        monkeypatch.setenv(MIRROR_ENV, srv.url)
        rec = load_pretrained(build_model("unet", "resnet18", 2, 2), "test-resnet18", ["B04", "B03"])
        gets = [r for r in srv.requests if r[0] == "GET"]
    cached = tmp_path / "cache" / "weights" / name
    assert rec["pretrained_file"] == str(cached) and cached.read_bytes() == (served / name).read_bytes()
    assert rec["matched_bands"] == {"B04": "red", "B03": "green"} and len(gets) == 1
    assert hash_prefix(name) == rec["pretrained_sha256"][:8]
    # the server is gone: the cache serves
    load_pretrained(build_model("unet", "resnet18", 2, 2), "test-resnet18", ["B04", "B03"])
    assert [p.name for p in cached.parent.iterdir()] == [name]


def test_a_damaged_download_and_no_network_are_refused_and_leave_nothing(mirror, monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    served, name = mirror
    (served / name).write_bytes(b"not the published file")
    with range_server(served) as srv:
        monkeypatch.setenv(MIRROR_ENV, srv.url)
        with pytest.raises(CheckpointError, match=r"test-resnet18: the file downloaded from .* has sha256 .* but its "
                                                  r"name says it starts with"):
            load_pretrained(build_model("unet", "resnet18", 2, 2), "test-resnet18", ["B04", "B03"])
        url = srv.url
        (served / name).unlink()
        with pytest.raises(CheckpointError, match=r"test-resnet18: .* answered 404"):
            load_pretrained(build_model("unet", "resnet18", 2, 2), "test-resnet18", ["B04", "B03"])
    assert not list((tmp_path / "cache" / "weights").iterdir())
    # the same address with nothing listening: offline
    with pytest.raises(CheckpointError, match=r"test-resnet18: cannot download .*this machine may be offline - "
                                              r"download the file .* pass its path"):
        load_pretrained(build_model("unet", "resnet18", 2, 2), "test-resnet18", ["B04", "B03"])
    assert url and not list((tmp_path / "cache" / "weights").iterdir())


# ------------------------------------------------------------------ training from pretrained weights

def test_training_from_pretrained_weights_freezes_then_fine_tunes(region, resnet_file, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path, state = resnet_file
    res = train(region.scene, region.labels, region.classes, tmp_path / "m", epochs=3, patience=3, freeze_epochs=3,
                pretrained=path, pretrained_bands="red,green,blue", **FAST)
    t = res.card.training
    assert t["pretrained_bands"] == ["red", "green", "blue"] and t["freeze_epochs"] == 3
    assert len(t["matched_bands"]) == 12 and len(t["zero_channels"]) == 4  # R, G, B of 4 dates; NIR from zero
    assert [h["encoder_frozen"] for h in res.history] == [True, True, True]
    # frozen all along: every encoder weight but the first convolution's is the file's; that one learnt
    model, _ = load_checkpoint(res.model_dir)
    enc = model.encoder.state_dict()
    for k, v in state.items():
        if k in enc and k != "conv1.weight" and "running" not in k and "num_batches" not in k:
            assert torch.equal(enc[k], v), k
    assert not enc["conv1.weight"][:, 3].eq(0).all()  # the first date's NIR started at zero and learnt
    assert "encoder from" in res.summary()
    # unfrozen after one epoch: the encoder learns
    res2 = train(region.scene, region.labels, region.classes, tmp_path / "m2", epochs=2, patience=2, freeze_epochs=1,
                 pretrained=path, pretrained_bands="red,green,blue", **FAST)
    assert [h["encoder_frozen"] for h in res2.history] == [True, False]
    # what the two phases set: only the first convolution learns while frozen, every weight after
    model = build_model("unet", "resnet18", 3, 2)
    freeze_encoder(model, "conv1.weight", frozen=True)
    assert [n for n, p in model.encoder.named_parameters() if p.requires_grad] == ["conv1.weight"]
    freeze_encoder(model, "conv1.weight", frozen=False)
    assert all(p.requires_grad for p in model.encoder.parameters())


def test_pretrained_options_are_checked(region, resnet_file, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path, _ = resnet_file
    with pytest.raises(ConfigError, match="--pretrained and --init-from both given"):
        train(region.scene, region.labels, region.classes, tmp_path / "m", pretrained=path, init_from=tmp_path,
              **FAST)
    with pytest.raises(ConfigError, match="--freeze-epochs without --pretrained"):
        train(region.scene, region.labels, region.classes, tmp_path / "m", freeze_epochs=2, **FAST)
    with pytest.raises(ConfigError, match=r"--freeze-epochs is -1; expected a whole number >= 0"):
        train(region.scene, region.labels, region.classes, tmp_path / "m", freeze_epochs=-1, pretrained=path,
              **FAST)
    with pytest.raises(ConfigError, match="imagenet-resnet50 holds a resnet50 encoder, but --encoder is resnet18"):
        train(region.scene, region.labels, region.classes, tmp_path / "m", pretrained="imagenet-resnet50",
              encoder="resnet18", **FAST)


def test_cli_pretrained_errors_are_one_line(region, resnet_file, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path, _ = resnet_file
    r = CliRunner().invoke(cli, ["train", "--image", str(region.scene), "--labels", str(region.labels), "--classes",
                                  str(region.classes), "--out", str(tmp_path / "m"), "--tile", "64",
                                  "--pretrained", str(path)])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "the bands its first convolution reads are not known" in r.output
    assert len([ln for ln in r.output.splitlines() if ln.strip()]) == 1
    r = CliRunner().invoke(cli, ["train", "--image", str(region.scene), "--labels", str(region.labels), "--classes",
                                  str(region.classes), "--out", str(tmp_path / "m"), "--tile", "64", "--epochs", "1",
                                  "--no-forest", "--pretrained", str(path), "--pretrained-bands", "red,green,blue"])
    assert r.exit_code == 0, r.output
    card = json.loads((tmp_path / "m" / "model.json").read_text())
    assert card["training"]["pretrained_bands"] == ["red", "green", "blue"]


def test_a_geoseg_checkpoint_starts_a_model_for_other_bands(region, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A checkpoint directory is pretrained weights with known bands: a 4-date R, G, B, NIR model starts a
    one-date red/NIR/SWIR model, each band's slice summed over the source's dates."""
    src = train(region.scene, region.labels, region.classes, tmp_path / "src", epochs=1, **FAST)
    w = load_checkpoint(src.model_dir)[0].encoder.state_dict()["conv1.weight"]
    model = build_model("unet", "resnet18", 3, 2)
    rec = load_pretrained(model, src.model_dir, ["B04", "B08", "B11"])
    got = model.encoder.state_dict()["conv1.weight"]
    names = src.card.bands
    for c, short in ((0, "R"), (1, "NIR")):
        idx = [i for i, n in enumerate(names) if n.split()[-1] == short]
        assert len(idx) == 4 and torch.allclose(got[:, c], w[:, idx].sum(dim=1), atol=1e-6)
    assert not got[:, 2].any() and rec["zero_channels"] == ["B11"]
    assert rec["matched_bands"] == {"B04": "2024-06-15 R", "B08": "2024-06-15 NIR"}
    # and it sets the encoder, like a published name
    with pytest.raises(ConfigError, match="holds a resnet18 encoder, but --encoder is resnet34"):
        train(region.scene, region.labels, region.classes, tmp_path / "m", pretrained=src.model_dir,
              encoder="resnet34", **FAST)
