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

import contextlib
import dataclasses
import datetime
import hashlib
import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from geoseg import __version__
from geoseg.classes import ClassTable
from geoseg.errors import CheckpointError, ConfigError

__all__ = [
    "check_sha256",
    "ARCHITECTURES",
    "DEFAULT_ARCH",
    "DEFAULT_ENCODER",
    "ModelCard",
    "default_arch_kwargs",
    "resolved_arch_kwargs",
    "build_model",
    "build_from_card",
    "network_channels",
    "output_channels",
    "mark_outputs",
    "OUTPUT_SETS",
    "TEMPORAL_ARCHS",
    "tile_multiple",
    "model_multiple",
    "save_checkpoint",
    "load_checkpoint",
    "read_card",
    "sha256_file",
]

#: Architecture name -> smp class name (``utae``: geoseg's own :class:`geoseg.ml.temporal.TemporalUNet`).
#: Names are case-insensitive on input.
ARCHITECTURES: dict[str, str] = {
    "unet": "Unet",
    "deeplabv3plus": "DeepLabV3Plus",
    "segformer": "Segformer",
    "utae": "TemporalUNet",
}
#: Architectures that read a stack date by date (they need its dates; any number of dates).
TEMPORAL_ARCHS = frozenset({"utae"})
DEFAULT_ARCH = "unet"
DEFAULT_ENCODER = "resnet18"
#: Default U-Net shape: the encoder pools 4 times (output stride 16), a light decoder.
UNET_DEFAULTS: dict[str, Any] = {"encoder_depth": 4, "decoder_channels": [128, 64, 32, 16]}
DEFAULT_ENCODERS = {"unet": "resnet18", "deeplabv3plus": "resnet18", "segformer": "mit_b0", "utae": "resnet18"}

WEIGHTS = "model.safetensors"
CARD = "model.json"
#: The per-pixel forest fused with the network (:mod:`geoseg.ml.forest`), when the card names one.
FOREST = "forest.safetensors"
FORMAT_VERSION = 1
#: The output sets a model card may list (:attr:`ModelCard.outputs`).
OUTPUT_SETS = (["classes"], ["classes", "boundary"])
#: Tensors of at most this many values are allocated when a network is sized (see :func:`_meta_if_large`).
SMALL_TENSOR = 4096


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
    #: The training stack's dates (ISO), for a model that reads the stack date by date: per-date
    #: validity planes, a pixel mapped when enough of its dates are observed (see
    #: :mod:`geoseg.core.dates`). Empty: the bands are anonymous channels, judged by ``valid_rule``.
    dates: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    geoseg_version: str = ""
    weights_sha256: str = ""
    format_version: int = FORMAT_VERSION
    #: What tile sides must be divisible by (recorded when saved, so that planning a run
    #: needs neither torch nor a model build); 0 in cards written before it was recorded.
    size_multiple: int = 0
    #: The per-pixel forest fused with the network (:mod:`geoseg.ml.forest`): ``weight`` (its
    #: share of the probabilities), ``sha256`` of :data:`FOREST`, how it was fitted and chosen.
    #: Empty: the network alone.
    forest: dict[str, Any] = field(default_factory=dict)
    #: What the network outputs, in channel order: ``classes`` (one logit per class), then
    #: ``boundary`` for a model trained with field polygons (``train --fields``): one logit of
    #: the pixel lying on a field's edge, which ``polygonize`` separates touching fields on.
    outputs: list[str] = field(default_factory=lambda: ["classes"])
    #: For a boundary model, how its fields are best separated, chosen on the validation blocks at
    #: training: ``{"threshold": p}`` (a probability) or ``{"threshold": None}`` (not at all);
    #: empty: geoseg's defaults.
    separation: dict[str, Any] = field(default_factory=dict)

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
        _check_card(d, source)
        if d.get("format_version", 1) > FORMAT_VERSION:
            raise CheckpointError(
                f"{source}: checkpoint format {d['format_version']} is newer than this geoseg reads "
                f"({FORMAT_VERSION}); upgrade geoseg"
            )
        d["classes"] = ClassTable.from_dict(d["classes"], f"{source} (classes)")
        return cls(**d)

    @property
    def boundary(self) -> bool:
        """True for a model with a field-boundary output (:attr:`outputs`)."""
        return "boundary" in self.outputs

    @property
    def separation_tag(self) -> str | None:
        """What the confidence raster's ``GEOSEG_SEPARATION`` tag says of this model's fields
        (:func:`geoseg.core.instances.separation_from_tag`), or None (no choice recorded)."""
        if not self.boundary or "threshold" not in self.separation:
            return None
        t = self.separation["threshold"]
        return "none" if t is None else f"{float(t):g}"

    @property
    def temporal(self) -> bool:
        """True for an architecture that reads the dates one by one (any number of them)."""
        return self.arch.lower() in TEMPORAL_ARCHS

    @property
    def bands_per_date(self) -> int:
        """Bands of each date (``in_channels`` for a model that does not read dates)."""
        return self.in_channels // len(self.dates) if self.dates else self.in_channels

    @property
    def multiple(self) -> int:
        """What tile sizes must be divisible by for this model (the recorded value, else
        worked out by building the architecture)."""
        return self.size_multiple or tile_multiple(self.arch, self.encoder, self.arch_kwargs)


def _version() -> str:
    return __version__


#: The fix a hand-edited or damaged model.json is told.
_RESTORE = "model.json was edited or damaged - restore the checkpoint from its source"
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def _whole(least: int) -> Callable[[Any], bool]:
    """A check: an int (not a bool) of at least ``least``."""
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= least


def _numbers(v: Any) -> bool:
    """A check: a list of ints and floats (not bools)."""
    return isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)


def _shown(v: Any) -> str:
    """``repr(v)``, cut to 80 characters."""
    r = repr(v)
    return r if len(r) <= 80 else r[:77] + "..."


def _finite(v: float) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:  # an int beyond float's range
        return False


#: model.json key -> (check of its value, what is expected). ``classes`` is checked by ClassTable,
#: ``weights_sha256`` on its own (a card without it has a message of its own).
_CARD_VALUES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "arch": (lambda v: isinstance(v, str) and v.lower() in ARCHITECTURES,
             f"one of {sorted(ARCHITECTURES)}"),
    "encoder": (lambda v: isinstance(v, str) and v != "", "an encoder name, e.g. 'resnet18'"),
    "in_channels": (_whole(1), "a whole number of input bands, at least 1"),
    "arch_kwargs": (lambda v: isinstance(v, dict),
                    "a mapping of options for the architecture (e.g. encoder_depth)"),
    "bands": (lambda v: isinstance(v, list) and all(isinstance(b, str) for b in v), "a list of band names"),
    "band_mean": (_numbers, "a list of numbers, one per input band"),
    "band_std": (_numbers, "a list of numbers, one per input band"),
    "tile": (_whole(1), "a tile side in pixels, at least 1"),
    "overlap": (_whole(0), "a halo in pixels, at least 0"),
    "valid_rule": (lambda v: v in ("all", "any"), "'all' or 'any'"),
    "dates": (lambda v: isinstance(v, list) and all(isinstance(x, str) and _iso_day(x) for x in v),
              "a list of dates as YYYY-MM-DD"),
    "metrics": (lambda v: isinstance(v, dict), "a mapping"),
    "training": (lambda v: isinstance(v, dict), "a mapping"),
    "geoseg_version": (lambda v: isinstance(v, str), "a version string"),
    "format_version": (_whole(1), "a whole number, at least 1"),
    "size_multiple": (_whole(0), "a whole number of pixels, at least 0 (0: worked out from the architecture)"),
    "outputs": (lambda v: v in OUTPUT_SETS, f"one of {OUTPUT_SETS} (the network's outputs in channel order)"),
    "separation": (lambda v: isinstance(v, dict) and (not v or (set(v) <= {"threshold", "f1"} and (
        v.get("threshold") is None or (isinstance(v["threshold"], (int, float)) and not isinstance(v["threshold"], bool)
                                       and 0 < v["threshold"] <= 1)))),
                   "{} or a mapping with threshold (a probability above 0, or null: no separation)"),
    "forest": (lambda v: isinstance(v, dict) and (not v or (
        isinstance(v.get("weight"), (int, float)) and not isinstance(v.get("weight"), bool)
        and 0 <= v["weight"] <= 1 and isinstance(v.get("sha256"), str) and bool(_SHA256.match(v["sha256"])))),
               f"{{}} (no forest) or a mapping with weight (0 to 1) and sha256 (64 hex digits of {FOREST})"),
}


def _iso_day(text: str) -> datetime.date | None:
    """The date ``text`` (YYYY-MM-DD) names, else None."""
    try:
        return datetime.date.fromisoformat(text) if len(text) == 10 else None
    except ValueError:
        return None


def _check_card(d: Mapping[str, Any], source: str = CARD) -> None:
    """Refuse a model card (``model.json`` as parsed) that contradicts itself, before anything is built.

    Checks each value's type and range, that ``in_channels``, ``band_mean``, ``band_std`` and
    ``bands`` (when given) count the same bands, that the statistics are finite (stds above 0),
    that ``overlap`` leaves each ``tile`` a core, and that ``weights_sha256`` is there to check
    the weights against. ``classes`` is left to :class:`ClassTable`.

    Raises
    ------
    CheckpointError
        Naming ``source``, the key, the value found and what was expected.

    Examples
    --------
    >>> try:
    ...     _check_card({"arch": "unet", "in_channels": 2, "band_mean": [0.0], "band_std": [1.0, 1.0]})
    ... except CheckpointError as e:
    ...     print(str(e).split(";")[0])
    model.json: in_channels is 2, but bands names 0, band_mean holds 1 and band_std 2
    """

    def refuse(found: str, expected: str) -> NoReturn:
        raise CheckpointError(f"{source}: {found}; expected {expected} - {_RESTORE}")

    for key, (ok, expected) in _CARD_VALUES.items():
        if key in d and not ok(d[key]):
            refuse(f"{key} is {_shown(d[key])}", expected)
    n = d.get("in_channels", 0)
    bands, mean, std = d.get("bands", []), d.get("band_mean", []), d.get("band_std", [])
    if len(mean) != n or len(std) != n or (bands and len(bands) != n):
        refuse(f"in_channels is {n}, but bands names {len(bands)}, band_mean holds {len(mean)} and band_std "
               f"{len(std)}", "the same count in each (one name, mean and std per input band; bands may be empty)")
    for i, v in enumerate(mean):
        if not _finite(v):
            refuse(f"band_mean[{i}] is {v!r}", "a finite number (the band's mean)")
    for i, v in enumerate(std):
        if not (_finite(v) and v > 0):
            refuse(f"band_std[{i}] is {v!r}",
                   "a finite number above 0 (the band's standard deviation divides its pixels)")
    dates = d.get("dates", [])
    days = [_iso_day(x) for x in dates]
    if dates and (n % len(dates) or any(a >= b for a, b in zip(days, days[1:]))):
        refuse(f"dates holds {len(dates)} dates {_shown(dates)} for in_channels {n}",
               "dates in increasing order that divide in_channels (the same bands on every date)")
    if str(d.get("arch", "")).lower() in TEMPORAL_ARCHS and not dates:
        refuse(f"arch is {d['arch']!r} without dates", "the training stack's dates (a temporal model reads them)")
    tile, overlap = d.get("tile", 256), d.get("overlap", 32)
    if 2 * overlap >= tile:
        refuse(f"overlap is {overlap} with tile {tile}", f"less than half the tile ({tile / 2:g}), so that each tile "
                                                         f"keeps a core")
    sha = d.get("weights_sha256")
    weights = Path(source).with_name(WEIGHTS)
    if sha in (None, ""):
        raise CheckpointError(
            f"{source}: has no weights_sha256, so {weights} cannot be checked against it; expected the sha256 that "
            f"geoseg records with every checkpoint - if you trust these weights, run `sha256sum {weights}` and add "
            f"the 64 hex digits to {source} as \"weights_sha256\""
        )
    if not (isinstance(sha, str) and _SHA256.match(sha)):
        refuse(f"weights_sha256 is {_shown(sha)}", f"64 hex digits (the sha256 of {WEIGHTS})")


def _arch_class(arch: str) -> Any:
    key = arch.lower()
    if key not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    if key in TEMPORAL_ARCHS:
        # deferred like smp below: geoseg.ml.temporal loads torch, which reading a card must not
        from geoseg.ml.temporal import TemporalUNet

        return TemporalUNet
    import segmentation_models_pytorch as smp

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


#: Default U-TAE shape: the encoder pools 3 times, so the temporal attention reads 80 m cells at 10 m
#: (U-TAE's own choice of depth; a fourth stage was slower and learned less in the same time).
UTAE_DEFAULTS: dict[str, Any] = {"encoder_depth": 3, "decoder_channels": [64, 32, 16]}


def default_arch_kwargs(arch: str) -> dict[str, Any]:
    """The default keyword arguments geoseg builds ``arch`` with."""
    return dict({"unet": UNET_DEFAULTS, "utae": UTAE_DEFAULTS}.get(arch.lower(), {}))


def resolved_arch_kwargs(arch: str, arch_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The keyword arguments :func:`build_model` hands the smp class for ``arch`` (training stores them in the card).

    The caller's options over geoseg's defaults; a U-Net given an ``encoder_depth`` but no
    ``decoder_channels`` gets one decoder stage per encoder stage: the last ``encoder_depth``
    of smp's ``[256, 128, 64, 32, 16]``.

    Examples
    --------
    >>> resolved_arch_kwargs("unet", {"encoder_depth": 3})
    {'encoder_depth': 3, 'decoder_channels': [64, 32, 16]}
    >>> resolved_arch_kwargs("unet") == UNET_DEFAULTS, resolved_arch_kwargs("segformer")
    (True, {})
    """
    user = dict(arch_kwargs or {})
    kwargs = {**default_arch_kwargs(arch), **user}
    if arch.lower() in ("unet", "utae") and "encoder_depth" in user and "decoder_channels" not in user:
        kwargs["decoder_channels"] = [256, 128, 64, 32, 16][5 - int(user["encoder_depth"]) :]
    return kwargs


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
    arch : {"unet", "deeplabv3plus", "segformer", "utae"}
    encoder : str, optional
        Any smp encoder name (or ``tu-<timm name>``); default per architecture
        (``resnet18`` for U-Net, DeepLabV3+ and U-TAE, ``mit_b0`` for SegFormer).
    in_channels : int
        Input channels: the bands of the stack (bands x dates, plus one validity plane per date
        for a channel-stacked model that reads the dates); for ``utae``, the bands of one date.
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
    kwargs = resolved_arch_kwargs(arch, arch_kwargs)
    try:
        if arch.lower() in TEMPORAL_ARCHS:
            return cls(encoder_name=enc, in_channels=in_channels, classes=num_classes, **kwargs)
        return cls(encoder_name=enc, encoder_weights=None, in_channels=in_channels, classes=num_classes, **kwargs)
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"cannot build {arch} with encoder {enc!r} and options {kwargs}: {e}") from None


def network_channels(card: ModelCard) -> int:
    """Input channels of the network a card describes: the stack's bands, plus a validity plane
    per date for a channel-stacked model that reads dates; a date's bands for a temporal one.

    Examples
    --------
    >>> from geoseg.classes import default_classes
    >>> card = ModelCard("unet", "resnet18", 8, default_classes(), dates=["2024-06-01", "2024-07-01"])
    >>> network_channels(card), network_channels(dataclasses.replace(card, arch="utae"))
    (10, 4)
    """
    if not card.dates:
        return card.in_channels
    return card.bands_per_date if card.temporal else card.in_channels + len(card.dates)


def output_channels(n_classes: int, boundary: bool) -> int:
    """The network's output channels: a logit per class, and one for field boundaries."""
    return n_classes + int(boundary)


def mark_outputs(model: Any, boundary: bool) -> Any:
    """Record on ``model`` whether its last output channel is the boundary logit
    (``geoseg_boundary``, read by :mod:`geoseg.ml.infer` and the wrappers); returns it."""
    model.geoseg_boundary = bool(boundary)
    return model


def build_from_card(card: ModelCard) -> Any:
    """Build the (untrained) network a card describes."""
    model = build_model(card.arch, card.encoder, network_channels(card),
                        output_channels(len(card.classes), card.boundary), **card.arch_kwargs)
    return mark_outputs(model, card.boundary)


def tile_multiple(arch: str = DEFAULT_ARCH, encoder: str | None = None, arch_kwargs: dict[str, Any] | None = None) -> int:
    """What a tile side must be divisible by for this model: max(16, encoder output stride).

    Examples
    --------
    >>> tile_multiple("unet"), tile_multiple("unet", "resnet18", {"encoder_depth": 5}), tile_multiple("segformer")
    (16, 32, 32)
    """
    import torch

    # sized without memory; probing must not consume the caller's random stream
    with torch.random.fork_rng(devices=[]), _meta_if_large():
        model = build_model(arch, encoder, 3, 2, **(arch_kwargs or {}))
    return model_multiple(model)


@contextlib.contextmanager
def _meta_if_large() -> Iterator[None]:
    """Create every tensor of more than :data:`SMALL_TENSOR` values on the meta device (a shape
    without memory) while a network is built, so that sizing it costs no memory, whatever its options.

    ``torch.device("meta")`` alone is not enough: smp makes a first convolution for other than 3
    bands with the legacy ``torch.Tensor(sizes)``, which ignores it (a card with ``in_channels``
    1000000 allocated a 12 GB first convolution), and SegFormer reads its small drop-path schedule back with
    ``.item()``, which a meta tensor cannot answer. At the dispatcher, the legacy constructor and
    the factories that take a size (empty, zeros, ones, full, rand...) all arrive as aten calls
    with a ``size`` argument: those of more than :data:`SMALL_TENSOR` values go to the meta
    device; smaller ones, and factories without a size (such as the schedule's ``linspace``), are
    made as usual.
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    meta = torch.device("meta")

    class MetaIfLarge(TorchDispatchMode):  # type: ignore[no-untyped-call]  # torch's class is untyped
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = dict(kwargs or {})
            schema = [a.name for a in func._schema.arguments]
            if args and schema[:1] == ["size"] and "device" in schema and math.prod(args[0]) > SMALL_TENSOR:
                kwargs["device"] = meta
            return func(*args, **kwargs)

    with MetaIfLarge():  # type: ignore[no-untyped-call]
        yield


def model_multiple(model: Any) -> int:
    """:func:`tile_multiple` of a built model: max(16, its encoder's output stride, or what it says it needs)."""
    own = getattr(model, "size_multiple", None)
    return max(16, int(own if isinstance(own, int) else getattr(model.encoder, "output_stride", 32)))


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_sha256(path: str | os.PathLike[str], expected: str, fix: str) -> None:
    """Raise :class:`CheckpointError` naming ``path`` unless its sha256 is ``expected`` (as the
    card of its checkpoint records it); ``fix`` ends the message."""
    actual = sha256_file(path)
    if actual != expected.lower():
        raise CheckpointError(f"{path}: sha256 {actual[:16]}... does not match {CARD} ({expected[:16]}...); the "
                              f"file was changed or damaged - {fix}")


def save_checkpoint(path: str | os.PathLike[str], model: Any, card: ModelCard, forest: Any = None) -> ModelCard:
    """Write ``model`` and ``card`` as a checkpoint directory, atomically; with ``forest`` (a
    :class:`geoseg.ml.forest.Forest`, whose weight ``card.forest`` holds) its file too.

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
        if forest is not None:
            from safetensors.numpy import save_file as save_arrays

            save_arrays(forest.tensors(), str(tmp / FOREST), metadata={"format": "geoseg-forest"})
            card = dataclasses.replace(card, forest={**card.forest, "sha256": sha256_file(tmp / FOREST)})
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
    """Read and check ``model.json`` of a checkpoint directory (no weights loaded).

    Raises
    ------
    CheckpointError
        A missing directory or file, damaged JSON, or a card that contradicts itself or lacks the
        weights hash (see :func:`_check_card`).
    """
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
            obj = dict(load_file(str(p), device="cpu"))
        except Exception as e:  # noqa: BLE001 - safetensors raises several types for damaged files
            raise _unreadable(p, e) from None
    else:
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
    _check_finite(obj, p)
    return obj


def _unreadable(path: Path, e: Exception) -> CheckpointError:
    return CheckpointError(f"{path}: not a readable safetensors file ({e}); re-export it")


def _check_finite(state: Mapping[str, Any], source: Path) -> None:
    """Refuse weights that hold NaN or infinity (a model that would predict nothing), naming the tensors."""
    import torch

    bad = []
    for k, t in state.items():
        # a finite sum means finite values (NaN and infinity carry through a sum, which is much quicker
        # than counting); only a tensor whose sum is not (or only overflowed) is counted
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()) and \
                not bool(torch.isfinite(t.sum())):
            n = t.numel() - int(torch.isfinite(t).sum())
            if n:
                bad.append(f"{k} ({n} of {t.numel()})")
    if bad:
        shown = ", ".join(bad[:5]) + (f", ... ({len(bad) - 5} more)" if len(bad) > 5 else "")
        raise CheckpointError(
            f"{source}: {len(bad)} tensor{'s hold' if len(bad) > 1 else ' holds'} non-finite values (NaN or infinity): "
            f"{shown}; expected finite weights - the training diverged or the file is damaged: retrain the model "
            f"(e.g. with a lower learning rate) or restore the checkpoint from its source"
        )


def _weights_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of each tensor in a safetensors file, from its header (no tensor data is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for damaged files
        raise _unreadable(path, e) from None


def load_checkpoint(path: str | os.PathLike[str], device: str = "cpu") -> tuple[Any, ModelCard]:
    """Load a checkpoint directory: check the weights hash, build the model, load weights.

    Nothing large is allocated before the card has been checked against the weights: the card
    is read and checked (:func:`read_card`), the weights hashed, and the network the card
    describes is sized without memory and compared, tensor by tensor, with the shapes in the
    weights file's header; only then is it built and are the weights read (and refused if they
    hold NaN or infinity).

    Returns
    -------
    (model, card)
        The model is in eval mode on ``device``; its ``geoseg_checkpoint`` attribute holds the
        checkpoint directory, so that errors raised while it runs can name it.

    Raises
    ------
    CheckpointError
        Missing files, damaged JSON, a card that contradicts itself or has no weights hash, a
        weights hash that differs from the card, weights that do not fit the architecture the
        card describes (names the keys that differ), or weights holding NaN or infinity.
    """
    d = Path(path)
    card = read_card(d)
    check_sha256(d / WEIGHTS, card.weights_sha256, "restore the checkpoint from its source")
    _check_fits_weights(card, d)
    import torch

    with torch.random.fork_rng(devices=[]):  # random init is overwritten; keep the caller's RNG untouched
        model = build_from_card(card)
    state = load_state_dict_file(d / WEIGHTS)
    load_into(model, state, str(d / WEIGHTS))
    model.geoseg_checkpoint = str(d)
    return model.to(device).eval(), card


def _check_fits_weights(card: ModelCard, d: Path) -> None:
    """Size the network ``card`` describes without allocating it, and refuse it when its tile
    multiple differs from the card's or its tensors differ from those in the weights file."""
    import torch

    try:
        with torch.random.fork_rng(devices=[]), _meta_if_large():
            model = build_from_card(card)
    except ConfigError as e:  # an unknown encoder or an option the architecture does not take
        raise CheckpointError(f"{d / CARD}: {e} - {_RESTORE}") from None
    needed = model_multiple(model)
    if card.size_multiple and card.size_multiple != needed:
        raise CheckpointError(
            f"{d / CARD}: size_multiple is {card.size_multiple}, but {card.arch}/{card.encoder} with these options "
            f"needs tile sides divisible by {needed}; the card was edited - set it to {needed} or remove the key"
        )
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    _check_shapes(own, _weights_shapes(d / WEIGHTS), str(d / WEIGHTS),
                  "the weights and model.json come from different models: restore the checkpoint from its source "
                  "(was model.json edited?)")


def _check_shapes(own: Mapping[str, tuple[int, ...]], theirs: Mapping[str, tuple[int, ...]], source: str,
                  fix: str = "the weights and model.json come from different models") -> None:
    """Refuse weights (``theirs``: name -> shape) that do not fit a network (``own``), naming the
    keys and shapes that differ and how many values each holds, then ``fix``."""
    missing = sorted(set(own) - set(theirs))
    unexpected = sorted(set(theirs) - set(own))
    shapes = sorted(k for k in set(own) & set(theirs) if own[k] != theirs[k])
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} of another shape (e.g. {k}: {theirs[k]} vs {own[k]})")
    n_own, n_theirs = (sum(math.prod(s) for s in x.values()) for x in (own, theirs))
    raise CheckpointError(
        f"{source}: weights do not fit the architecture in model.json: " + "; ".join(parts)
        + f"; model.json describes a network of {n_own:,} values, the weights hold {n_theirs:,} - {fix}"
    )


def load_into(model: Any, state: dict[str, Any], source: str) -> None:
    """``model.load_state_dict(state)`` with an error that names the keys and shapes that differ."""
    _check_shapes({k: tuple(v.shape) for k, v in model.state_dict().items()},
                  {k: tuple(v.shape) for k, v in state.items()}, source)
    model.load_state_dict(state, strict=True)
