"""Pretrained encoders: published weights, or a local file, adapted to the stack's bands by name.

A network fine-tuned from pretrained weights needs fewer labels than one trained from scratch.
``geoseg train --pretrained SPEC`` loads an encoder's weights before training, where ``SPEC`` is

- a file: a state dict as ``.safetensors`` or plain tensors (``.pt``/``.pth``/``.ckpt``, read
  with ``torch.load(weights_only=True)``, never unpickling code) in torchvision/timm ResNet
  form (``conv1.weight``, ``layer1.0.conv1.weight``, ...; the form torchgeo publishes its
  SSL4EO weights in), an smp encoder's (``encoder.`` keys) or a whole geoseg/smp model's;
  training wrappers (``state_dict``, ``model``, ``module.``, ``backbone.``, ``encoder_q.``, ...)
  are unwrapped. Its first convolution's bands are given with ``--pretrained-bands``.
- or a geoseg checkpoint directory: its encoder, the bands read from its card.
- or a published name (:data:`PUBLISHED`: ImageNet ResNets from torchvision, and the SSL4EO-L
  Landsat and SSL4EO-S12 Sentinel-2 self-supervised ResNets from torchgeo), downloaded once into
  the cache (:mod:`geoseg.io.weights`) and known with its bands.

The first convolution, by band name. The weights' first convolution reads bands in the order
its publisher stacked them, and the stack to train on has its own bands, count and order. Each
of the stack's bands takes the kernel slice of the weights' band with the same common name
(``B04``, ``SR_B4``, ``red`` and ``2024-06-15 B04`` are all ``red``; Sentinel-2's ``nir`` and
Landsat's ``nir08`` stand in for each other when only one is there); a band seen on several
dates shares that slice out among them (so a steady band gives the response the weights were
trained to give); every other channel (a band the weights never saw, a date's validity plane)
starts at zero and is learnt. At least one band must match: weights that share nothing with the
stack are refused, never cycled by count.

Fine-tuning. For the first ``freeze_epochs`` epochs (default 2 when pretrained) only the
decoder, the head and the first convolution learn; the encoder's batch-norm statistics still
follow the new data (the input is standardised by geoseg, not as the publisher normalised it).
Then every weight learns.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.core.dates import split_band_name
from geoseg.errors import CheckpointError, ConfigError
from geoseg.io.imagery import LANDSAT_BANDS, S2_BANDS
from geoseg.io.weights import cached_download
from geoseg.ml.model import CARD, WEIGHTS, load_state_dict_file, network_channels, read_card, sha256_file

__all__ = ["PUBLISHED", "Published", "adapt_first_conv", "band_key", "encoder_state", "first_conv_key",
           "freeze_encoder", "load_pretrained", "pretrained_encoder", "resolve_pretrained"]

_S2_ALL = ("coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "nir09", "cirrus",
           "swir16", "swir22")
_OLI_SR = ("coastal", "blue", "green", "red", "nir08", "swir16", "swir22")
_ETM_SR = ("blue", "green", "red", "nir08", "swir16", "swir22")
_RGB = ("red", "green", "blue")
_TORCHGEO = "https://hf.co/torchgeo"
_SSL4EO_L = f"{_TORCHGEO}/ssl4eo_landsat/resolve/1c88bb51b6e17a21dde5230738fa38b74bd74f76"


@dataclass(frozen=True, slots=True)
class Published:
    """A published weights file: where it is, the smp encoder it fits and its first convolution's bands."""

    url: str
    encoder: str
    bands: tuple[str, ...]
    about: str


#: Weights ``--pretrained NAME`` downloads (once; then from the cache).
PUBLISHED: dict[str, Published] = {
    "imagenet-resnet18": Published("https://download.pytorch.org/models/resnet18-f37072fd.pth", "resnet18", _RGB,
                                   "torchvision ImageNet-1k (supervised)"),
    "imagenet-resnet34": Published("https://download.pytorch.org/models/resnet34-b627a593.pth", "resnet34", _RGB,
                                   "torchvision ImageNet-1k (supervised)"),
    "imagenet-resnet50": Published("https://download.pytorch.org/models/resnet50-0676ba61.pth", "resnet50", _RGB,
                                   "torchvision ImageNet-1k (supervised)"),
    "ssl4eo-l-oli-sr-moco-resnet18": Published(f"{_SSL4EO_L}/resnet18_landsat_oli_sr_moco-660e82ed.pth", "resnet18",
                                               _OLI_SR, "SSL4EO-L, Landsat 8/9 OLI surface reflectance, MoCo"),
    "ssl4eo-l-oli-sr-simclr-resnet18": Published(f"{_SSL4EO_L}/resnet18_landsat_oli_sr_simclr-7bced5be.pth",
                                                 "resnet18", _OLI_SR,
                                                 "SSL4EO-L, Landsat 8/9 OLI surface reflectance, SimCLR"),
    "ssl4eo-l-etm-sr-moco-resnet18": Published(f"{_SSL4EO_L}/resnet18_landsat_etm_sr_moco-4f078acd.pth", "resnet18",
                                               _ETM_SR, "SSL4EO-L, Landsat 7 ETM+ surface reflectance, MoCo"),
    "ssl4eo-l-oli-sr-moco-resnet50": Published(f"{_SSL4EO_L}/resnet50_landsat_oli_sr_moco-ff580dad.pth", "resnet50",
                                               _OLI_SR, "SSL4EO-L, Landsat 8/9 OLI surface reflectance, MoCo"),
    "ssl4eo-s12-all-moco-resnet18": Published(
        f"{_TORCHGEO}/resnet18_sentinel2_all_moco/resolve/5b8cddc9a14f3844350b7f40b85bcd32aed75918/"
        "resnet18_sentinel2_all_moco-59bfdff9.pth", "resnet18", _S2_ALL, "SSL4EO-S12, Sentinel-2 L1C 13 bands, MoCo"),
    "ssl4eo-s12-all-moco-resnet50": Published(
        f"{_TORCHGEO}/resnet50_sentinel2_all_moco/resolve/da4f3c9dbe09272eb902f3b37f46635fa4726879/"
        "resnet50_sentinel2_all_moco-df8b932e.pth", "resnet50", _S2_ALL, "SSL4EO-S12, Sentinel-2 L1C 13 bands, MoCo"),
}

_S2_IDS = {b: c for b, (c, _) in S2_BANDS.items()} | {"B10": "cirrus"}
_LANDSAT_IDS = {v: k for k, v in LANDSAT_BANDS.items()}
_COMMON = set(_S2_ALL) | set(LANDSAT_BANDS) | {"pan", "lwir11", "lwir12"}
# short names stacks often carry
_SHORT = {"b": "blue", "g": "green", "r": "red", "swir1": "swir16", "swir2": "swir22", "nir1": "nir", "nir2": "nir08"}
# one near-infrared band may stand in for the other (Sentinel-2's broad B08 and narrow B8A; Landsat's one)
_NIR_ALIAS = {"nir": "nir08", "nir08": "nir"}
# training-wrapper prefixes in the order they nest (``module.encoder_q.conv1.weight``)
_WRAPPERS = ("module.", "model.", "encoder_q.", "backbone.", "encoder.", "net.", "student.", "teacher.")


def band_key(name: str | None) -> str | None:
    """The common name of a band, whatever form it is named in; None for an unknown name.

    Examples
    --------
    A name of several words (``"B4 NIR"``, as some Landsat stacks are labelled) is read by its
    common-name word first: band numbers differ between sensors, common names do not.

    >>> [band_key(n) for n in ("B04", "b8a", "B8", "SR_B5", "2024-06-15 B11", "Red", "2024-06-15 G", "band 1", None)]
    ['red', 'nir08', 'nir', 'nir08', 'swir16', 'red', 'green', None, None]
    >>> [band_key(n) for n in ("B1 blue", "B4 NIR", "B7 SWIR2")]
    ['blue', 'nir', 'swir22']
    """
    if not name:
        return None
    parsed = split_band_name(name)
    text = (parsed[2] if parsed else name).strip()
    words = text.replace("_", " ").split() if not text.upper().startswith("SR_B") else [text]
    if len(words) > 1:
        keys = [_word_key(w) for w in words]
        common = [k for w, k in zip(words, keys, strict=True) if k is not None and w.lower() in _COMMON | set(_SHORT)]
        return common[0] if common else next((k for k in keys if k is not None), None)
    return _word_key(text)


def _word_key(text: str) -> str | None:
    up = text.upper()
    if up.startswith("SR_B") and up in _LANDSAT_IDS:
        return _LANDSAT_IDS[up]
    if len(up) == 2 and up[0] == "B" and up[1].isdigit():
        up = f"B0{up[1]}"
    if up in _S2_IDS:
        return _S2_IDS[up]
    low = text.lower()
    return low if low in _COMMON else _SHORT.get(low)


def adapt_first_conv(weight: np.ndarray, weight_bands: Sequence[str | None], input_bands: Sequence[str | None]
                     ) -> tuple[np.ndarray, dict[int, int]]:
    """A first-convolution kernel for ``input_bands``, from one trained on ``weight_bands``.

    Parameters
    ----------
    weight : array (out, len(weight_bands), kh, kw)
    weight_bands : the bands the kernel's input channels read, by any name :func:`band_key` knows
        (None for a channel to leave out, such as a validity plane)
    input_bands : the new input channels' band names (None for a channel that is not a band)

    Returns
    -------
    (kernel (out, len(input_bands), kh, kw), {input channel: weights channel} for the matched ones)

    Each input channel whose band has a common name in ``weight_bands`` takes that band's slice
    (summed over the weights' channels of that band, when they read several dates), divided by
    how many input channels share it (one per date); the others are zero. A band steady over
    the dates thus gives the response it gave the weights.

    Raises
    ------
    ConfigError
        No input band matches a band of the weights.

    Examples
    --------
    >>> w = np.arange(6, dtype=np.float32).reshape(1, 3, 1, 2)        # red, green, blue
    >>> k, m = adapt_first_conv(w, ["red", "green", "blue"], ["B02", "B04", "B08"])
    >>> k[0, :, 0].tolist(), m
    ([[4.0, 5.0], [0.0, 1.0], [0.0, 0.0]], {0: 2, 1: 0})
    """
    if weight.ndim != 4 or weight.shape[1] != len(weight_bands):
        raise ConfigError(f"the first convolution reads {weight.shape[1] if weight.ndim == 4 else '?'} channels, but "
                          f"{len(weight_bands)} band names were given for it ({_names(weight_bands)}); name "
                          f"each of its input bands, in order")
    keys = [band_key(b) for b in weight_bands]
    unknown = [b for b, k in zip(weight_bands, keys, strict=True) if k is None and b is not None]
    if unknown:
        raise ConfigError(f"the weights' band names {unknown} are not band names geoseg knows; use Sentinel-2 ids "
                          f"(B02, B8A), Landsat ids (SR_B4) or common names (blue, red, nir08, swir16, ...)")
    where = {k: i for i, k in reversed(list(enumerate(keys))) if k is not None}  # a band's first channel
    summed = {k: weight[:, [i for i, kk in enumerate(keys) if kk == k]].sum(axis=1) for k in where}
    matched: dict[int, int] = {}
    for c, b in enumerate(input_bands):
        k = band_key(b)
        if k is None:
            continue
        j = where.get(k, where.get(_NIR_ALIAS.get(k, ""), None))
        if j is not None:
            matched[c] = j
    if not matched:
        shown = ", ".join(str(b) for b in input_bands[:12]) + (" ..." if len(input_bands) > 12 else "")
        raise ConfigError(
            f"none of the stack's bands ({shown}) is a band the weights were trained on ({_names(weight_bands)}); "
            f"name the stack's bands (band descriptions such as B04 or red; `geoseg stack` writes them) or choose "
            f"weights for this sensor"
        )
    uses = np.bincount(list(matched.values()), minlength=weight.shape[1])
    out = np.zeros((weight.shape[0], len(input_bands), *weight.shape[2:]), dtype=weight.dtype)
    for c, j in matched.items():
        out[:, c] = summed[keys[j]] / uses[j]
    return out, matched


def _names(bands: Sequence[str | None]) -> str:
    return ", ".join(str(b) for b in bands if b is not None)


def first_conv_key(own: dict[str, Any], in_channels: int) -> str:
    """The encoder's first convolution: its first 4-D weight reading ``in_channels`` channels."""
    for k, v in own.items():
        if getattr(v, "ndim", 0) == 4 and v.shape[1] == in_channels:
            return k
    raise ConfigError(f"this encoder has no convolution reading the {in_channels} input channels; pretrained weights "
                      f"are loaded into convolutional encoders (resnet18/34/50, tu-... ResNets)")


def encoder_state(state: dict[str, Any], own: dict[str, Any], source: str, first: str | None = None) -> dict[str, Any]:
    """``state``'s tensors renamed to the encoder's own keys (``own``): wrapper prefixes removed.

    Tries each way of dropping the wrappers in :data:`_WRAPPERS` from ``state``'s keys (and of
    adding smp's ``model.`` of timm-universal encoders) and keeps the one that names the most of
    the encoder's tensors; every tensor of the encoder must then be there with its own shape, but
    for the input channels of the first convolution ``first``.

    Raises
    ------
    CheckpointError
        Tensors of the encoder are missing or of another shape (the message names some).
    """
    wanted = [k for k in own if not k.endswith("num_batches_tracked")]
    best: dict[str, Any] = {}
    for add in ("", "model."):
        for drop in _prefix_choices(state):
            renamed = {add + k[len(drop):]: v for k, v in state.items() if k.startswith(drop)}
            if sum(k in renamed for k in wanted) > sum(k in best for k in wanted):
                best = renamed
    missing = [k for k in wanted if k not in best]
    if missing:
        shown = ", ".join(list(state)[:4])
        raise CheckpointError(
            f"{source}: holds {len(state)} tensors ({shown}, ...) but not {len(missing)} of the encoder's "
            f"{len(wanted)} (e.g. {', '.join(missing[:3])}); expected weights of this encoder (pass --encoder to "
            f"match the file: a resnet50 file needs --encoder resnet50)"
        )
    def fits(k: str) -> bool:
        a, b = tuple(best[k].shape), tuple(own[k].shape)
        return a == b or (k == first and len(a) == 4 and len(b) == 4 and (a[0], *a[2:]) == (b[0], *b[2:]))

    wrong = [f"{k} {tuple(best[k].shape)} vs {tuple(own[k].shape)}" for k in wanted if not fits(k)]
    if wrong:
        raise CheckpointError(f"{source}: tensors of another shape than the encoder's: {'; '.join(wrong[:3])}; "
                              f"expected weights of this encoder (--encoder to match the file)")
    return {k: best[k] for k in wanted}


def _prefix_choices(state: dict[str, Any]) -> list[str]:
    """"" and every run of wrapper prefixes that starts the keys."""
    out = [""]
    frontier = [""]
    while frontier:
        nxt = []
        for p in frontier:
            for w in _WRAPPERS:
                q = p + w
                if q not in out and any(k.startswith(q) for k in state):
                    out.append(q)
                    nxt.append(q)
        frontier = nxt
    return out


def pretrained_encoder(spec: str | os.PathLike[str]) -> str | None:
    """The smp encoder a published name or a geoseg checkpoint directory holds (None for a file)."""
    if str(spec) in PUBLISHED:
        return PUBLISHED[str(spec)].encoder
    if Path(spec).is_dir() and (Path(spec) / CARD).is_file():
        return read_card(spec).encoder
    return None


def resolve_pretrained(spec: str | os.PathLike[str],
                       bands: Sequence[str] | None = None) -> tuple[Path, tuple[str | None, ...]]:
    """``(file, its first convolution's bands)`` for a path, a geoseg checkpoint directory or a
    published name (:func:`pretrained_encoder` gives the encoder the latter two hold).

    A published name is downloaded once into the cache; its bands and encoder are known (``bands``
    may still override them), as are a checkpoint's (its card's bands; validity planes and bands
    of unknown names are left out). A file needs ``bands``.

    Raises
    ------
    ConfigError
        Neither an existing file nor a published name; a file without ``bands``.
    CheckpointError
        The download failed (offline, refused, damaged).
    """
    text = str(spec)
    if Path(text).is_dir() and (Path(text) / CARD).is_file():
        card = read_card(text)
        named = [b if band_key(b) else None for b in card.bands]
        own = (*named, *([None] * (network_channels(card) - len(named))))  # validity planes follow the bands
        return Path(text) / WEIGHTS, tuple(bands) if bands else own
    if text in PUBLISHED:
        pub = PUBLISHED[text]
        return cached_download(pub.url, text), tuple(bands) if bands else pub.bands
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigError(f"--pretrained {text}: no such file, and not a published name; expected a weights file "
                          f"(.safetensors, .pt, .pth), a geoseg checkpoint directory or one of {', '.join(PUBLISHED)}")
    if not bands:
        raise ConfigError(f"--pretrained {text}: the bands its first convolution reads are not known; name them in "
                          f"order with --pretrained-bands (e.g. red,green,blue for ImageNet weights, "
                          f"coastal,blue,green,red,nir08,swir16,swir22 for Landsat OLI surface reflectance)")
    return path, tuple(bands)


def load_pretrained(model: Any, spec: str | os.PathLike[str], input_bands: Sequence[str | None],
                    bands: Sequence[str] | None = None) -> dict[str, Any]:
    """Load pretrained encoder weights into ``model.encoder``, the first convolution adapted by band name.

    Parameters
    ----------
    model : an smp model (its ``encoder`` is loaded; decoder and head keep their initial weights)
    spec : a weights file or a :data:`PUBLISHED` name
    input_bands : the name of each input channel of the model (None for one that is not a band)
    bands : the weights' first-convolution bands (needed for a file)

    Returns
    -------
    The record the model card keeps: what was loaded, its sha256, the weights' bands, each
    matched input band, the input channels that start from zero and the first convolution's key.
    """
    import torch

    path, wbands = resolve_pretrained(spec, bands)
    raw = load_state_dict_file(path)
    raw = _unwrap(raw, str(path))
    own = model.encoder.state_dict()
    first = first_conv_key(own, len(input_bands))
    state = encoder_state(raw, own, str(path), first)
    try:
        kernel, matched = adapt_first_conv(state[first].float().numpy(), wbands, input_bands)
    except ConfigError as e:
        raise ConfigError(f"--pretrained {spec}: {e}") from None
    state[first] = torch.from_numpy(kernel).to(own[first].dtype)
    for k, v in own.items():  # counters the file may lack keep the encoder's own
        state.setdefault(k, v)
    model.encoder.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    return {
        "pretrained": str(spec),
        "pretrained_file": str(path),
        "pretrained_sha256": sha256_file(path),
        "pretrained_bands": list(wbands),
        "matched_bands": {str(input_bands[c]): wbands[j] for c, j in sorted(matched.items())},
        "zero_channels": [str(b) for c, b in enumerate(input_bands) if c not in matched],
        "first_conv": first,
    }


def _unwrap(obj: Any, source: str) -> dict[str, Any]:
    """The tensors of a saved state dict, from inside ``{"state_dict": ...}``/``{"model": ...}`` wrappers."""
    import torch

    for _ in range(3):
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in ("state_dict", "model", "teacher", "student", "net") if
                          isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, dict) else {}
    if not tensors:
        raise CheckpointError(f"{source}: holds no tensors; expected a state dict of weights (name -> tensor)")
    return tensors


def freeze_encoder(model: Any, first: str | None, frozen: bool) -> None:
    """Stop (or restart) the encoder's weights learning, all but its first convolution ``first``.

    Batch-norm layers keep normalising with, and updating, the statistics of the batches they
    see (the model stays in training mode), so they follow the new data while frozen.
    """
    for name, p in model.encoder.named_parameters():
        if name != first:
            p.requires_grad_(not frozen)
