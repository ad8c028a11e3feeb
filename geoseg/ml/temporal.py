"""A U-TAE-style network that segments a time series of images (one tile, several dates).

After Garnot & Landrieu (2021), *Panoptic Segmentation of Satellite Image Time Series with
Convolutional Temporal Attention Networks* (U-TAE). This is an independent implementation
written for geoseg's input layout and masking rules; it is not that paper's code.

Architecture
------------
1. **Shared encoder.** Every date is an image of ``C + 1`` channels: its ``C`` bands and its
   validity plane. One segmentation-models-pytorch encoder (``get_encoder(encoder_name,
   in_channels=C + 1, depth=encoder_depth, weights=None)``) runs on all ``B * T`` images, so
   the weights do not depend on the number of dates. The validity plane tells the encoder
   which pixels were filled rather than observed.
2. **Lightweight temporal attention (L-TAE) at the coarsest level**, per pixel of the
   coarsest feature map. Each date's feature vector is layer-normalised and projected to
   ``d_model``; a sinusoidal encoding of the date's day number is added (the same
   ``d_model / n_head`` sines and cosines in every head's channel group, so that each head's
   values say when they were seen). A linear layer gives one key of ``d_k`` per head and
   date; each head has one learned *master query*; the weights are
   ``softmax_t(q_h . k_{t,h} / sqrt(d_k))`` over the dates. The output is, per head, the
   weighted sum over dates of that head's ``d_model / n_head`` channel group, the groups
   concatenated, then projected back to the encoder's coarsest channel count (linear, layer
   norm, ReLU).
3. **Temporal aggregation of the skips.** The attention weights ``(B, n_head, T, h, w)`` are
   upsampled bilinearly to each skip level, masked there by that level's own view of the
   validity planes (each date's weight times the share of the cell's pixels it observed,
   renormalised over the dates), and collapse its per-date features: the skip's
   channels are split into ``n_head`` consecutive groups, group ``g`` weighted by head ``g``.
   When the skip's channel count is not divisible by ``n_head``, every channel is weighted by
   the mean of the heads instead (still a convex combination of the dates, and it keeps every
   head's say rather than dropping the remainder channels). The weights still sum to 1 over
   the dates at every level.
4. **Decoder.** smp's ``UnetDecoder`` on the aggregated features, then a 3x3 convolution to
   ``classes`` logits at input resolution.

Input layout
------------
``forward(x, days)`` takes the flat layout the rest of geoseg hands a model:
``x`` is ``(B, T * C + T, H, W)``; channels ``[0, T * C)`` are the bands, date-major
(date 1's ``C`` bands, then date 2's, ...), already normalised; channels ``[T * C, T * C + T)``
are the validity planes, 1.0 observed and 0.0 missing, one per date in the same order.
``days`` is ``(B, T)`` or ``(T,)``: each date's day number (days since any fixed origin, e.g.
day of the year). ``T`` is read from ``days`` and may change from call to call.

Masking rules
-------------
* A pixel is observed on a date where its validity is above 0.5. The bands of unobserved
  pixels are set to 0 inside the model whatever they hold (NaN included), so an input that
  was not filled, or filled with another value, behaves like one filled with 0.
* A date counts as **missing at a coarse cell** when no pixel under that cell is observed
  (the validity planes are max-pooled to the coarsest resolution). Missing dates get a
  weight of exactly 0 in the attention (key padding): neither their bands nor their day
  numbers can change the output there. A date observed nowhere in a tile therefore has no
  effect on the tile's output at all.
* Where **every** date is missing at a coarse cell, the weights fall back to uniform over
  the dates, so the output stays finite; predictions there are meaningless and are for the
  caller to discard (it knows from the validity planes).
* The attention masks reach every skip level: at a finer cell, a date counts in proportion
  to the share of the cell's pixels it observed, so a cloud smaller than a coarse cell takes
  its date out of the fine features under it (with per-pixel clouds, the coarse mask alone
  would let the zero-filled pixels' features in). Where no date observed a finer cell, the
  coarse weights are kept (the output there is for the caller to discard).

Tile sides must be multiples of :attr:`TemporalUNet.size_multiple` (``2 ** encoder_depth``).
The module works under ``torch.autocast`` (the attention softmax runs in float32) and with
channels-last inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral
from typing import Any, ClassVar

# This module is only imported where torch is used, so torch and smp are imported at the top.
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.base import SegmentationHead
from segmentation_models_pytorch.base.initialization import initialize_decoder, initialize_head
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from segmentation_models_pytorch.encoders import get_encoder
from torch import Tensor, nn

from geoseg.errors import ConfigError, TileError

__all__ = ["TemporalUNet", "positional_encoding"]

#: A pixel is observed on a date where its validity plane is above this.
VALID_THRESHOLD = 0.5


def positional_encoding(days: Tensor, dim: int, max_period: float = 1000.0) -> Tensor:
    """Sinusoidal encoding of day numbers: ``(..., T)`` -> ``(..., T, dim)``, float32.

    Channel ``2i`` is ``sin(day / max_period ** (2i / dim))`` and channel ``2i + 1`` the
    matching cosine (an odd ``dim`` drops the last cosine). The encoding depends on the day
    number alone, never on the date's position in the sequence, so reordering the dates
    reorders the encodings with them.

    Examples
    --------
    >>> pe = positional_encoding(torch.tensor([0.0, 100.0]), 4)
    >>> pe.shape, pe[0].tolist()
    (torch.Size([2, 4]), [0.0, 1.0, 0.0, 1.0])
    """
    half = (dim + 1) // 2
    exponent = torch.arange(half, device=days.device, dtype=torch.float32) * (2.0 / dim)
    inv_freq = float(max_period) ** -exponent
    angle = days.float()[..., None] * inv_freq
    return torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(-2)[..., :dim]


class _TemporalAttention(nn.Module):
    """L-TAE with one master query per head, applied to every pixel of a feature map.

    ``forward(feats (B, T, C, h, w), days (B, T), observed (B, T, h, w) bool)`` returns the
    aggregated map ``(B, out_channels, h, w)`` and the weights ``(B, n_head, T, h, w)``
    (float32, summing to 1 over T).
    """

    def __init__(self, in_channels: int, out_channels: int, *, n_head: int, d_k: int, d_model: int,
                 max_period: float) -> None:
        super().__init__()
        self.n_head, self.d_k, self.d_model, self.max_period = n_head, d_k, d_model, max_period
        # Per-pixel, per-date normalisation (over channels only): a norm over dates would let a
        # missing date's features shift the others.
        self.in_norm = nn.LayerNorm(in_channels)
        self.in_proj = nn.Linear(in_channels, d_model)
        self.key = nn.Linear(d_model, n_head * d_k)
        self.query = nn.Parameter(torch.randn(n_head, d_k) * math.sqrt(2.0 / d_k))
        self.out_proj = nn.Linear(d_model, out_channels)
        self.out_norm = nn.LayerNorm(out_channels)

    def forward(self, feats: Tensor, days: Tensor, observed: Tensor) -> tuple[Tensor, Tensor]:
        b, t, _, h, w = feats.shape
        n, group = self.n_head, self.d_model // self.n_head
        seq = feats.permute(0, 1, 3, 4, 2)  # (B, T, h, w, C): linear layers act on the last axis
        e = self.in_proj(self.in_norm(seq))
        # each head's channel group gets the whole encoding, so every head's values carry the date
        pe = positional_encoding(days, group, self.max_period).repeat(1, 1, n)  # (B, T, d_model)
        e = e + pe[:, :, None, None, :].to(e.dtype)
        keys = self.key(e).reshape(b, t, h, w, n, self.d_k)
        scores = (keys.float() * self.query.float()).sum(-1) / math.sqrt(self.d_k)  # (B, T, h, w, n)
        scores = scores.permute(0, 4, 1, 2, 3)  # (B, n, T, h, w)
        observed = observed[:, None]  # (B, 1, T, h, w)
        none_observed = ~observed.any(dim=2, keepdim=True)
        # Where no date is observed, equal scores for all dates give uniform weights (finite
        # output); elsewhere missing dates get -inf, hence a weight of exactly 0.
        scores = scores.masked_fill(none_observed, 0.0)
        scores = scores.masked_fill(~(observed | none_observed), float("-inf"))
        attn = torch.softmax(scores, dim=2)
        values = e.reshape(b, t, h, w, n, group)
        weights = attn.permute(0, 2, 3, 4, 1)[..., None].to(values.dtype)  # (B, T, h, w, n, 1)
        out = (weights * values).sum(dim=1).reshape(b, h, w, self.d_model)
        out = F.relu(self.out_norm(self.out_proj(out)))
        return out.permute(0, 3, 1, 2), attn


def _aggregate(feats: Tensor, attn: Tensor, observed: Tensor | None = None) -> Tensor:
    """Collapse per-date features ``(B, T, C, hs, ws)`` with weights ``(B, n_head, T, h, w)``.

    The weights are upsampled bilinearly to ``(hs, ws)``. With ``observed`` ((B, T, H, W) bool,
    the input's validity) each date's weight is then scaled by the share of the cell's input
    pixels it observed and the weights renormalised, so a date missing under a fine cell (a
    cloud smaller than the coarse cell) does not count there; a cell that no date observed
    keeps the upsampled weights. Channel group ``g`` of ``n_head`` is weighted by head ``g``;
    if ``C`` is not divisible by ``n_head``, all channels are weighted by the mean of the heads.
    """
    b, t, c, hs, ws = feats.shape
    n = attn.shape[1]
    if attn.shape[-2:] != (hs, ws):
        attn = F.interpolate(attn.reshape(b, n * t, *attn.shape[-2:]), size=(hs, ws), mode="bilinear",
                             align_corners=False).reshape(b, n, t, hs, ws)
    if observed is not None:
        share = F.adaptive_avg_pool2d(observed.float(), (hs, ws))[:, None]  # (B, 1, T, hs, ws)
        masked = attn.float() * share
        total = masked.sum(dim=2, keepdim=True)
        attn = torch.where(total > 1e-6, masked / total.clamp_min(1e-6), attn.float())
    attn = attn.to(feats.dtype)
    if c % n == 0:
        grouped = feats.reshape(b, t, n, c // n, hs, ws)
        weights = attn.transpose(1, 2)[:, :, :, None]  # (B, T, n, 1, hs, ws)
        return (weights * grouped).sum(dim=1).reshape(b, c, hs, ws)
    return (attn.mean(dim=1)[:, :, None] * feats).sum(dim=1)


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}; pass e.g. {name}={max(minimum, 4)}")
    return int(value)


class TemporalUNet(nn.Module):
    """U-TAE-style segmentation of an image time series: shared encoder, L-TAE, U-Net decoder.

    See the module docstring for the architecture, the input layout and the masking rules.

    Parameters
    ----------
    in_channels
        Bands per date (``C``). The encoder sees ``C + 1`` channels per date: the bands
        (missing pixels filled with 0) and the date's 0/1 validity plane.
    classes
        Number of output classes (logit channels).
    encoder_name
        A segmentation-models-pytorch encoder name; built with ``weights=None``, nothing is
        downloaded.
    encoder_depth
        Number of encoder stages; the coarsest map is ``2 ** encoder_depth`` times smaller.
    decoder_channels
        Output channels of the decoder's blocks, one per encoder stage.
    n_head, d_k, d_model
        Attention heads, key size per head, and width of the attention's values
        (``d_model`` must be divisible by ``n_head``).
    max_period
        Longest period of the sinusoidal day encoding, in days.

    Raises
    ------
    ConfigError
        For an argument out of range, ``decoder_channels`` of the wrong length, ``d_model``
        not divisible by ``n_head``, or an encoder name or depth smp does not know.

    Examples
    --------
    >>> net = TemporalUNet(in_channels=4, classes=3, decoder_channels=(32, 16, 16, 8)).eval()
    >>> x = torch.zeros(1, 3 * (4 + 1), 32, 32)
    >>> net(x, torch.tensor([10.0, 40.0, 70.0])).shape, net.size_multiple
    (torch.Size([1, 3, 32, 32]), 16)
    """

    #: Tells callers to pass the dates' day numbers as the second argument of ``forward``.
    takes_days: ClassVar[bool] = True

    def __init__(
        self,
        *,
        in_channels: int,
        classes: int,
        encoder_name: str = "resnet18",
        encoder_depth: int = 4,
        decoder_channels: Sequence[int] = (128, 64, 32, 16),
        n_head: int = 8,
        d_k: int = 4,
        d_model: int = 128,
        max_period: float = 1000.0,
    ) -> None:
        super().__init__()
        in_channels = _check_int("in_channels", in_channels, 1)
        classes = _check_int("classes", classes, 1)
        encoder_depth = _check_int("encoder_depth", encoder_depth, 1)
        n_head = _check_int("n_head", n_head, 1)
        d_k = _check_int("d_k", d_k, 1)
        d_model = _check_int("d_model", d_model, 1)
        if d_model % n_head:
            raise ConfigError(f"d_model ({d_model}) must be divisible by n_head ({n_head}); "
                              f"pass e.g. d_model={n_head * max(1, round(d_model / n_head))}")
        if isinstance(max_period, bool) or not isinstance(max_period, (int, float)) or not (
                math.isfinite(max_period) and max_period > 0):
            raise ConfigError(f"max_period must be a positive number of days, got {max_period!r}; pass e.g. 1000.0")
        if isinstance(decoder_channels, (str, bytes)) or not isinstance(decoder_channels, Sequence):
            raise ConfigError(f"decoder_channels must be a sequence of {encoder_depth} integers, "
                              f"got {decoder_channels!r}")
        if len(decoder_channels) != encoder_depth:
            raise ConfigError(f"decoder_channels has {len(decoder_channels)} entries but encoder_depth is "
                              f"{encoder_depth}; give one decoder channel count per encoder stage "
                              f"(e.g. {tuple(max(16, 128 >> i) for i in range(encoder_depth))})")
        if any(isinstance(ch, bool) or not isinstance(ch, Integral) or ch < 1 for ch in decoder_channels):
            raise ConfigError(f"decoder_channels must be positive integers, got {decoder_channels!r}; "
                              "pass e.g. (128, 64, 32, 16)")
        try:
            encoder = get_encoder(encoder_name, in_channels=in_channels + 1, depth=encoder_depth, weights=None)
        except KeyError:
            raise ConfigError(f"encoder_name {encoder_name!r} is not a segmentation-models-pytorch encoder; "
                              "pass one of segmentation_models_pytorch.encoders.get_encoder_names(), "
                              "e.g. 'resnet18'") from None
        except (ValueError, TypeError, AssertionError) as e:
            raise ConfigError(f"encoder {encoder_name!r} cannot be built with encoder_depth={encoder_depth} "
                              f"({e}); pass a depth it supports, e.g. encoder_depth=4") from None

        self.in_channels, self.classes = in_channels, classes
        self.encoder_name, self.encoder_depth = encoder_name, encoder_depth
        self.decoder_channels = tuple(int(ch) for ch in decoder_channels)
        self.n_head, self.d_k, self.d_model, self.max_period = n_head, d_k, d_model, float(max_period)

        # smp keeps the stages past encoder_depth (resnet's layer4 at depth 4) without running
        # them; they stay, so that the state dict keeps smp's layout.
        self.encoder = encoder
        coarse_channels = int(encoder.out_channels[-1])
        self.temporal = _TemporalAttention(coarse_channels, coarse_channels, n_head=n_head, d_k=d_k,
                                           d_model=d_model, max_period=float(max_period))
        self.decoder = UnetDecoder(encoder_channels=list(encoder.out_channels), decoder_channels=self.decoder_channels,
                                   n_blocks=encoder_depth, use_norm="batchnorm")
        self.segmentation_head = SegmentationHead(in_channels=self.decoder_channels[-1], out_channels=classes,
                                                  kernel_size=3)
        initialize_decoder(self.decoder)
        initialize_head(self.segmentation_head)

    @property
    def size_multiple(self) -> int:
        """What tile sides must be divisible by: ``2 ** encoder_depth``."""
        return int(2**self.encoder_depth)

    def _check_inputs(self, x: Tensor, days: Tensor | Sequence[float]) -> Tensor:
        """Check shapes; return ``days`` as float32 ``(B, T)`` on ``x``'s device."""
        if not isinstance(x, Tensor) or x.ndim != 4 or not x.is_floating_point():
            raise ValueError(f"x must be a float tensor (B, T*C + T, H, W), got "
                             f"{type(x).__name__} {tuple(getattr(x, 'shape', ()))} {getattr(x, 'dtype', '')}")
        b, ch, h, w = x.shape
        days_t = torch.as_tensor(days, device=x.device)
        if days_t.ndim == 1:
            days_t = days_t[None].expand(b, -1)
        if days_t.ndim != 2 or days_t.shape[0] != b or days_t.shape[1] < 1:
            raise ValueError(f"days must have shape (B, T) = ({b}, T) or (T,) with T >= 1 dates, got "
                             f"{tuple(days_t.shape)}; pass one day number per date")
        if days_t.is_complex() or days_t.dtype == torch.bool:
            raise ValueError(f"days must hold real day numbers, got dtype {days_t.dtype}")
        t, c = int(days_t.shape[1]), self.in_channels
        if ch != t * (c + 1):
            raise ValueError(f"x has {ch} channels but {t} dates of {c} bands need T*(C+1) = {t * (c + 1)} "
                             f"({t * c} bands, date-major, then {t} validity planes); pass as many day numbers "
                             "as dates, or build the model with the right in_channels")
        days_t = days_t.float()
        if not bool(torch.isfinite(days_t).all()):
            bad = int((~torch.isfinite(days_t)).sum())
            raise ValueError(f"days must be finite, got {bad} NaN or infinite day number(s); give missing dates "
                             "any finite day number (their validity planes mask them out)")
        m = self.size_multiple
        if h % m or w % m:
            raise TileError(f"input is {h}x{w} pixels but tile sides must be multiples of {m} "
                            f"(2 ** encoder_depth); pad or crop to e.g. {-(-h // m) * m}x{-(-w // m) * m}")
        return days_t

    def forward(self, x: Tensor, days: Tensor) -> Tensor:
        """Logits ``(B, classes, H, W)`` for ``x`` ``(B, T*C + T, H, W)`` and ``days`` ``(B, T)`` or ``(T,)``.

        Raises
        ------
        ValueError
            If ``x`` has not ``T * (C + 1)`` channels for the ``T`` dates in ``days``, ``days``
            has the wrong shape, or a day number is not finite.
        TileError
            If ``H`` or ``W`` is not a multiple of :attr:`size_multiple`.
        """
        days_t = self._check_inputs(x, days)
        b, _, h, w = x.shape
        t, c = days_t.shape[1], self.in_channels
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()

        observed = x[:, t * c:] > VALID_THRESHOLD  # (B, T, H, W)
        bands = x[:, : t * c].reshape(b, t, c, h, w)
        bands = torch.where(observed[:, :, None], bands, torch.zeros((), dtype=bands.dtype, device=bands.device))
        images = torch.cat([bands, observed[:, :, None].to(bands.dtype)], dim=2).reshape(b * t, c + 1, h, w)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)

        feats = self.encoder(images)  # [input, /2, /4, ..., /2**depth], each (B*T, C_i, h_i, w_i)
        coarse = feats[-1]
        hc, wc = coarse.shape[-2:]
        # a date counts at a coarse cell when any pixel under that cell is observed
        observed_c = F.adaptive_max_pool2d(observed.float(), (hc, wc)) > 0.5
        out, attn = self.temporal(coarse.reshape(b, t, *coarse.shape[1:]), days_t, observed_c)
        skips = [_aggregate(f.reshape(b, t, *f.shape[1:]), attn, observed) for f in feats[1:-1]]
        # the decoder drops the first (full-resolution) feature and only reads its size
        full = x.new_zeros((b, 0, h, w))
        return self.segmentation_head(self.decoder([full, *skips, out]))  # type: ignore[no-any-return]
