"""Segmentation models: an architecture registry, and the checkpoint directory format.

Models are segmentation-models-pytorch networks, always built with
``encoder_weights=None``: nothing is downloaded. Weights come from a local checkpoint.

Checkpoint = a directory holding

``model.safetensors``
    The weights (safetensors: loading never unpickles anything).
``model.json``
    The :class:`ModelCard`: architecture, encoder, input bands and their normalisation
    statistics, class table, tile size and overlap, nodata rule, training metrics,
    geoseg version and the sha256 of the weights file (checked on load).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .classes import ClassTable
from .errors import CheckpointError, ConfigError

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_ARCH",
    "DEFAULT_ENCODER",
    "ModelCard",
    "build_model",
    "build_from_card",
    "tile_multiple",
    "model_multiple",
    "save_checkpoint",
    "load_checkpoint",
    "read_card",
    "sha256_file",
]

#: Architecture name -> smp class name. Names are case-insensitive on input.
ARCHITECTURES: dict[str, str] = {
    "unet": "Unet",
    "deeplabv3plus": "DeepLabV3Plus",
    "segformer": "Segformer",
}
DEFAULT_ARCH = "unet"
DEFAULT_ENCODER = "resnet18"
#: Default U-Net shape: the encoder pools 4 times (output stride 16), a light decoder.
UNET_DEFAULTS: dict[str, Any] = {"encoder_depth": 4, "decoder_channels": [128, 64, 32, 16]}
DEFAULT_ENCODERS = {"unet": "resnet18", "deeplabv3plus": "resnet18", "segformer": "mit_b0"}

WEIGHTS = "model.safetensors"
CARD = "model.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelCard:
    """Everything needed to rebuild a model and feed it correctly (``model.json``)."""

    arch: str
    encoder: str
    in_channels: int
    classes: ClassTable
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    bands: list[str] = field(default_factory=list)
    band_mean: list[float] = field(default_factory=list)
    band_std: list[float] = field(default_factory=list)
    tile: int = 256
    overlap: int = 32
    valid_rule: str = "all"
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    geoseg_version: str = ""
    weights_sha256: str = ""
    format_version: int = FORMAT_VERSION
    #: What tile sides must be divisible by (recorded when saved, so that planning a run
    #: needs neither torch nor a model build); 0 in cards written before it was recorded.
    size_multiple: int = 0

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["classes"] = self.classes.to_dict()["classes"]
        return json.dumps(d, indent=2, sort_keys=False)

    @classmethod
    def from_json(cls, text: str, source: str = CARD) -> "ModelCard":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{source}: not valid JSON ({e}); the checkpoint is damaged - re-export it") from None
        if not isinstance(d, dict):
            raise CheckpointError(f"{source}: expected a JSON object, found {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [k for k in ("arch", "encoder", "in_channels", "classes") if k not in d]
        if missing:
            raise CheckpointError(f"{source}: missing keys {missing}; not a geoseg model card")
        unknown = sorted(set(d) - known)
        if unknown:
            raise CheckpointError(
                f"{source}: unknown keys {unknown}; written by a newer geoseg? (this is {_version()})"
            )
        if d.get("format_version", 1) > FORMAT_VERSION:
            raise CheckpointError(
                f"{source}: checkpoint format {d['format_version']} is newer than this geoseg reads "
                f"({FORMAT_VERSION}); upgrade geoseg"
            )
        d["classes"] = ClassTable.from_dict(d["classes"], f"{source} (classes)")
        return cls(**d)

    @property
    def multiple(self) -> int:
        """What tile sizes must be divisible by for this model (the recorded value, else
        worked out by building the architecture)."""
        return self.size_multiple or tile_multiple(self.arch, self.encoder, self.arch_kwargs)


def _version() -> str:
    from . import __version__

    return __version__


def _arch_class(arch: str) -> Any:
    import segmentation_models_pytorch as smp

    key = arch.lower()
    if key not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    return getattr(smp, ARCHITECTURES[key])


def _check_encoder(encoder: str) -> None:
    from segmentation_models_pytorch.encoders import get_encoder_names

    if encoder.startswith("tu-"):
        return
    names = get_encoder_names()
    if encoder not in names:
        close = [n for n in names if encoder.split("_")[0].split("-")[0] in n][:8]
        raise ConfigError(
            f"unknown encoder {encoder!r}; use an smp encoder name (e.g. {close or names[:8]}) "
            f"or a timm encoder as 'tu-<name>'"
        )


def default_arch_kwargs(arch: str) -> dict[str, Any]:
    """The default keyword arguments geoseg builds ``arch`` with."""
    return dict(UNET_DEFAULTS) if arch.lower() == "unet" else {}


def build_model(
    arch: str = DEFAULT_ARCH,
    encoder: str | None = None,
    in_channels: int = 16,
    num_classes: int = 7,
    **arch_kwargs: Any,
) -> Any:
    """Build an untrained smp model (``encoder_weights=None``: never downloads).

    Parameters
    ----------
    arch : {"unet", "deeplabv3plus", "segformer"}
    encoder : str, optional
        Any smp encoder name (or ``tu-<timm name>``); default per architecture
        (``resnet18`` for U-Net and DeepLabV3+, ``mit_b0`` for SegFormer).
    in_channels : int
        Bands of the input stack (bands x dates).
    num_classes : int
        Number of classes in the class table.
    **arch_kwargs
        Passed to the smp class; U-Net defaults to ``encoder_depth=4`` (pools 4 times)
        with decoder channels ``[128, 64, 32, 16]``.

    Raises
    ------
    ConfigError
        Unknown architecture or encoder (the message lists the choices).
    """
    cls = _arch_class(arch)
    enc = encoder or DEFAULT_ENCODERS[arch.lower()]
    _check_encoder(enc)
    if in_channels < 1 or num_classes < 1:
        raise ConfigError(f"in_channels and num_classes must be >= 1, got {in_channels} and {num_classes}")
    kwargs = {**default_arch_kwargs(arch), **arch_kwargs}
    if arch.lower() == "unet" and "encoder_depth" in arch_kwargs and "decoder_channels" not in arch_kwargs:
        kwargs["decoder_channels"] = [256, 128, 64, 32, 16][5 - int(arch_kwargs["encoder_depth"]) :]
    try:
        return cls(encoder_name=enc, encoder_weights=None, in_channels=in_channels, classes=num_classes, **kwargs)
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"cannot build {arch} with encoder {enc!r} and options {kwargs}: {e}") from None


def build_from_card(card: ModelCard) -> Any:
    """Build the (untrained) network a card describes."""
    return build_model(card.arch, card.encoder, card.in_channels, len(card.classes), **card.arch_kwargs)


def tile_multiple(arch: str = DEFAULT_ARCH, encoder: str | None = None, arch_kwargs: dict[str, Any] | None = None) -> int:
    """What a tile side must be divisible by for this model: max(16, encoder output stride).

    Examples
    --------
    >>> tile_multiple("unet"), tile_multiple("unet", "resnet18", {"encoder_depth": 5}), tile_multiple("segformer")
    (16, 32, 32)
    """
    import torch

    with torch.random.fork_rng(devices=[]):  # probing must not consume the caller's random stream
        model = build_model(arch, encoder, 3, 2, **(arch_kwargs or {}))
    return model_multiple(model)


def model_multiple(model: Any) -> int:
    """:func:`tile_multiple` of a built model: max(16, its encoder's output stride)."""
    return max(16, int(getattr(model.encoder, "output_stride", 32)))


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike[str], model: Any, card: ModelCard) -> ModelCard:
    """Write ``model`` and ``card`` as a checkpoint directory, atomically.

    The directory is assembled under a temporary name beside ``path`` and renamed into
    place; an existing checkpoint at ``path`` is replaced only once the new one is complete.
    Returns the card as written (with the weights hash and geoseg version filled in).
    """
    from safetensors.torch import save_file

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial-{uuid.uuid4().hex[:12]}")
    tmp.mkdir()
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})  # fixed metadata: same weights, same bytes
        card = dataclasses.replace(card, weights_sha256=sha256_file(tmp / WEIGHTS), geoseg_version=_version(),
                                   size_multiple=model_multiple(model))
        (tmp / CARD).write_text(card.to_json(), encoding="utf-8")
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:12]}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return card


def read_card(path: str | os.PathLike[str]) -> ModelCard:
    """Read and check ``model.json`` of a checkpoint directory (no weights loaded)."""
    d = Path(path)
    if not d.is_dir():
        if d.suffix in (".pt", ".pth", ".ckpt", ".bin"):
            raise CheckpointError(
                f"{d}: a pickle-based weights file; geoseg loads checkpoint directories "
                f"(model.safetensors + model.json) - use `geoseg train --init-from {d}` to import weights"
            )
        raise CheckpointError(f"{d}: no such checkpoint directory; expected a directory with {WEIGHTS} and {CARD}")
    for name in (CARD, WEIGHTS):
        if not (d / name).is_file():
            raise CheckpointError(f"{d}: {name} is missing; a checkpoint needs both {WEIGHTS} and {CARD}")
    return ModelCard.from_json((d / CARD).read_text(encoding="utf-8"), str(d / CARD))


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a weights file without unpickling: safetensors, or torch.load(weights_only=True)."""
    import torch

    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(p), device="cpu"))
        except Exception as e:  # noqa: BLE001 - safetensors raises several types for damaged files
            raise CheckpointError(f"{p}: not a readable safetensors file ({e}); re-export it") from None
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - refuse anything that is not plain tensors
        raise CheckpointError(
            f"{p}: refused to load ({str(e).splitlines()[0][:200]}); only plain tensor state dicts are read "
            f"(torch.load with weights_only=True) - nothing that could run code is unpickled"
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{p}: expected a state dict (name -> tensor), found {type(obj).__name__}")
    return obj


def load_checkpoint(path: str | os.PathLike[str], device: str = "cpu") -> tuple[Any, ModelCard]:
    """Load a checkpoint directory: check the weights hash, build the model, load weights.

    Returns
    -------
    (model, card)
        The model is in eval mode on ``device``.

    Raises
    ------
    CheckpointError
        Missing files, damaged JSON, a weights hash that differs from the card, or weights
        that do not fit the architecture the card describes (names the keys that differ).
    """
    d = Path(path)
    card = read_card(d)
    actual = sha256_file(d / WEIGHTS)
    if card.weights_sha256 and actual != card.weights_sha256:
        raise CheckpointError(
            f"{d / WEIGHTS}: sha256 {actual[:16]}... does not match model.json ({card.weights_sha256[:16]}...); "
            f"the weights were changed or damaged - restore the checkpoint from its source"
        )
    import torch

    with torch.random.fork_rng(devices=[]):  # random init is overwritten; keep the caller's RNG untouched
        model = build_from_card(card)
    needed = model_multiple(model)
    if card.size_multiple and card.size_multiple != needed:
        raise CheckpointError(
            f"{d / CARD}: size_multiple is {card.size_multiple}, but {card.arch}/{card.encoder} with these options "
            f"needs tile sides divisible by {needed}; the card was edited - set it to {needed} or remove the key"
        )
    state = load_state_dict_file(d / WEIGHTS)
    load_into(model, state, str(d / WEIGHTS))
    return model.to(device).eval(), card


def load_into(model: Any, state: dict[str, Any], source: str) -> None:
    """``model.load_state_dict(state)`` with an error that names the keys and shapes that differ."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} of another shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise CheckpointError(
            f"{source}: weights do not fit the architecture in model.json: " + "; ".join(parts)
            + " - the weights and model.json come from different models"
        )
    model.load_state_dict(state, strict=True)
