"""A per-pixel random forest stored as plain arrays, and the network fused with it.

A segmentation network sees a pixel's neighbourhood; a random forest sees each pixel's own
spectral (and spectral-temporal) values and, on a few thousand labelled pixels, is hard for a
network trained from scratch to beat there (``benchmarks/README.md``, real scenes). Their
errors differ, so their class probabilities averaged beat each of them. ``geoseg train``
fits a forest on the network's own input (the normalised bands, as the network sees them)
for the labelled pixels of the training blocks, picks the weight of the forest on the
validation blocks (:func:`choose_weight`), fits the forest again on the labelled pixels of
every block (the weight is chosen; the validation pixels can now teach the forest, as they
cannot teach the network without a second training) and stores it next to the weights; every
prediction then uses

    p = (1 - weight) * softmax(network logits) + weight * forest probabilities

Storage. The trees are flattened into one table of nodes (``forest.safetensors``,
:data:`geoseg.ml.model.FOREST`: child rows, split channel and threshold, the side a missing
value takes, and the class shares of each node), so loading one never unpickles anything and
the file is checked as data (:meth:`Forest.from_tensors`). A leaf's two children are itself and
its threshold is ``+inf``, so the torch walk moves every pixel the same number of steps (the
deepest tree's depth), a few gathers over all pixels and trees at once on the model's device.

Exactness. scikit-learn compares a float32 value with a float64 threshold; each threshold is
stored as the largest float32 not above it, which gives the same comparison for every
float32 value, so :func:`forest_proba` equals scikit-learn's ``predict_proba`` (to float32
rounding of the mean over trees; tested).

Size. Each tree is grown to at most :data:`MAX_LEAVES` leaves (best first, as scikit-learn's
``max_leaf_nodes`` does) and :data:`MAX_DEPTH` levels, which bounds the file (a few MB) and the
walk whatever the number of training pixels; on the real scenes of ``benchmarks/`` these caps
score as the unbounded forest does.

Context. A pixel's own values are little to go on in a single-date scene of 30 m pixels; its
neighbourhood says more (a field's mean colour, a field edge's spread). The forest can read,
besides each channel's value, its mean and standard deviation over the square of radius 1
(3 x 3 px) and 2 (5 x 5 px) around the pixel (:data:`CONTEXT`; :func:`context_features`).
``train`` fits a forest of each kind and keeps the one whose fusion with the network scores
best on the validation blocks (``benchmarks/README.md``, real scenes). The means are over the
pixels of the square inside the tile read (a tile's halo is wider than the radius, so a tile's
core reads the same context as the whole raster; the raster's own edges are padded as the
network's input is).

Speed. On a CPU the trees are handed to scikit-learn's compiled tree walk (rebuilt from the
arrays, nothing unpickled), which is many times quicker there than gathers; on a GPU the torch
walk runs on the device. Both give the same probabilities (tested).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.classes import NODATA
from geoseg.core.grid import Tile
from geoseg.core.metrics import confusion_matrix, scores
from geoseg.core.stitch import trim
from geoseg.errors import CheckpointError, ConfigError
from geoseg.io.labels import window_tile
from geoseg.ml.infer import DateInput, network_input, predict_proba, read_batch, read_batches
from geoseg.ml.model import CARD, FOREST, ModelCard, check_sha256, network_channels

__all__ = ["CONTEXT", "MAX_DEPTH", "MAX_LEAVES", "MAX_PIXELS", "MAX_ROW_BYTES", "TREES", "WEIGHTS", "Forest",
           "card_forest", "choose_weight", "context_features", "fit_forest", "forest_proba", "fuse",
           "fused_probabilities", "load_forest", "mix_loss", "training_pixels", "validation_probabilities",
           "with_forest"]

#: Trees of the forest (fewer than the 100 of Earth Engine's default: on the real scenes of
#: ``benchmarks/`` 64 score as 100 do, and each tree costs inference time).
TREES = 64
#: Leaves per tree at most, and its depth at most (see the module docstring, Size).
MAX_LEAVES = 1024
MAX_DEPTH = 20
#: Labelled training-block pixels the forest is fitted on at most (drawn evenly over the blocks; the
#: refit once the weight is chosen adds the validation blocks' pixels at the same share).
MAX_PIXELS = 200_000
#: Bytes of training rows at most (float32 features x pixels): a context forest over a long
#: stack reads 5 x its channels, so it is fitted on fewer pixels where they would pass this.
MAX_ROW_BYTES = 512 << 20
#: The forest weights :func:`choose_weight` tries.
WEIGHTS = tuple(round(w, 1) for w in np.linspace(0.0, 1.0, 11))
#: Pixels walked at once (bounds the walk's memory: a few int64 of this x trees).
_CHUNK = 16384
#: Radii (px) of the squares whose mean and standard deviation of each channel a context forest
#: reads beside the pixel's own values (see the module docstring, Context).
CONTEXT = (1, 2)
_KEYS = ("children", "feature", "threshold", "missing_left", "value", "roots")


@dataclass(frozen=True, eq=False)
class Forest:
    """Trees as one table of nodes, each tree's nodes one run of the table, children after parents.

    Attributes
    ----------
    children : ndarray (nodes, 2) int32
        Left and right child of each node (table rows); a leaf's are itself.
    feature : ndarray (nodes,) int32
        Input channel a node splits on (0 at leaves).
    threshold : ndarray (nodes,) float32
        A value goes left when ``value <= threshold`` (``+inf`` at leaves).
    missing_left : ndarray (nodes,) bool
        Where a NaN value goes.
    value : ndarray (nodes, classes) float32
        Class shares of the training pixels that reach the node (used at leaves).
    roots : ndarray (trees,) int32
        Each tree's root row; tree ``i`` holds rows ``roots[i]`` up to the next root.
    depth : int
        Steps from a root to the deepest leaf.
    context : tuple of int
        Radii of the squares whose channel means and standard deviations the trees read after the
        pixel's own channels (:func:`context_features`); empty: the pixel's channels only.
    """

    children: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    missing_left: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    depth: int
    context: tuple[int, ...] = ()
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)  # device tensors, rebuilt trees

    @property
    def n_classes(self) -> int:
        return int(self.value.shape[1])

    @property
    def n_nodes(self) -> int:
        return int(self.value.shape[0])

    @property
    def n_trees(self) -> int:
        return int(self.roots.size)

    def tensors(self) -> dict[str, np.ndarray]:
        """The arrays to save (:func:`save_forest`), the depth as a one-element array."""
        d = {k: np.ascontiguousarray(getattr(self, k)) for k in _KEYS}
        d["missing_left"] = d["missing_left"].astype(np.uint8)
        d["depth"] = np.array([self.depth], np.int32)
        if self.context:
            d["context"] = np.asarray(self.context, np.int32)
        return d

    @classmethod
    def from_tensors(cls, d: dict[str, np.ndarray], channels: int, classes: int, source: str) -> Forest:
        """A forest from :meth:`tensors`' arrays, checked as untrusted data: dtypes and shapes, each
        tree a run of rows whose children come after their parent inside the run (so every walk
        ends), split channels the model has, finite class shares and the stated depth; ``channels``
        and ``classes`` are the model's input channels and classes (a context forest reads
        ``channels x (1 + 2 x radii)`` features)."""
        def bad(what: str) -> CheckpointError:
            return CheckpointError(f"{source}: {what}; the forest file is damaged or was not written by geoseg "
                                   f"- retrain the model (or map without the forest: --no-forest)")

        missing = [k for k in (*_KEYS, "depth") if k not in d]
        if missing:
            raise bad(f"no {', '.join(missing)} array")
        want = {"children": np.int32, "feature": np.int32, "threshold": np.float32, "missing_left": np.uint8,
                "value": np.float32, "roots": np.int32, "depth": np.int32}
        wrong = [f"{k} is {d[k].dtype}, expected {np.dtype(t)}" for k, t in want.items() if d[k].dtype != t]
        if wrong:
            raise bad("; ".join(wrong))
        context: tuple[int, ...] = ()
        if "context" in d:
            c = d["context"]
            if c.dtype != np.int32 or c.ndim != 1 or not 1 <= c.size <= 4 or (c < 1).any() or (c > 16).any() \
                    or (np.diff(c) <= 0).any():
                raise bad(f"context radii {c.tolist()!r} ({c.dtype}), expected 1 to 4 increasing radii of 1 to 16 px")
            context = tuple(int(v) for v in c)
        features = channels * (1 + 2 * len(context))
        ch, feat, thr = d["children"], d["feature"], d["threshold"]
        miss, val, roots, depth = d["missing_left"], d["value"], d["roots"], d["depth"]
        n = val.shape[0] if val.ndim == 2 else 0
        if (n < 1 or val.shape[1] != classes or ch.shape != (n, 2) or feat.shape != (n,) or thr.shape != (n,)
                or miss.shape != (n,) or roots.ndim != 1 or roots.size == 0 or depth.shape != (1,)):
            raise bad(f"arrays of shapes {', '.join(f'{k} {tuple(d[k].shape)}' for k in (*_KEYS, 'depth'))}, "
                      f"expected trees of {classes} classes")
        ends = np.append(roots[1:], n).astype(np.int64)
        if roots[0] != 0 or (np.diff(roots.astype(np.int64)) <= 0).any():
            raise bad("tree roots that do not start at row 0 and increase")
        tree_end = ends[np.searchsorted(roots, np.arange(n), side="right") - 1]
        own = np.arange(n)
        leaf = ch[:, 0] == own
        inner = ~leaf
        if ((ch[:, 1] == own) != leaf).any() or (ch[inner] <= own[inner, None]).any() or \
                (ch[inner] >= tree_end[inner, None]).any():
            raise bad("child rows that are not after their parent inside its tree")
        if feat.min() < 0 or feat.max() >= features:
            raise bad(f"split channels up to {int(feat.max())}, but the model reads {channels} channels"
                      + (f" ({features} with their context)" if context else ""))
        if not np.isfinite(val).all() or np.isnan(thr).any():
            raise bad("class shares that are not finite or a NaN threshold")
        if _depth(ch, roots) != int(depth[0]):
            raise bad(f"a stated depth of {int(depth[0])}, but the trees are {_depth(ch, roots)} deep")
        return cls(ch, feat, thr, miss.astype(bool), val, roots, int(depth[0]), context)


def _depth(children: np.ndarray, roots: np.ndarray) -> int:
    """Steps from the roots to the deepest leaf (the rows must form trees, children after parents)."""
    node, depth = roots.astype(np.int64), 0
    while True:
        nxt = children[node].reshape(-1)
        nxt = nxt[nxt != np.repeat(node, 2)]
        if nxt.size == 0:
            return depth
        node, depth = nxt, depth + 1


def context_features(x: Any, context: Sequence[int], rows: tuple[int, int] | None = None) -> Any:
    """The features a forest of ``context`` radii reads (n, C x (1 + 2 x radii)) for the pixels of
    rows ``rows`` (all by default) of one tile ``x`` (C, H, W), a float torch tensor, row by row:
    each channel's value, then per radius each channel's mean and standard deviation over the
    square of that radius around the pixel, over the square's pixels inside the tile."""
    import torch
    import torch.nn.functional as F

    c, h, _ = x.shape
    r0, r1 = (0, h) if rows is None else rows
    own = x[:, r0:r1].reshape(c, -1)
    if not context:
        return own.T
    m = max(context)
    a0, a1 = max(0, r0 - m), min(h, r1 + m)  # rows that reach the rows asked for
    band = x[None, :, a0:a1].float()
    band_sq = band * band
    parts = [own]
    for r in context:
        k = 2 * r + 1
        mean = F.avg_pool2d(band, k, stride=1, padding=r, count_include_pad=False)
        sq = F.avg_pool2d(band_sq, k, stride=1, padding=r, count_include_pad=False)
        sd = torch.sqrt(torch.clamp(sq - mean * mean, min=0.0))
        parts += [mean[0, :, r0 - a0:r1 - a0].reshape(c, -1), sd[0, :, r0 - a0:r1 - a0].reshape(c, -1)]
    return torch.cat(parts).T


def fit_forest(x: np.ndarray, y: np.ndarray, n_classes: int, seed: int, trees: int = TREES,
               max_leaves: int = MAX_LEAVES, max_depth: int = MAX_DEPTH, context: Sequence[int] = ()) -> Forest:
    """A random forest (scikit-learn, ``trees`` trees of at most ``max_leaves`` leaves and
    ``max_depth`` levels, all cores) fitted on pixels ``x`` (n, features) float32 (NaN: missing)
    with class ids ``y`` (n,), flattened into a :class:`Forest` whose class shares have
    ``n_classes`` columns; ``context``: the radii ``x``'s features were made with
    (:func:`context_features`)."""
    try:
        from sklearn.ensemble import RandomForestClassifier
    except ImportError:  # a dependency of geoseg; a broken environment may still lack it
        raise ConfigError("the per-pixel forest needs scikit-learn, which is not installed: pip install "
                          "scikit-learn (or train with --no-forest)") from None
    rf = RandomForestClassifier(n_estimators=trees, max_leaf_nodes=max_leaves, max_depth=max_depth, n_jobs=-1,
                                random_state=seed)
    rf.fit(np.asarray(x, np.float32), np.asarray(y))
    columns = np.asarray(rf.classes_, np.int64)
    parts: list[tuple[np.ndarray, ...]] = []
    offset = 0
    roots = []
    for est in rf.estimators_:
        t = est.tree_
        n = int(t.node_count)
        leaf = t.children_left < 0
        own = np.arange(n, dtype=np.int64)
        ch = np.stack([np.where(leaf, own, t.children_left), np.where(leaf, own, t.children_right)], axis=1)
        thr64 = np.asarray(t.threshold, np.float64)
        thr = thr64.astype(np.float32)
        over = thr.astype(np.float64) > thr64  # rounded up: step down, so that v <= thr32 exactly when v <= thr64
        thr[over] = np.nextafter(thr[over], np.float32(-np.inf))
        thr[leaf] = np.inf
        shares = np.asarray(t.value, np.float64)[:, 0, :]
        shares = shares / np.maximum(shares.sum(axis=1, keepdims=True), 1e-300)
        v = np.zeros((n, n_classes), np.float32)
        v[:, columns] = shares
        miss = np.asarray(getattr(t, "missing_go_to_left", np.zeros(n, np.uint8)), bool)
        parts.append(((ch + offset).astype(np.int32), np.where(leaf, 0, t.feature).astype(np.int32), thr, miss, v))
        roots.append(offset)
        offset += n
    children, feature, threshold, missing, value = (np.concatenate(a) for a in zip(*parts))
    roots_a = np.asarray(roots, np.int32)
    return Forest(children, feature, threshold, missing, value, roots_a, _depth(children, roots_a), tuple(context))


def load_forest(path: str | os.PathLike[str], channels: int, classes: int) -> Forest:
    """Read and check a forest file written by :func:`save_forest` (see :meth:`Forest.from_tensors`)."""
    from safetensors.numpy import load_file

    try:
        arrays = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for damaged files
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); retrain the model (or map "
                              f"without the forest: --no-forest)") from None
    return Forest.from_tensors(arrays, channels, classes, str(path))


def card_forest(model_dir: str | os.PathLike[str], card: ModelCard) -> Forest | None:
    """The forest of a checkpoint directory whose card names one (checked against the card's
    sha256 and the model's channels and classes), else None."""
    if not card.forest:
        return None
    path = Path(model_dir) / FOREST
    fix = "restore the checkpoint from its source, or map without the forest (--no-forest)"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing, but {CARD} fuses a forest with the network (weight "
                              f"{card.forest['weight']}); {fix}")
    check_sha256(path, str(card.forest["sha256"]), fix)
    return load_forest(path, network_channels(card), len(card.classes))


def fuse(model: Any, model_dir: str | os.PathLike[str], card: ModelCard, forest: bool = True) -> Any:
    """``model`` fused with its checkpoint's forest at the card's weight (:func:`with_forest`); the
    model itself when the card has none or ``forest`` is False."""
    if not forest or not card.forest:
        return model
    return with_forest(model, card_forest(model_dir, card), float(card.forest["weight"]))


def _sklearn_trees(forest: Forest) -> list[tuple[Any, np.ndarray]] | None:
    """The trees as scikit-learn ``Tree`` objects (built from the arrays: scikit-learn's compiled
    walk, nothing unpickled) with each tree's class shares; None where this scikit-learn's tree
    internals differ from those this was written for (the torch walk then runs)."""
    if "sklearn" in forest._cache:
        return forest._cache["sklearn"]
    trees: list[tuple[Any, np.ndarray]] | None = []
    try:
        from sklearn.tree._tree import NODE_DTYPE, Tree

        ends = np.append(forest.roots[1:], forest.n_nodes)
        for r0, r1 in zip(forest.roots.tolist(), ends.tolist()):
            ch = forest.children[r0:r1].astype(np.int64) - r0
            leaf = ch[:, 0] == np.arange(r1 - r0)
            nodes = np.zeros(r1 - r0, NODE_DTYPE)
            nodes["left_child"] = np.where(leaf, -1, ch[:, 0])
            nodes["right_child"] = np.where(leaf, -1, ch[:, 1])
            nodes["feature"] = np.where(leaf, -2, forest.feature[r0:r1])
            nodes["threshold"] = np.where(leaf, -2.0, forest.threshold[r0:r1].astype(np.float64))
            nodes["missing_go_to_left"] = forest.missing_left[r0:r1]
            tree = Tree(int(forest.feature.max(initial=0)) + 1, np.array([forest.n_classes], np.intp), 1)
            tree.__setstate__({"max_depth": forest.depth, "node_count": r1 - r0, "nodes": nodes,
                               "values": np.zeros((r1 - r0, 1, forest.n_classes))})
            trees.append((tree, forest.value[r0:r1]))  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - any change of those private internals: use the torch walk
        trees = None
    forest._cache["sklearn"] = trees
    return trees


def _torch_walk(forest: Forest, feats: Any) -> Any:
    """Class probabilities (n, K) of the pixels ``feats`` (n, C) float32, on their device: every
    tree walked ``depth`` steps at once (a leaf is its own child)."""
    import torch

    dev = str(feats.device)
    key = f"torch:{dev}"
    if key not in forest._cache:
        forest._cache[key] = tuple(torch.from_numpy(np.ascontiguousarray(a)).to(dev) for a in (
            forest.children.reshape(-1).astype(np.int64), forest.feature.astype(np.int64), forest.threshold,
            forest.missing_left, forest.value, forest.roots.astype(np.int64)))
    children, feature, threshold, missing, value, roots = forest._cache[key]
    c = feats.shape[1]
    out = torch.empty((feats.shape[0], forest.n_classes), dtype=torch.float32, device=feats.device)
    trees = roots.numel()
    has_nan = bool(torch.isnan(feats).any())
    for start in range(0, feats.shape[0], _CHUNK):
        f = feats[start:start + _CHUNK].reshape(-1)
        n = f.numel() // c
        base = (torch.arange(n, device=feats.device) * c).expand(trees, n)
        node = roots[:, None].expand(trees, n)
        for _ in range(forest.depth):
            v = torch.take(f, base + feature[node])
            right = v > threshold[node]
            if has_nan:
                right = torch.where(torch.isnan(v), ~missing[node], right)
            node = torch.take(children, node * 2 + right.long())
        out[start:start + n] = value[node].mean(dim=0)
    return out


def forest_proba(forest: Forest, x: Any, walk: str = "auto") -> Any:
    """Class probabilities (B, K, H, W) float32 of every pixel of ``x`` (B, C, H, W), a torch tensor
    on any device: each tree's leaf's class shares, averaged over the trees (scikit-learn's
    ``predict_proba``). ``walk``: ``"auto"`` (scikit-learn's compiled walk for a tensor on the
    CPU, else torch's), ``"sklearn"`` or ``"torch"``."""
    import torch

    b, _, h, w = x.shape
    trees = _sklearn_trees(forest) if walk == "sklearn" or (walk == "auto" and x.device.type == "cpu") else None
    # a few rows of one tile at a time, so that the context features' memory stays bounded
    step = max(1, _CHUNK // max(1, w)) if forest.context else h
    out = torch.empty((b, h * w, forest.n_classes), dtype=torch.float32, device=x.device)
    for i in range(b):
        xi = x[i].detach().float()
        for r0 in range(0, h, step):
            r1 = min(h, r0 + step)
            feats = context_features(xi, forest.context, (r0, r1))
            out[i, r0 * w:r1 * w] = _walk(forest, feats, trees)
    return out.reshape(b, h, w, -1).permute(0, 3, 1, 2)


def _walk(forest: Forest, feats: Any, trees: list[tuple[Any, np.ndarray]] | None) -> Any:
    """Class probabilities (n, K) of the pixels' features ``feats`` (n, F): scikit-learn's walk of
    ``trees`` (:func:`_sklearn_trees`), or the torch walk where that is None."""
    import torch

    if trees is None:
        return _torch_walk(forest, feats)
    xs = np.ascontiguousarray(feats.cpu().numpy(), np.float32)

    def walk_some(group: Sequence[tuple[Any, np.ndarray]]) -> np.ndarray:
        acc = np.zeros((xs.shape[0], forest.n_classes), np.float64)
        for tree, value in group:
            acc += value[tree.apply(xs)]  # scikit-learn's walk releases the GIL
        return acc

    n = max(1, min(torch.get_num_threads(), len(trees)))  # the threads torch may use here
    if n == 1:
        total = walk_some(trees)
    else:
        with ThreadPoolExecutor(n) as pool:
            total = sum(pool.map(walk_some, [trees[i::n] for i in range(n)]))
    return torch.from_numpy((total / len(trees)).astype(np.float32)).to(feats.device)


def fused_probabilities(net: np.ndarray, trees: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - weight) * net + weight * trees`` (class probabilities, any matching shapes)."""
    return (1.0 - weight) * net + weight * trees


def mix_loss(p: np.ndarray, y: np.ndarray, k: int) -> float:
    """Class-balanced Brier score of probabilities ``p`` (n, K) at class ids ``y`` (n,): the mean over
    the classes present of the mean squared distance between their pixels' probabilities and
    the one-hot truth (0: perfect and sure; 2: sure and wrong)."""
    sq = (p.astype(np.float64) ** 2).sum(axis=1) - 2 * p[np.arange(y.size), y] + 1.0
    per_class = [sq[y == c].mean() for c in range(k) if (y == c).any()]
    return float(np.mean(per_class)) if per_class else 0.0


def choose_weight(net: np.ndarray, trees: np.ndarray, y: np.ndarray, class_names: Sequence[str],
                  weights: Sequence[float] = WEIGHTS) -> tuple[float, dict[float, float], dict[float, float]]:
    """The forest weight to keep, given the network's and the forest's probabilities (n, K) at
    validation pixels with class ids ``y`` (n,): the one whose fused probabilities have the lowest
    class-balanced Brier score (:func:`mix_loss`; ties go to the weight nearest 0.5). Returns it,
    the Brier score and the mIoU of the fused prediction for each of ``weights``.

    Why not the best mIoU: the validation blocks of a small scene hold a few hundred pixels, some
    classes a handful, and mIoU jumps by hundredths from one weight to the next as those few
    pixels flip; the Brier score moves smoothly with the weight and uses every pixel's
    probabilities, while weighting the classes equally as mIoU does. Why not the log loss: a
    forest's leaves are often pure, so it gives some pixels a probability of 0 for their class,
    and the log loss then drops it for a few such pixels however often it is right (measured:
    ``benchmarks/README.md``, real scenes); the Brier score counts a sure, wrong pixel as 2.
    """
    k = len(class_names)
    loss, miou = {}, {}
    for w in weights:
        p = fused_probabilities(net, trees, w)
        loss[float(w)] = mix_loss(p, y, k)
        miou[float(w)] = scores(confusion_matrix(p.argmax(axis=1), y, k), list(class_names)).miou
    low = min(loss.values())
    pick = min((w for w, v in loss.items() if v <= low + 1e-12), key=lambda w: abs(w - 0.5))
    return pick, loss, miou


def training_pixels(scenes: Sequence[tuple[Any, Any, Sequence[Any], DateInput | None]], mean: Sequence[float],
                    std: Sequence[float], valid_rule: str, share: float, rng: np.random.Generator,
                    context: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """The features a forest of ``context`` radii reads (:func:`context_features` of the network's
    input, :func:`geoseg.ml.infer.network_input`) at labelled pixels the model maps, as rows
    (n, features) float32, and their class ids (n,): ``scenes`` are ``(src, labels, block windows,
    dates)``; each window is read once (with a margin of the largest radius, padded at the
    raster's edges as a tile is) and gives ``share`` of its pixels (all of them at 1 or more;
    drawn with ``rng``), so memory holds one block and the rows."""
    import torch

    m = max(context, default=0)
    xs, ys = [], []
    for src, labels, windows, dates in scenes:
        for w in windows:
            lab = labels.read(w)
            if not (lab != NODATA).any():
                continue
            batch = read_batch(src, [window_tile(w, src.transform, halo=m)], valid_rule, dates)
            x = network_input(batch.pixels, batch.valid, mean, std, batch.observed)[0]
            h, wd = lab.shape
            idx = np.flatnonzero((lab != NODATA) & batch.valid[0][m:m + h, m:m + wd])
            if share < 1 and idx.size:
                idx = np.sort(rng.choice(idx, size=min(idx.size, int(np.ceil(idx.size * share))), replace=False))
            xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
            step = max(1, _CHUNK // x.shape[2])
            for r0 in range(0, h, step):  # a band of rows at a time: context features are wide
                r1 = min(h, r0 + step)
                part = idx[(idx >= r0 * wd) & (idx < r1 * wd)]
                if part.size:
                    f = context_features(xt, context, (m + r0, m + r1)).numpy()
                    f = f.reshape(r1 - r0, x.shape[2], -1)[:, m:m + wd].reshape(-1, f.shape[1])
                    xs.append(f[part - r0 * wd])
            ys.append(lab.reshape(-1)[idx].astype(np.int64))
    if not xs:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return np.concatenate(xs), np.concatenate(ys)


def validation_probabilities(model: Any, forests: Sequence[Forest],
                             scenes: Sequence[tuple[Any, Any, Sequence[Tile], DateInput | None]],
                             mean: Sequence[float], std: Sequence[float], valid_rule: str, device: str,
                             batch_size: int = 4) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """The network's and each forest's class probabilities (n, K) at the labelled pixels of the
    cores of each scene's validation ``tiles`` the model maps, and their class ids (n,): the
    network tiled as at inference (``scenes`` are ``(src, labels, tiles, dates)``; the model in
    eval mode)."""
    import torch

    nets: list[np.ndarray] = []
    trees: list[list[np.ndarray]] = [[] for _ in forests]
    ys: list[np.ndarray] = []
    for src, labels, tiles, dates in scenes:
        for batch in read_batches(src, tiles, batch_size, valid_rule, dates):
            x = network_input(batch.pixels, batch.valid, mean, std, batch.observed)
            pn = predict_proba(model, x, device, dates.days if dates else None)
            xt = torch.from_numpy(np.ascontiguousarray(x))
            with torch.inference_mode():
                pfs = [forest_proba(f, xt).numpy() for f in forests]
            for i, t in enumerate(batch.tiles):
                lab = labels.read(t.core)
                keep = (lab != NODATA) & trim(t, batch.valid[i])
                nets.append(trim(t, pn[i])[:, keep].T)
                for acc, pf in zip(trees, pfs):
                    acc.append(trim(t, pf[i])[:, keep].T)
                ys.append(lab[keep].astype(np.int64))
    k = forests[0].n_classes
    if not ys:
        return np.zeros((0, k), np.float32), [np.zeros((0, k), np.float32) for _ in forests], np.zeros(0, np.int64)
    return np.concatenate(nets), [np.concatenate(t) for t in trees], np.concatenate(ys)


@cache  # one class for the process
def _class() -> Any:
    import torch
    import torch.nn.functional as F

    class _Fused(torch.nn.Module):
        """``model`` whose forward returns the log of the fused class probabilities (so that softmax
        of the output is the fused probabilities, and its argmax the fused class)."""

        def __init__(self, model: Any, forest: Forest, weight: float) -> None:
            super().__init__()
            self.model = model
            self.forest = forest
            self.weight = float(weight)
            self.takes_days = bool(getattr(model, "takes_days", False))
            # a boundary channel passes through: the forest answers for the classes only
            self.geoseg_boundary = bool(getattr(model, "geoseg_boundary", False))
            if hasattr(model, "geoseg_checkpoint"):
                self.geoseg_checkpoint = model.geoseg_checkpoint

        def forward(self, x: Any, *args: Any) -> Any:
            logits = self.model(x, *args)
            if tuple(logits.shape[-2:]) != tuple(x.shape[-2:]):
                logits = F.interpolate(logits.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
            with torch.autocast(x.device.type, enabled=False):
                cls = logits[:, :-1] if self.geoseg_boundary else logits
                p = torch.softmax(cls.float(), dim=1) * (1.0 - self.weight)
                p = p + forest_proba(self.forest, x) * self.weight
                out = torch.log(p.clamp_min(1e-30))
                return torch.cat([out, logits[:, -1:].float()], dim=1) if self.geoseg_boundary else out

    return _Fused


def with_forest(model: Any, forest: Forest | None, weight: float) -> Any:
    """``model`` fused with ``forest`` at ``weight`` (the model itself when there is no forest or
    its weight is 0)."""
    if forest is None or weight <= 0:
        return model
    return _class()(model, forest, weight)
