"""The per-pixel baseline: a random forest on the pixels a geoseg model trains on, scored on its validation blocks.

Crop mappers today classify each pixel on its own with a random forest (Earth Engine's
``smileRandomForest``, 100 trees by default). ``geoseg train --baseline rf`` trains one next
to the network, on the same inputs and the same spatial split, so that a user sees on their
own data what the segmentation model gains (or does not):

* **Training pixels**: labelled pixels of the training blocks, each pixel's band values; at
  most :data:`MAX_TRAIN_PIXELS`, drawn evenly over the blocks with the run's seed (each block
  gives its share of its labelled pixels, so the scene is read once, block by block, and
  memory is bounded by one block).
* **Validation pixels**: every labelled pixel of the validation blocks the network is scored
  on (at most :data:`MAX_VALIDATION_PIXELS`, drawn the same way).
* A pixel's missing bands (nodata, clouds) are NaN, which scikit-learn's forest handles; a
  model that reads dates is compared on the pixels that saw at least one date, as it is scored.

The forest is a report, not a model geoseg maps with: nothing of it is saved but its scores.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from geoseg.classes import NODATA
from geoseg.core.metrics import Scores, confusion_matrix, scores
from geoseg.errors import ConfigError
from geoseg.io.labels import window_tile
from geoseg.io.raster import read_tile

__all__ = ["BASELINES", "MAX_TRAIN_PIXELS", "MAX_VALIDATION_PIXELS", "BaselineResult", "block_pixels",
           "check_baseline", "forest_baseline"]

#: The per-pixel baselines ``--baseline`` takes.
BASELINES = ("rf",)
#: Trees of the forest (Earth Engine's smileRandomForest default).
TREES = 100
MAX_TRAIN_PIXELS = 200_000
MAX_VALIDATION_PIXELS = 1_000_000


def check_baseline(kind: str | None) -> None:
    """Raise :class:`ConfigError` unless ``kind`` is None (no baseline) or one of :data:`BASELINES`."""
    if kind is not None and kind not in BASELINES:
        raise ConfigError(f"baseline {kind!r}: expected one of {', '.join(BASELINES)} (or none)")


@dataclass(frozen=True)
class BaselineResult:
    """The forest's validation scores and what it was trained and scored on."""

    kind: str
    scores: Scores
    train_pixels: int
    validation_pixels: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        d = self.scores.to_dict()
        return {"kind": self.kind, "trees": TREES, "miou": d["miou"], "pixel_accuracy": d["pixel_accuracy"],
                "per_class_iou": d["per_class_iou"], "train_pixels": self.train_pixels,
                "validation_pixels": self.validation_pixels, "seconds": round(self.seconds, 1)}


def block_pixels(src: Any, labels: Any, windows: Sequence[Any], share: float, rng: np.random.Generator,
                 every_band: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Band values ``(n, bands)`` float32 (NaN where a band holds no data) and class ids ``(n,)``
    of labelled pixels that hold data in at least one band (in every band with ``every_band``),
    ``share`` of each window's drawn with ``rng`` (all of them when ``share >= 1``)."""
    xs, ys = [], []
    for w in windows:
        lab = labels.read(w)
        if not (lab != NODATA).any():
            continue
        td = read_tile(src, window_tile(w, src.transform), rule="band")
        keep = (lab != NODATA) & (td.valid.all(axis=0) if every_band else td.valid.any(axis=0))
        idx = np.flatnonzero(keep)
        if share < 1:
            idx = np.sort(rng.choice(idx, size=int(np.ceil(idx.size * share)), replace=False)) if idx.size else idx
        values = td.array.reshape(td.array.shape[0], -1)[:, idx].astype(np.float32)
        values[~td.valid.reshape(td.valid.shape[0], -1)[:, idx]] = np.nan
        xs.append(values.T)
        ys.append(lab.reshape(-1)[idx].astype(np.int64))
    if not xs:
        return np.zeros((0, src.count), np.float32), np.zeros(0, np.int64)
    return np.concatenate(xs), np.concatenate(ys)


def forest_baseline(scenes: Sequence[tuple[Any, Any, Any, Any]], class_names: Sequence[str], seed: int,
                    kind: str = "rf", every_band: bool = False) -> BaselineResult:
    """Train the per-pixel baseline on ``scenes`` (``(src, train_labels, validation_labels, split)``
    each) and score it on their validation blocks (see the module docstring); ``every_band``:
    only pixels that hold data in every band, as a model with ``valid_rule="all"`` sees them."""
    check_baseline(kind)
    try:
        from sklearn.ensemble import RandomForestClassifier
    except ImportError:  # a dependency of geoseg; a broken environment may still lack it
        raise ConfigError("--baseline rf needs scikit-learn, which is not installed: pip install scikit-learn") \
            from None
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    labelled_train = sum(int(s.train_counts().sum()) for _, _, _, s in scenes)
    labelled_val = sum(int(s.counts[s.val].sum()) for _, _, _, s in scenes)
    share_t = MAX_TRAIN_PIXELS / max(1, labelled_train)
    share_v = MAX_VALIDATION_PIXELS / max(1, labelled_val)
    parts_t = [block_pixels(src, lab, split.windows(False), share_t, rng, every_band)
               for src, lab, _, split in scenes]
    parts_v = [block_pixels(src, val, split.windows(True), share_v, rng, every_band)
               for src, _, val, split in scenes]
    xt, yt = np.concatenate([p[0] for p in parts_t]), np.concatenate([p[1] for p in parts_t])
    xv, yv = np.concatenate([p[0] for p in parts_v]), np.concatenate([p[1] for p in parts_v])
    if yt.size == 0 or yv.size == 0:
        names = ", ".join(str(getattr(src, "name", src)) for src, *_ in scenes)
        raise ConfigError(f"{names}: the per-pixel baseline found no labelled pixels with data in the "
                          f"{'training' if yt.size == 0 else 'validation'} blocks; train without --baseline")
    forest = RandomForestClassifier(n_estimators=TREES, n_jobs=-1, random_state=seed)
    forest.fit(xt, yt)
    pred = forest.predict(xv).astype(np.int64)
    sc = scores(confusion_matrix(pred, yv, len(class_names)), list(class_names))
    return BaselineResult(kind, sc, int(yt.size), int(yv.size), time.perf_counter() - t0)
