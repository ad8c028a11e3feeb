"""TemporalUNet (U-TAE style): shapes, masking of missing dates, order and batch invariance, errors, training."""

from __future__ import annotations

import pytest
import torch

from geoseg.errors import ConfigError, TileError
from geoseg.ml.temporal import TemporalUNet, _aggregate, positional_encoding

C = 3  # bands per date
K = 4  # classes
SIZE = 32
SMALL = {"decoder_channels": (32, 16, 16, 8), "n_head": 4, "d_k": 4, "d_model": 32}


def _net(**kw: object) -> TemporalUNet:
    torch.manual_seed(0)
    return TemporalUNet(in_channels=C, classes=K, **{**SMALL, **kw})  # type: ignore[arg-type]


def _inputs(t: int, b: int = 1, size: int = SIZE, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random bands, all pixels observed, increasing day numbers."""
    g = torch.Generator().manual_seed(seed)
    bands = torch.randn(b, t * C, size, size, generator=g)
    valid = torch.ones(b, t, size, size)
    days = torch.sort(torch.randint(0, 365, (b, t), generator=g).float(), dim=1).values
    return torch.cat([bands, valid], dim=1), days


def _mask_date(x: torch.Tensor, t: int, date: int) -> torch.Tensor:
    """Mark ``date`` missing everywhere (validity 0, bands filled with 0)."""
    x = x.clone()
    x[:, date * C:(date + 1) * C] = 0.0
    x[:, t * C + date] = 0.0
    return x


def _take_dates(x: torch.Tensor, days: torch.Tensor, t: int, order: list[int]
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The dates ``order`` of a ``t``-date input (a permutation, or a subset), bands, validity and days together."""
    b, _, h, w = x.shape
    bands = x[:, : t * C].reshape(b, t, C, h, w)[:, order].reshape(b, len(order) * C, h, w)
    valid = x[:, t * C:][:, order]
    return torch.cat([bands, valid], dim=1), days[..., order]


def test_shape_and_variable_number_of_dates() -> None:
    net = _net().eval()
    with torch.no_grad():
        for t in (3, 5):
            x, days = _inputs(t, b=2)
            y = net(x, days)
            assert y.shape == (2, K, SIZE, SIZE)
            assert torch.isfinite(y).all()
        y1 = net(*_inputs(3, b=1)[:1], torch.tensor([5, 50, 90]))  # (T,) integer days are broadcast
    assert y1.shape == (1, K, SIZE, SIZE)
    assert net.size_multiple == 16 and TemporalUNet.takes_days is True


def test_missing_date_does_not_leak() -> None:
    net = _net().eval()
    t = 4
    x, days = _inputs(t, b=2)
    x = _mask_date(x, t, 1)
    with torch.no_grad():
        ref = net(x, days)
        x2, days2 = x.clone(), days.clone()
        x2[:, 1 * C:2 * C] = torch.randn(2, C, SIZE, SIZE) * 5  # garbage under a 0 validity plane
        days2[:, 1] = days2[:, 1] + 123.0
        changed = net(x2, days2)
        # the same with the missing date removed from the sequence altogether
        without = net(*_take_dates(x, days, t, [0, 2, 3]))
    assert torch.allclose(ref, changed, atol=1e-5)
    assert torch.allclose(ref, without, atol=1e-4)
    # and an observed date does matter
    with torch.no_grad():
        x3 = x.clone()
        x3[:, 0:C] += 1.0
        assert not torch.allclose(net(x3, days), ref, atol=1e-3)


def test_partly_missing_date_masked_per_coarse_cell() -> None:
    """A date missing over one 16x16 coarse cell only: garbage there changes nothing in that
    cell's neighbourhood's attention (exactly zero weight at that cell)."""
    net = _net().eval()
    t = 3
    x, days = _inputs(t, size=64)
    x[:, t * C + 2, :16, :16] = 0.0  # date 2 missing over the top-left coarse cell
    x[:, 2 * C:3 * C, :16, :16] = 0.0
    x2 = x.clone()
    x2[:, 2 * C:3 * C, :16, :16] = 7.0  # not filled: the model fills it itself
    with torch.no_grad():
        assert torch.allclose(net(x, days), net(x2, days), atol=1e-5)


def test_date_order_invariance() -> None:
    net = _net().eval()
    t = 5
    x, days = _inputs(t, b=2)
    x = _mask_date(x, t, 3)
    x[:, t * C + 0, 8:20, 4:30] = 0.0  # some partly missing pixels too
    order = [4, 2, 0, 3, 1]
    with torch.no_grad():
        ref = net(x, days)
        permuted = net(*_take_dates(x, days, t, order))
    assert torch.allclose(ref, permuted, atol=1e-5)


def test_all_dates_missing_is_finite() -> None:
    net = _net().eval()
    t = 3
    x, days = _inputs(t, b=2)
    x[:, : t * C] = 0.0
    x[:, t * C:] = 0.0
    with torch.no_grad():
        y = net(x, days)
    assert torch.isfinite(y).all()
    # in training mode too, with gradients
    net.train()
    y = net(x, days)
    y.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_batch_independence() -> None:
    net = _net().eval()
    t = 4
    x, days = _inputs(t, b=2)
    x = _mask_date(x, t, 2)
    with torch.no_grad():
        both = net(x, days)
        alone = net(x[:1], days[:1])
    assert torch.allclose(both[:1], alone, atol=1e-5)


def test_positional_encoding_values() -> None:
    pe = positional_encoding(torch.tensor([[0.0, 30.0]]), 5, max_period=1000.0)
    assert pe.shape == (1, 2, 5)
    assert torch.allclose(pe[0, 0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0]))
    day = torch.tensor(30.0)
    assert torch.allclose(pe[0, 1, :2], torch.stack([day.sin(), day.cos()]))
    assert torch.allclose(pe[0, 1, 2], (day / 1000.0 ** 0.4).sin())


def test_bad_inputs_raise_clear_errors() -> None:
    net = _net().eval()
    x, days = _inputs(3)
    with pytest.raises(ValueError, match=r"x has 12 channels but 4 dates of 3 bands need T\*\(C\+1\) = 16"):
        net(x, torch.arange(4.0))
    with pytest.raises(ValueError, match=r"x has 11 channels"):
        net(x[:, :11], days)
    with pytest.raises(ValueError, match=r"days must have shape \(B, T\) = \(1, T\)"):
        net(x, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"days must have shape"):
        net(x, torch.zeros(1, 3, 1))
    with pytest.raises(ValueError, match="days must be finite"):
        net(x, torch.tensor([1.0, float("nan"), 3.0]))
    with pytest.raises(TileError, match="multiples of 16"):
        net(x[..., :24], days)
    with pytest.raises(ValueError, match="float tensor"):
        net(x[0], days)


@pytest.mark.parametrize(
    ("kw", "pattern"),
    [
        ({"decoder_channels": (32, 16, 8)}, r"decoder_channels has 3 entries but encoder_depth is 4"),
        ({"decoder_channels": (32, 16, 0, 8)}, r"decoder_channels must be positive integers, got \(32, 16, 0, 8\)"),
        ({"n_head": 0}, r"n_head must be an integer >= 1, got 0"),
        ({"n_head": -2}, r"n_head must be an integer >= 1"),
        ({"d_model": 30}, r"d_model \(30\) must be divisible by n_head \(4\)"),
        ({"max_period": 0.0}, r"max_period must be a positive number"),
        ({"encoder_name": "resnet0"}, r"encoder_name 'resnet0' is not a segmentation-models-pytorch encoder"),
        ({"in_channels": 0}, r"in_channels must be an integer >= 1"),
    ],
)
def test_bad_constructor_args(kw: dict[str, object], pattern: str) -> None:
    args = {"in_channels": C, "classes": K, **SMALL, **kw}
    with pytest.raises(ConfigError, match=pattern):
        TemporalUNet(**args)  # type: ignore[arg-type]


def test_gradients_reach_every_part() -> None:
    net = _net().train()
    t = 3
    x, days = _inputs(t, b=2)
    x = _mask_date(x, t, 0)
    target = torch.randint(0, K, (2, SIZE, SIZE), generator=torch.Generator().manual_seed(3))
    loss = torch.nn.functional.cross_entropy(net(x, days), target)
    loss.backward()
    grads = {name: p.grad for name, p in net.named_parameters()}
    # smp's resnet keeps layer4 at encoder_depth=4 but never runs it: no gradient there
    unused = {name for name in grads if name.startswith("encoder.layer4.")}
    assert all(grads[name] is None for name in unused)
    for name, g in grads.items():
        if name not in unused:
            assert g is not None and torch.isfinite(g).all(), name
    for part in ("encoder.conv1.", "encoder.layer3.", "temporal.query", "temporal.key.", "temporal.in_proj.",
                 "temporal.out_proj.", "decoder.", "segmentation_head."):
        total = sum(float(g.abs().sum()) for name, g in grads.items() if name.startswith(part) and g is not None)
        assert total > 0, part


def _rise_or_fall(b: int, t: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class 1 where band 0 rises over the season, 0 where it falls (8x8 blocks, finer than the
    16x16 coarse cells, so the skips must carry it too). Dates follow a 300-day schedule with
    +-10 days of jitter, one date per sample is missing everywhere, and the dates are shuffled
    in the tensor: only the day numbers say which comes first."""
    labels = torch.randint(0, 2, (b, SIZE // 8, SIZE // 8), generator=g).repeat_interleave(8, 1).repeat_interleave(8, 2)
    days = torch.linspace(0, 300, t) + (torch.rand(b, t, generator=g) - 0.5) * 20
    slope = (labels.float() * 2 - 1)[:, None]  # (b, 1, H, W)
    bands = torch.randn(b, t, C, SIZE, SIZE, generator=g) * 0.3
    bands[:, :, 0] += ((days - 150) / 100)[:, :, None, None] * slope
    valid = torch.ones(b, t, SIZE, SIZE)
    valid[torch.arange(b), torch.randint(0, t, (b,), generator=g)] = 0.0
    bands = bands * valid[:, :, None]
    order = torch.randperm(t, generator=g)
    x = torch.cat([bands[:, order].reshape(b, t * C, SIZE, SIZE), valid[:, order]], dim=1)
    return x, days[:, order], labels


def test_learns_a_temporal_pattern() -> None:
    torch.manual_seed(0)
    net = TemporalUNet(in_channels=C, classes=2, **SMALL).train()  # type: ignore[arg-type]
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        x, days, labels = _rise_or_fall(4, 5, g)
        loss = torch.nn.functional.cross_entropy(net(x, days), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:3]) / 3, sum(losses[-5:]) / 5
    assert last < 0.5 * first, [round(v, 3) for v in losses]


def test_bf16_autocast_and_channels_last() -> None:
    net = _net().eval()
    t = 4
    x, days = _inputs(t, b=2)
    x = _mask_date(x, t, 1)
    with torch.no_grad():
        ref = net(x, days)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = net(x, days)
        assert y.shape == ref.shape and torch.isfinite(y).all()
        assert (y.float() - ref).abs().mean() < 0.1 * ref.abs().mean()
        net = net.to(memory_format=torch.channels_last)
        y_cl = net(x.contiguous(memory_format=torch.channels_last), days)
    assert torch.allclose(y_cl, ref, atol=1e-4)


def test_skip_levels_follow_their_own_masks() -> None:
    """At a skip level, a date missing under a fine cell (a cloud smaller than the coarse cell)
    gets no weight there, whatever its features; elsewhere it keeps its weight; the weights
    still sum to 1 over the dates (features of ones aggregate to ones)."""
    t, c = 3, 8
    feats = torch.randn(1, t, c, 8, 8)
    attn = torch.softmax(torch.randn(1, 2, t, 2, 2), dim=2)  # coarse weights, 2 heads
    observed = torch.ones(1, t, 16, 16, dtype=torch.bool)
    observed[:, 1, :2, :2] = False  # date 1 missing under the level's cell (0, 0) only
    out = _aggregate(feats, attn, observed)
    loud = feats.clone()
    loud[:, 1] = 1e3
    out_loud = _aggregate(loud, attn, observed)
    assert torch.allclose(out[..., 0, 0], out_loud[..., 0, 0], atol=1e-4)
    assert not torch.allclose(out[..., 1, 1], out_loud[..., 1, 1])
    ones = _aggregate(torch.ones(1, t, c, 8, 8), attn, observed)
    assert torch.allclose(ones, torch.ones_like(ones), atol=1e-5)
    # a cell no date observed keeps the coarse weights: finite, still summing to 1
    observed[:, :, 4:6, 4:6] = False
    ones = _aggregate(torch.ones(1, t, c, 8, 8), attn, observed)
    assert torch.allclose(ones, torch.ones_like(ones), atol=1e-5)
