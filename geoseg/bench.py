"""Benchmarks: speed and memory figures of the pipeline, each against a baseline measured in the same run.

``geoseg bench`` (and ``make bench``) synthesises regions of two sizes (1x and 16x the
area, sized so that both are whole numbers of tile cores and so push the same share of
extra halo pixels), and measures each figure next to its baseline:

========================  ==============================================================
figure                    value / baseline
========================  ==============================================================
e2e_vs_forward            ``geoseg run`` wall time (read, infer, stitch, polygonise,
                          district areas; cluster start-up excluded) / model forward
                          passes alone over the same number of tiles, same threads,
                          same precision (bf16 where native) and allocator settings;
                          "forward" is the model the run maps with (the network and
                          the checkpoint's per-pixel forest, when it has one)
read_ratio                pixels through the model / scene pixels, default tile and
                          overlap, on a Sentinel-2-sized scene (10980 x 10980)
memory_16x                peak memory of a run at 16x area / at 1x (all processes)
time_16x                  run time at 16x area / (16 x run time at 1x)
dask_vs_one_process       the run on a 2-worker LocalCluster / the same work in one
                          process with one thread and no Dask
polygonise_vs_shapes      ``rasterio.features.shapes`` on the whole mask / geoseg's
                          block-wise polygonise (a throughput ratio; same polygons)
areas_vs_decode           district-area time / the time to decode the same mask once
reader_vs_plain           tiled reader throughput / plain block-aligned read of the file
e2e_vs_naive              geoseg time to the mask / a straightforward single-process
                          loop (read window, forward, write window) over the scene, in
                          float32; the note gives the loop's time with geoseg's settings
gpu_forward_tiles_per_s   (``--gpu``) U-Net/ResNet-34 forward passes, 512 px, 16 bands,
                          bf16, channels-last, batch 64: tiles per second, eager or
                          under ``torch.compile``, whichever is faster
gpu_e2e_s2_scene          (``--gpu``) a workflow run over a 10980 px scene of 4 dates x 4
                          bands, inference on the GPU and the rest on the CPU cores / 60 s;
                          the note names the slowest stage and what bounds inference
========================  ==============================================================

Runs that are measured for time or memory run in child processes (the jobs of
:mod:`geoseg.bench_jobs`, a module that does not load torch, so that each starts as a
workflow run's driver starts), and the peak memory is the largest sum of resident set sizes over
the child and all its descendants (Dask workers included), sampled every 50 ms from
``/proc`` (Linux; elsewhere the memory figures are left out).

Baselines are timed as their figures are. The workflow runs, the one-process run, the
forward passes and the naive loop run ``repeats`` times each (2 by default; each workflow
run in a fresh tile store, so none resumes another) and the shortest counts; the shorter
measurements (polygonise and shapes, district areas and decoding, the two readers) are
the median of 3-9 timed calls after an untimed one, in a process whose allocator is tuned
as the pipeline's workers tune theirs (both sides alike). Memory figures take the
largest peak over the repeats. The JSON keeps every repeat's time under ``details``.

Every run is also kept as a dated record next to the results file (``bench-<date>-<device>.json``,
:func:`record_path`), and its figures are compared with the newest earlier record of the same
device and region sizes (:func:`earlier_result`, :func:`compare`): each row gets the earlier
ratio (``was``), and figures that moved the wrong way by more than :data:`DRIFT` are named.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from geoseg.classes import default_classes
from geoseg.core.grid import tile_grid
from geoseg.errors import BenchError
from geoseg.io.raster import open_raster, raster_info, write_text_atomic
from geoseg.ml.infer import cpu_has_native_bf16
from geoseg.ml.model import (
    ModelCard,
    build_from_card,
    build_model,
    default_arch_kwargs,
    read_card,
    save_checkpoint,
)
from geoseg.ml.train import train
from geoseg.rundir import RunPaths
from geoseg.synth import SynthRegion, synthesize
from geoseg.workflow.cluster import read_ahead
from geoseg.workflow.config import load_workflow
from geoseg.workflow.tasks import usable_cores

__all__ = [
    "Row",
    "run_bench",
    "format_table",
    "TARGETS",
    "DRIFT",
    "load_result",
    "record_path",
    "earlier_result",
    "compare",
    "write_result",
    "save_result",
    "throughput",
]

#: figure -> (comparison, target, description)
TARGETS: dict[str, tuple[str, float, str]] = {
    "e2e_vs_forward": ("<=", 1.10, "end-to-end run / model forward alone, same tiles and threads (CPU)"),
    "read_ratio": ("<=", 1.40, "pixels through the model / scene pixels (10980 px scene, default tile+overlap)"),
    "memory_16x": ("<=", 1.10, "peak memory at 16x scene area / at 1x"),
    "time_16x": ("<=", 1.05, "time at 16x area / (16 x time at 1x)"),
    "dask_vs_one_process": ("<=", 0.60, "LocalCluster (2 workers) / one process, one thread, no Dask"),
    "polygonise_vs_shapes": (">=", 2.0, "block-wise polygonise throughput / rasterio.features.shapes"),
    "areas_vs_decode": ("<=", 1.0, "district-area time / decoding the mask once"),
    "reader_vs_plain": (">=", 0.8, "tiled reader throughput / plain block-aligned read"),
    "e2e_vs_naive": ("<=", 0.7, "geoseg time to the mask / naive read-forward-write loop"),
    "gpu_forward_tiles_per_s": (">=", 3000.0, "U-Net/resnet34 forward, 512 px, 16 bands, bf16, tiles/s"),
    "gpu_e2e_s2_scene": ("<=", 1.0, "run on one GPU + the CPU cores, 10980 px 16-band scene / 60 s"),
}

#: How far a ratio may move the wrong way against an earlier run before the table names it (relative):
#: about the run-to-run spread of the run-sized figures on one machine (benchmarks/README.md, "Run-to-run
#: spread"); more when the machine's speed drifts.
DRIFT = 0.10


#: Seconds allowed for the end-to-end run of a Sentinel-2-sized scene on one GPU (the baseline of gpu_e2e_s2_scene).
GPU_E2E_SECONDS = 60.0


@dataclass
class Row:
    """One figure: ``ratio = value / baseline`` against ``target``."""

    figure: str
    value: float
    baseline: float
    ratio: float
    target: str
    met: bool | None
    unit: str = "s"
    note: str = ""


def _row(figure: str, value: float, baseline: float, unit: str = "s", note: str = "",
         ratio: float | None = None) -> Row:
    op, target, _ = TARGETS[figure]
    r = float(ratio if ratio is not None else value / baseline)
    met = r <= target if op == "<=" else r >= target
    return Row(figure, float(value), float(baseline), round(r, 4), f"{op} {target:g}", bool(met), unit, note)


# --------------------------------------------------------------------------------------
# memory of a process tree
class TreeMemory:
    """Sample the summed RSS of a process and its descendants; ``peak`` in bytes (Linux)."""

    def __init__(self, pid: int, every: float = 0.05) -> None:
        self.pid, self.every, self.peak = pid, every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def available() -> bool:
        return Path("/proc/self/status").exists()

    def _children(self) -> dict[int, list[int]]:
        kids: dict[int, list[int]] = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat", "rb") as f:
                    stat = f.read().rsplit(b")", 1)[1].split()
                kids.setdefault(int(stat[1]), []).append(int(d))
            except (OSError, IndexError, ValueError):
                continue
        return kids

    def _rss(self, pid: int) -> int:
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            return 0

    def sample(self) -> int:
        kids = self._children()
        todo, total = [self.pid], 0
        while todo:
            p = todo.pop()
            total += self._rss(p)
            todo.extend(kids.get(p, []))
        self.peak = max(self.peak, total)
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)

    def __enter__(self) -> "TreeMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def run_job(job: dict[str, Any], timeout: float = 1800) -> dict[str, Any]:
    """Run one measured job in a child process; return its result with ``peak_bytes``."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(job, f)
        path = f.name
    try:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "DASK_LOGGING__DISTRIBUTED": "error"}
        proc = subprocess.Popen([sys.executable, "-m", "geoseg.bench_jobs", "--job", path], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        mem = TreeMemory(proc.pid)
        if TreeMemory.available():
            with mem:
                out, err = proc.communicate(timeout=timeout)
        else:
            out, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark job {job['kind']} failed:\n{err[-3000:]}")
        result = json.loads(out.strip().splitlines()[-1])
        result["peak_bytes"] = mem.peak or None
        return result
    finally:
        os.unlink(path)


def _fastest(run: Callable[[int], dict[str, Any]], repeats: int,
             key: Callable[[dict[str, Any]], float] = lambda r: r["wall"]) -> dict[str, Any]:
    """The result of the fastest of ``repeats`` calls ``run(i)``, with the largest ``peak_bytes``
    over all of them and every repeat's time under ``"repeats"``."""
    results = [run(i) for i in range(max(1, repeats))]
    best = dict(min(results, key=key))
    peaks = [r.get("peak_bytes") or 0 for r in results]
    best["peak_bytes"] = max(peaks) or None
    best["repeats"] = [round(key(r), 3) for r in results]
    return best


def _run_seconds(r: dict[str, Any]) -> float:
    """A workflow run's time with the cluster start-up left out."""
    return float(r["wall"] - r["timings"].get("cluster", 0.0))


# --------------------------------------------------------------------------------------
# the suite
def _bench_model(path: Path, scene: Path, seed: int = 0, encoder: str = "resnet18") -> Path:
    """A U-Net with random weights and the scene's bands and statistics (speed does not need training)."""
    import torch

    with open_raster(scene) as src:
        names = [d or f"band {i}" for i, d in enumerate(src.descriptions, start=1)]
        sample = src.read(out_shape=(src.count, 256, 256)).reshape(src.count, -1).astype("float64")
    mean = [float(v) for v in sample.mean(axis=1)]
    std = [float(max(v, 1.0)) for v in sample.std(axis=1)]
    card = ModelCard(arch="unet", encoder=encoder, in_channels=len(names), classes=default_classes(),
                     arch_kwargs=default_arch_kwargs("unet"), bands=names, band_mean=mean, band_std=std,
                     tile=256, overlap=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        save_checkpoint(path, build_from_card(card), card)
    return path


def _workflow(path: Path, scene: Path, model: Path, districts: Path, work: Path, name: str, batch: int,
              workers: int = 2, device: str = "auto") -> Path:
    wf = {
        # the defaults otherwise (tiles_per_task included)
        "name": name, "scenes": [str(scene)], "model": str(model), "tile": 512, "batch_size": batch,
        "device": device,
        "districts": {"path": str(districts), "name_field": "district"},
        "outputs": {"confidence": True, "fields": ["parquet"], "district_areas": True, "report": False},
        "cluster": {"workers": workers, "threads_per_worker": 1, "dashboard": False},
        "store": str(work / "tiles"), "runs_dir": str(work / "runs"),
    }
    path.write_text(yaml.safe_dump(wf, sort_keys=False))
    return path


def run_bench(
    work: str | os.PathLike[str],
    *,
    base: int = 1344,
    model: str | os.PathLike[str] | None = None,
    train_epochs: int = 12,
    train_minutes: float | None = None,
    gpu: bool = False,
    repeats: int = 2,
    say: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Run the suite in ``work`` and return ``{"rows": [...], "device": ..., ...}``.

    ``base`` is the 1x region's side in pixels; the 16x region has side ``4 * base``.
    Both should be multiples of the tile core (448 px for 512 px tiles with 32 px halos).
    With ``model``, the regions have as many bands as it takes (4 bands per date; a count that
    is not a multiple of 4 raises :class:`BenchError`). Without ``model``, a model is trained on
    the 1x region for ``train_epochs`` (0: random
    weights instead; the same weights on every run, so that the masks the later figures
    polygonise and count are the same too), stopped early after ``train_minutes`` if given
    (which makes the weights depend on the machine's speed). ``repeats``: how many times each
    run-sized job is timed (the fastest counts, baselines alike).
    """

    dates = _dates_for(model)  # checked before minutes of synthesis
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    say(f"synthesising regions of {base} and {4 * base} px, {dates} dates x 4 bands")
    small = synthesize(work / "r1x", height=base, width=base, seed=0, dates=dates)
    large = synthesize(work / "r16x", height=4 * base, width=4 * base, seed=0, dates=dates)
    extra: dict[str, Any] = {}
    model_dir = _suite_model(work, small, model, train_epochs, train_minutes, extra, say)
    s = _Suite(work, small, large, model_dir, repeats, say, extra)

    rows = [_read_ratio_row()]
    runs = _workflow_runs(s)
    rows += _run_rows(s, runs)
    rows.append(_one_process_row(s, runs["16x"]))
    rows += _polygonise_and_areas_rows(s, runs["16x"])
    rows.append(_reader_row(s))
    rows.append(_naive_row(s, runs["16x"]))
    if gpu:
        rows.extend(gpu_rows(say))
        import torch

        if torch.cuda.is_available():
            rows.append(device_e2e_row(work, model_dir, device="cuda", say=say))
    return {
        "rows": [asdict(r) for r in rows],
        "device": _device(gpu),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "scenes": {"1x": list(small.shape), "16x": list(large.shape), "read_ratio": [10980, 10980]},
        "model": str(model_dir) if model else (
            f"U-Net/ResNet-18 trained on the 1x region ({extra['model_training']['epochs_run']} epochs)"
            if "model_training" in extra else "U-Net/ResNet-18 with random weights"),
        "cpu_count": os.cpu_count(),
        "throughput": throughput(large.shape[0] * large.shape[1], abs(raster_info(large.scene).res[0]),
                                 _run_seconds(runs["16x"])),
        "repeats": max(1, repeats),
        "seconds": round(time.perf_counter() - t_start, 1),
        "details": extra,
    }


@dataclass
class _Suite:
    """What the stages of :func:`run_bench` share: the work folder, the regions, the model, how often
    each run-sized job is timed, where progress goes, and ``extra`` (the result's ``details``)."""

    work: Path
    small: SynthRegion
    large: SynthRegion
    model_dir: Path
    repeats: int
    say: Callable[[str], None]
    extra: dict[str, Any]
    batch: int = 4


def _dates_for(model: str | os.PathLike[str] | None) -> int:
    """Dates of 4 bands the regions need: as many as ``model`` takes (4 without one)."""
    if not model:
        return 4
    bands = read_card(model).in_channels
    if bands % 4:
        raise BenchError(
            f"{model}: the model takes {bands} bands; the bench synthesises scenes of 4 bands per date (blue, "
            f"green, red, NIR), so it can time models of 4, 8, 12, 16... bands - time this one with `geoseg run` "
            f"on a scene of its own"
        )
    return bands // 4


def _suite_model(work: Path, small: SynthRegion, model: str | os.PathLike[str] | None, train_epochs: int,
                 train_minutes: float | None, extra: dict[str, Any], say: Callable[[str], None]) -> Path:
    """The model the suite times: ``model``, else one trained on the 1x region, else random weights."""
    if model:
        return Path(model)
    if train_epochs > 0 and (train_minutes is None or train_minutes > 0):
        # a briefly trained model: its masks have field-like regions (an untrained one gives speckle,
        # which makes polygonising unrealistically slow)
        limit = f" (at most {train_minutes:g} min)" if train_minutes else ""
        say(f"training a U-Net/ResNet-18 on the 1x region for {train_epochs} epochs{limit}")
        tr = train(small.scene, small.labels, small.classes, work / "model", epochs=train_epochs,
                   time_limit=train_minutes, seed=0)
        extra["model_training"] = {"epochs_run": tr.epochs_run, "seconds": round(tr.seconds, 1),
                                   "val_miou": tr.card.metrics.get("miou")}
        return work / "model"
    return _bench_model(work / "model", small.scene)


def _read_ratio_row() -> Row:
    """``read_ratio``: pure grid arithmetic on a Sentinel-2-sized scene."""
    g = tile_grid((10980, 10980), size=512, overlap=32)
    return _row("read_ratio", g.read_ratio * 10980 ** 2, 10980 ** 2, unit="px",
                note=f"{len(g)} tiles of 512 px, 32 px halo")


def _workflow_runs(s: _Suite) -> dict[str, dict[str, Any]]:
    """The fastest of ``s.repeats`` workflow runs on a LocalCluster over each region (``"1x"``, ``"16x"``)."""
    s.say("end-to-end runs on a LocalCluster at 1x and 16x")
    runs = {}
    for key, region in (("1x", s.small), ("16x", s.large)):
        def one_run(i: int, key: str = key, region: Any = region) -> dict[str, Any]:
            where = s.work / f"try{i}"  # a fresh tile store each time: a repeat must not resume the last one
            wf = _workflow(s.work / f"wf_{key}_{i}.yaml", region.scene, s.model_dir, region.districts, where,
                           f"bench{key}", s.batch)
            return run_job({"kind": "run", "workflow": str(wf)})

        runs[key] = _fastest(one_run, s.repeats, key=_run_seconds)
        s.extra[f"run_{key}"] = {k: runs[key][k] for k in ("wall", "timings", "tiles", "peak_bytes", "repeats")}
    return runs


def _run_rows(s: _Suite, runs: dict[str, dict[str, Any]]) -> list[Row]:
    """``e2e_vs_forward`` (timing the forward passes alone over the 16x run's tiles), ``memory_16x``, ``time_16x``."""
    big = runs["16x"]
    e2e = _run_seconds(big)
    e2e_small = _run_seconds(runs["1x"])
    s.say("model forward alone over the same tiles")
    fwd = _fastest(lambda i: run_job({"kind": "forward", "model": str(s.model_dir), "scene": str(s.large.scene),
                                      "tile": 512, "batch_size": s.batch, "tiles": big["tiles"], "threads": 2}),
                   s.repeats)
    s.extra["forward_repeats"] = fwd["repeats"]
    rows = [_row("e2e_vs_forward", e2e, fwd["wall"], note=f"{big['tiles']} tiles; run stages: " + ", ".join(
        f"{k} {v:.1f}" for k, v in big["timings"].items()))]
    if big["peak_bytes"] and runs["1x"]["peak_bytes"]:
        rows.append(_row("memory_16x", big["peak_bytes"] / 2**20, runs["1x"]["peak_bytes"] / 2**20, unit="MiB",
                         note="peak RSS of the run and its Dask workers"))
    rows.append(_row("time_16x", e2e, 16 * e2e_small, note=f"1x: {e2e_small:.1f} s"))
    return rows


def _one_process_row(s: _Suite, big: dict[str, Any]) -> Row:
    """``dask_vs_one_process``: the 16x run against the same work in one process, one thread, no Dask."""
    s.say("the same work in one process, one thread, no Dask")
    one = _fastest(lambda i: run_job({"kind": "one_process", "model": str(s.model_dir), "scene": str(s.large.scene),
                                      "districts": str(s.large.districts), "tile": 512, "batch_size": s.batch,
                                      "out": str(s.work / "one")}), s.repeats)
    s.extra["one_process_repeats"] = one["repeats"]
    return _row("dask_vs_one_process", _run_seconds(big), one["wall"], note="one process: " + ", ".join(
        f"{k} {v:.1f}" for k, v in one["timings"].items()))


def _polygonise_and_areas_rows(s: _Suite, big: dict[str, Any]) -> list[Row]:
    """``polygonise_vs_shapes`` on the 16x labels and ``areas_vs_decode`` on the 16x run's mask."""
    s.say("polygonise vs rasterio.features.shapes; district areas vs decoding")
    poly = run_job({"kind": "polygonise", "mask": str(s.large.labels), "threads": 2})
    areas = run_job({"kind": "areas", "mask": str(RunPaths(Path(big["run_dir"])).mask),
                     "districts": str(s.large.districts), "threads": 2})
    return [
        _row("polygonise_vs_shapes", poly["shapes"], poly["ours"], ratio=poly["shapes"] / poly["ours"],
             note=f"{poly['polygons']} polygons (shapes: {poly['shapes_polygons']}); identical count and "
                  f"area: {poly['identical_count_and_area']}; labels.tif of the 16x region"),
        _row("areas_vs_decode", areas["ours"], areas["decode"], note="the 16x run's mask"),
    ]


def _reader_row(s: _Suite) -> Row:
    """``reader_vs_plain``: geoseg's tiled reader against plain block reads of the 16x scene."""
    s.say("tiled reader vs plain block reads")
    rd = run_job({"kind": "reader", "scene": str(s.large.scene), "tile": 512, "overlap": 32})
    ours_tp, plain_tp = rd["ours_px"] / rd["ours"], rd["plain_px"] / rd["plain"]
    return _row("reader_vs_plain", ours_tp / 1e6, plain_tp / 1e6, unit="Mpx/s",
                note=f"tiled {rd['ours']:.1f} s for {rd['ours_px'] / 1e6:.1f} Mpx (halos included); "
                     f"plain {rd['plain']:.1f} s for {rd['plain_px'] / 1e6:.1f} Mpx")


def _naive_row(s: _Suite, big: dict[str, Any]) -> Row:
    """``e2e_vs_naive``: the 16x run to the mask against a naive loop, plain and with geoseg's settings."""
    s.say("a naive read-forward-write loop")
    naive = _fastest(lambda i: run_job({"kind": "naive", "model": str(s.model_dir), "scene": str(s.large.scene),
                                        "tile": 512, "out": str(s.work / "naive.tif")}), s.repeats)
    same = _fastest(lambda i: run_job({"kind": "naive", "model": str(s.model_dir), "scene": str(s.large.scene),
                                       "tile": 512, "out": str(s.work / "naive_same.tif"), "same_settings": True}),
                    s.repeats)
    s.extra["naive_repeats"] = naive["repeats"]
    s.extra["naive_same_settings"] = same["wall"]
    s.extra["naive_same_settings_repeats"] = same["repeats"]
    to_mask = sum(big["timings"].get(k, 0.0) for k in ("plan", "infer", "mosaic"))
    return _row("e2e_vs_naive", to_mask, naive["wall"],
                note=f"geoseg: plan + infer + mosaic stages; the naive loop in float32 as written plainly "
                     f"(with geoseg's precision and allocator settings it takes {same['wall']:.1f} s: "
                     f"ratio {to_mask / same['wall']:.2f})")


def gpu_rows(say: Callable[[str], None] = lambda s: None) -> list[Row]:
    """Forward throughput of U-Net/resnet34 at 512 px, 16 bands, bf16, channels-last on CUDA."""
    import torch

    if not torch.cuda.is_available():
        say("no CUDA device: GPU figures skipped")
        return []
    return [forward_throughput_row("cuda", say=say)]


def forward_throughput_row(device: str = "cuda", *, encoder: str = "resnet34", size: int = 512, batch: int = 64,
                           bands: int = 16, n: int = 20, try_compile: bool = True,
                           say: Callable[[str], None] = lambda s: None) -> Row:
    """``gpu_forward_tiles_per_s``: U-Net forward passes on ``device`` in bf16 autocast and
    channels-last, eager and under ``torch.compile`` (the faster counts; the note gives both,
    the compile time, and why compiling failed if it did)."""
    import torch

    model = build_model("unet", encoder, bands, 7).to(device).eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, bands, size, size, device=device).contiguous(memory_format=torch.channels_last)
    kind = "cuda" if device.startswith("cuda") else "cpu"

    def sync() -> None:
        if kind == "cuda":
            torch.cuda.synchronize()

    def tiles_per_s(fn: Callable[[Any], Any]) -> float:
        with torch.inference_mode(), torch.autocast(kind, dtype=torch.bfloat16):
            for _ in range(3):
                fn(x)
            sync()
            t = time.perf_counter()
            for _ in range(n):
                fn(x)
            sync()
            return n * batch / (time.perf_counter() - t)

    eager = tiles_per_s(model)
    compiled, how = 0.0, "not tried"
    if try_compile:
        say(f"forward throughput on {device}: compiling the model (torch.compile)")
        try:
            t = time.perf_counter()
            cmodel = torch.compile(model)
            with torch.inference_mode(), torch.autocast(kind, dtype=torch.bfloat16):
                cmodel(x)  # compiles
            sync()
            took = time.perf_counter() - t
            compiled = tiles_per_s(cmodel)
            how = f"{compiled:.0f} tiles/s (compiled in {took:.0f} s)"
        except Exception as e:  # noqa: BLE001 - no compiler, unsupported op: the eager figure stands
            how = f"failed ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
    name = torch.cuda.get_device_name() if kind == "cuda" else _device(False)
    tps = max(eager, compiled)
    return _row("gpu_forward_tiles_per_s", tps, 1.0, unit="tiles/s", ratio=tps,
                note=f"{name}, U-Net/{encoder}, {size} px, {bands} bands, batch {batch}: eager {eager:.0f} tiles/s; "
                     f"torch.compile {how}; the faster counts")


def device_e2e_row(work: Path, model_dir: Path, side: int = 10980, device: str = "cuda",
                   say: Callable[[str], None] = lambda s: None) -> Row:
    """``gpu_e2e_s2_scene``: a workflow run over a ``side`` x ``side`` scene of 4 dates x 4 bands
    (Sentinel-2-sized by default) with inference on ``device`` and everything else on this
    machine's CPU cores, against :data:`GPU_E2E_SECONDS`.

    Up to 4 LocalCluster workers (one per 4 cores) share the device; the cores left over read
    tiles for them. The note names the slowest stage and splits the infer stage's worker time
    (tile reading on the reader threads, the model step - normalising on the CPU, copies,
    forward, softmax: an upper bound on the device's busy time - setup, tile store).
    """

    say(f"end to end on {device}: synthesising a {side} px scene")
    region = synthesize(work / f"r{side}", height=side, width=side, seed=0)
    workers = max(1, min(4, usable_cores() // 4))
    wf = _workflow(work / f"wf_{device.split(':')[0]}.yaml", region.scene, model_dir, region.districts, work,
                   f"bench_{device.split(':')[0]}", 16, workers=workers, device=device)
    say(f"end to end on {device}: {workers} worker(s) sharing it")
    r = run_job({"kind": "run", "workflow": str(wf)})
    wall = _run_seconds(r)
    stages = {k: v for k, v in r["timings"].items() if k not in ("plan", "cluster")}
    slowest = max(stages, key=lambda k: stages[k])
    readers = read_ahead(load_workflow(wf)) or 0
    parts = (r.get("stats") or {}).get("infer_worker_seconds") or {}
    # per worker, reading spread over its reader threads: the largest bounds the infer stage
    per = {k: v / workers / (max(1, readers) if k == "read" else 1) for k, v in parts.items()}
    split = ", ".join(f"{k} {v:.1f}" for k, v in per.items())
    inner = f"; infer seconds per worker ({readers} reader thread(s) each): {split}" if per else ""
    bound = f", inside it {max(per, key=lambda k: per[k])}" if per else ""
    note = (f"{r['tiles']} tiles on {device}; stages: " + ", ".join(f"{k} {v:.1f}" for k, v in r["timings"].items())
            + f"; slowest stage: {slowest}{bound}{inner}")
    return _row("gpu_e2e_s2_scene", wall, GPU_E2E_SECONDS, note=note)


def _cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), with its bf16 instructions if it has them."""

    name = ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    return f"{name}, bf16" if cpu_has_native_bf16() else name


def _device(gpu: bool) -> str:
    desc = f"{os.cpu_count()} CPU cores ({_cpu_name()})"
    if gpu:
        import torch

        if torch.cuda.is_available():
            desc += f", {torch.cuda.get_device_name()}"
    return desc


def throughput(pixels: int, pixel_m: float, seconds: float, scene_side: int = 10980) -> dict[str, float]:
    """What a measured run says about this machine's speed, for sizing: pixels per second end to
    end, square kilometres per hour at the run's pixel size, and minutes for a ``scene_side`` px
    square scene (a Sentinel-2 tile) with the same model and bands (fixed costs included, so an
    upper bound for a larger scene)."""
    rate = pixels / seconds
    return {"mpx_per_s": round(rate / 1e6, 3), "km2_per_hour": round(rate * pixel_m ** 2 / 1e6 * 3600, 1),
            "pixel_m": pixel_m, "scene_side_px": scene_side, "scene_minutes": round(scene_side ** 2 / rate / 60, 2)}


def format_table(result: dict[str, Any]) -> str:
    """The rows as a plain-text table."""
    was = any("was" in r for r in result["rows"])
    lines = [f"{'figure':<24} {'value':>12} {'baseline':>12} {'ratio':>8} " + (f"{'was':>8} " if was else "")
             + f"{'target':>8}  met  note"]
    for r in result["rows"]:
        met = {True: "yes", False: "NO", None: "-"}[r["met"]]
        before = ""
        if was:
            before = f"{r['was']:>8.3f} " if r.get("was") is not None else f"{'-':>8} "
        lines.append(f"{r['figure']:<24} {r['value']:>12.3f} {r['baseline']:>12.3f} {r['ratio']:>8.3f} {before}"
                     f"{r['target']:>8}  {met:<4} {r['note']}")
    lines.append(f"device: {result['device']}; date {result['date']}; suite {result['seconds']} s; "
                 f"scenes 1x {result['scenes']['1x']}, 16x {result['scenes']['16x']}; "
                 f"run-sized times: best of {result.get('repeats', 1)}")
    tp = result.get("throughput")
    if tp:
        lines.append(f"throughput (16x run, end to end): {tp['mpx_per_s']:.2f} Mpx/s, {tp['km2_per_hour']:,.0f} km2/h "
                     f"at {tp['pixel_m']:g} m; a {tp['scene_side_px']} x {tp['scene_side_px']} px scene with this "
                     f"model and bands: at most ~{tp['scene_minutes']:.1f} min on this machine (the run's fixed costs "
                     f"counted as if they grew with the scene)")
    cw = result.get("compared_with")
    if cw:
        worse = "; ".join(cw["worse"]) if cw["worse"] else "none"
        lines.append(f"was: the ratios of {cw['file']} ({cw['date']}, {cw['device']}); worse by more than "
                     f"{DRIFT:.0%}: {worse}")
    return "\n".join(lines)


def write_result(result: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the result JSON atomically."""

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(p, json.dumps(result, indent=1))


def load_result(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A results file written by ``geoseg bench``; :class:`BenchError` naming the file if it is not one."""
    p = Path(path)
    expected = ("expected a results file written by `geoseg bench` (a JSON object with `device`, `date` and "
                "`rows` of figure, value, baseline, ratio, target, met), such as benchmarks/results/latest.json")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError(f"{p}: no such file; {expected}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BenchError(f"{p}: not JSON ({e}); {expected}") from None
    rows = data.get("rows") if isinstance(data, dict) else None
    if not (isinstance(rows, list) and all(isinstance(r, dict) and {"figure", "ratio", "target"} <= r.keys()
                                          for r in rows)
            and isinstance(data.get("date"), str) and isinstance(data.get("device"), str)):
        found = f"an object with keys {', '.join(sorted(data)) or 'none'}" if isinstance(data, dict) else \
            f"a JSON {type(data).__name__}"
        raise BenchError(f"{p}: {found}, not benchmark results; {expected}")
    return data  # type: ignore[no-any-return]


def record_path(result: dict[str, Any], folder: str | os.PathLike[str]) -> Path:
    """Where the dated record of ``result`` goes in ``folder``: ``bench-<UTC date and time>-<device>.json``."""
    stamp = re.sub(r"[^0-9T]", "", result["date"])[:13]  # 2026-11-26T12:02:56Z -> 20261126T1202
    device = re.sub(r"[^a-z0-9]+", "-", result["device"].lower()).strip("-")[:80]
    return Path(folder) / f"bench-{stamp}Z-{device}.json"


def earlier_result(folder: str | os.PathLike[str], result: dict[str, Any]) -> tuple[Path, dict[str, Any]] | None:
    """The newest record in ``folder`` older than ``result`` from the same device and region sizes, or None.

    Files there that are not results of ``geoseg bench`` are passed over.
    """
    best: tuple[Path, dict[str, Any]] | None = None
    for p in sorted(Path(folder).glob("bench-*.json")):
        try:
            old = load_result(p)
        except BenchError:
            continue
        if (old["device"] != result["device"] or old.get("scenes") != result.get("scenes")
                or old["date"] >= result["date"]):
            continue
        if best is None or old["date"] > best[1]["date"]:
            best = (p, old)
    return best


def compare(result: dict[str, Any], earlier: dict[str, Any], source: str) -> list[str]:
    """Give each row of ``result`` the ratio ``earlier`` measured (``was``; None where it has no such figure).

    Returns the figures whose ratio moved away from its target by more than :data:`DRIFT`
    (also kept under ``result["compared_with"]`` with the earlier file, date and device).
    """
    before = {r["figure"]: r["ratio"] for r in earlier["rows"]}
    worse = []
    for r in result["rows"]:
        was = before.get(r["figure"])
        r["was"] = was
        if not was:
            continue
        change = r["ratio"] / was - 1
        if (change > DRIFT) if r["target"].startswith("<=") else (change < -DRIFT):
            worse.append(f"{r['figure']} {was:.3f} -> {r['ratio']:.3f}")
    result["compared_with"] = {"file": source, "date": earlier["date"], "device": earlier["device"], "worse": worse}
    return worse


def save_result(result: dict[str, Any], out: str | os.PathLike[str], *, record: bool = True,
                against: tuple[Path, dict[str, Any]] | None = None) -> tuple[str, Path | None]:
    """Compare ``result`` with ``against`` (else the newest earlier record in ``out``'s folder), write
    it to ``out`` and, with ``record``, to its dated record there; return the table and the record's path."""
    out = Path(out)
    earlier = against if against is not None else earlier_result(out.parent, result)
    if earlier is not None:
        compare(result, earlier[1], earlier[0].name)
    write_result(result, out)
    kept = write_result(result, record_path(result, out.parent)) if record else None
    return format_table(result), kept
