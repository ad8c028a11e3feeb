"""The benchmark harness: ratios and targets, process-tree memory, one measured job end to end."""

from __future__ import annotations

import subprocess
import sys

import pytest

from geoseg.bench import (
    DRIFT,
    GPU_E2E_SECONDS,
    TreeMemory,
    _bench_model,
    _device,
    _fastest,
    _row,
    _run_seconds,
    compare,
    device_e2e_row,
    earlier_result,
    format_table,
    forward_throughput_row,
    load_result,
    record_path,
    run_job,
    save_result,
    throughput,
    write_result,
)
from geoseg.classes import default_classes
from geoseg.cli.main import cli
from geoseg.core.grid import tile_grid
from geoseg.errors import BenchError
from geoseg.io.raster import raster_info
from geoseg.ml.model import ModelCard, build_from_card, default_arch_kwargs, save_checkpoint
from geoseg.parallel import _glibc
from geoseg.synth import synthesize


def test_rows_compare_ratios_with_their_targets():
    r = _row("e2e_vs_forward", 11.0, 10.0)
    assert (r.ratio, r.target, r.met) == (1.1, "<= 1.1", True)
    assert _row("e2e_vs_forward", 11.5, 10.0).met is False
    p = _row("polygonise_vs_shapes", 3.0, 1.0, ratio=3.0)
    assert (p.target, p.met) == (">= 2", True)
    assert _row("polygonise_vs_shapes", 1.0, 1.0, ratio=1.0).met is False
    table = format_table({"rows": [vars(r), vars(p)], "device": "d", "date": "t", "seconds": 1.0,
                          "scenes": {"1x": [1, 1], "16x": [4, 4]}})
    assert "e2e_vs_forward" in table and " NO " not in table.splitlines()[1] and "yes" in table.splitlines()[2]


def _result(date, device="2 CPU cores (X)", base=448, **ratios):
    rows = [vars(_row(f, r, 1.0)) for f, r in ratios.items()]
    return {"rows": rows, "device": device, "date": date, "seconds": 1.0,
            "scenes": {"1x": [base, base], "16x": [4 * base, 4 * base]}}


def test_compare_gives_earlier_ratios_and_names_what_got_worse():
    earlier = _result("2026-11-20T10:00:00Z", e2e_vs_forward=2.0, memory_16x=1.05, polygonise_vs_shapes=2.5,
                      reader_vs_plain=1.2)
    now = _result("2026-11-26T10:00:00Z", e2e_vs_forward=2.0 * (1 + DRIFT) + 0.01, memory_16x=1.10,
                  polygonise_vs_shapes=2.0, reader_vs_plain=1.25, time_16x=0.2)
    worse = compare(now, earlier, "bench-old.json")
    # <= targets: a larger ratio is worse; >= targets: a smaller one; within DRIFT (memory +4.8 %) is not named
    assert worse == ["e2e_vs_forward 2.000 -> 2.210", "polygonise_vs_shapes 2.500 -> 2.000"]
    assert [r["was"] for r in now["rows"]] == [2.0, 1.05, 2.5, 1.2, None]  # no time_16x before
    assert now["compared_with"] == {"file": "bench-old.json", "date": earlier["date"], "device": earlier["device"],
                                    "worse": worse}
    table = format_table(now).splitlines()
    assert table[0].split()[:5] == ["figure", "value", "baseline", "ratio", "was"]
    assert table[1].split()[3:5] == ["2.210", "2.000"] and table[5].split()[3:5] == ["0.200", "-"]
    assert "bench-old.json" in table[-1] and "polygonise_vs_shapes 2.500 -> 2.000" in table[-1]
    assert "was" not in format_table(earlier).splitlines()[0].split()  # no column without a comparison


def test_records_are_named_by_date_and_device_and_the_newest_comparable_one_is_found(tmp_path):
    now = _result("2026-11-26T12:02:56Z", device="2 CPU cores (AMD EPYC, bf16)", e2e_vs_forward=2.3)
    assert record_path(now, tmp_path) == tmp_path / "bench-20261126T1202Z-2-cpu-cores-amd-epyc-bf16.json"
    assert earlier_result(tmp_path, now) is None
    older = _result("2026-11-25T09:00:00Z", device=now["device"], e2e_vs_forward=2.5)
    newest = _result("2026-11-26T10:55:00Z", device=now["device"], e2e_vs_forward=2.27)
    for r in (older, newest, now,  # the result itself (and anything later) is not "earlier"
              _result("2026-11-26T11:00:00Z", device="16 CPU cores (X), NVIDIA H100", e2e_vs_forward=1.0),
              _result("2026-11-26T11:30:00Z", device=now["device"], base=896, e2e_vs_forward=1.0)):
        write_result(r, record_path(r, tmp_path))
    (tmp_path / "bench-20261126T1159Z-broken.json").write_text("{")  # not results: passed over
    (tmp_path / "latest.json").write_text("{}")
    found = earlier_result(tmp_path, now)
    assert found is not None and found[0] == record_path(newest, tmp_path) and found[1]["rows"][0]["ratio"] == 2.27


def test_each_run_is_kept_as_a_record_that_the_next_run_compares_with(tmp_path):
    out = tmp_path / "results" / "latest.json"
    first = _result("2026-11-25T09:00:00Z", e2e_vs_forward=2.5, memory_16x=1.06)
    table, kept = save_result(first, out)
    assert kept == record_path(first, out.parent) and kept.is_file() and "was" not in table.splitlines()[0]
    second = _result("2026-11-26T09:00:00Z", e2e_vs_forward=2.3, memory_16x=1.20)
    table, kept = save_result(second, out, record=False)
    assert kept is None and len(list(out.parent.glob("bench-*.json"))) == 1
    saved = load_result(out)
    assert [r["was"] for r in saved["rows"]] == [2.5, 1.06]
    assert saved["compared_with"]["file"] == record_path(first, out.parent).name
    assert saved["compared_with"]["worse"] == ["memory_16x 1.060 -> 1.200"] and "memory_16x 1.060 -> 1.200" in table
    # --against: any results file, another device's included
    other = _result("2026-11-20T09:00:00Z", device="16 CPU cores (Y), NVIDIA H100", e2e_vs_forward=1.0)
    write_result(other, tmp_path / "h100.json")
    third = _result("2026-11-27T09:00:00Z", e2e_vs_forward=2.2)
    save_result(third, out, against=(tmp_path / "h100.json", load_result(tmp_path / "h100.json")))
    assert load_result(out)["rows"][0]["was"] == 1.0 and load_result(out)["compared_with"]["worse"] == [
        "e2e_vs_forward 1.000 -> 2.200"]


def test_a_file_that_is_not_bench_results_is_refused_by_name(tmp_path):
    with pytest.raises(BenchError, match="nothing.json: no such file; expected a results file written by"):
        load_result(tmp_path / "nothing.json")
    (tmp_path / "a.json").write_text("not json")
    with pytest.raises(BenchError, match=r"a.json: not JSON \(Expecting value"):
        load_result(tmp_path / "a.json")
    (tmp_path / "b.json").write_text('{"rows": [{"figure": "x"}], "date": "d", "device": "d"}')
    with pytest.raises(BenchError, match="b.json: an object with keys date, device, rows, not benchmark results"):
        load_result(tmp_path / "b.json")
    (tmp_path / "c.json").write_text("[1, 2]")
    with pytest.raises(BenchError, match="c.json: a JSON list, not benchmark results"):
        load_result(tmp_path / "c.json")


def test_device_names_the_cpu_model():
    import os

    assert _device(False).startswith(f"{os.cpu_count()} CPU cores (")
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        model = None
    if model:
        assert model in _device(False)


def test_bench_refuses_a_model_whose_bands_it_cannot_synthesise_before_synthesising(tmp_path):
    from click.testing import CliRunner


    card = ModelCard(arch="unet", encoder="resnet18", in_channels=6, classes=default_classes(),
                     arch_kwargs=default_arch_kwargs("unet"), bands=[f"b{i}" for i in range(6)], band_mean=[0.0] * 6,
                     band_std=[1.0] * 6, tile=256, overlap=32)
    save_checkpoint(tmp_path / "landsat6", build_from_card(card), card)
    out = CliRunner().invoke(cli, ["bench", "--model", str(tmp_path / "landsat6"), "--work", str(tmp_path / "w"),
                                   "--out", str(tmp_path / "b.json")])
    assert out.exit_code == 1
    lines = [ln for ln in out.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "landsat6: the model takes 6 bands" in lines[0] and "4, 8, 12, 16" in lines[0]
    assert not (tmp_path / "w" / "r1x").exists() and not (tmp_path / "b.json").exists()


def test_throughput_sizes_a_sentinel_2_scene():
    tp = throughput(5376 * 5376, 10.0, 17.67)  # the 12:36 run
    assert tp["mpx_per_s"] == 1.636 and tp["km2_per_hour"] == 588822.6  # 53.76 km square in 17.67 s
    assert tp["scene_minutes"] == round(10980 ** 2 / (5376 * 5376 / 17.67) / 60, 2) == 1.23
    table = format_table({"rows": [], "device": "d", "date": "t", "seconds": 1.0, "throughput": tp,
                          "scenes": {"1x": [1, 1], "16x": [4, 4]}})
    assert ("1.64 Mpx/s, 588,823 km2/h at 10 m; a 10980 x 10980 px scene with this model and bands: at most "
            "~1.2 min") in table


def test_repeats_keep_the_fastest_time_and_the_largest_memory():
    results = [{"wall": 9.0, "timings": {"cluster": 0.5}, "peak_bytes": 300, "run_dir": "a"},
               {"wall": 8.0, "timings": {"cluster": 2.0}, "peak_bytes": 100, "run_dir": "b"},
               {"wall": 8.4, "timings": {"cluster": 0.2}, "peak_bytes": None, "run_dir": "c"}]
    calls = []

    def run(i):
        calls.append(i)
        return results[i]

    best = _fastest(run, 3, key=_run_seconds)
    assert calls == [0, 1, 2]
    assert best["run_dir"] == "b" and best["peak_bytes"] == 300 and best["repeats"] == [8.5, 6.0, 8.2]
    assert _fastest(run, 0)["repeats"] == [9.0]  # at least once
    assert "best of 3" in format_table({"rows": [], "device": "d", "date": "t", "seconds": 1.0, "repeats": 3,
                                        "scenes": {"1x": [1, 1], "16x": [4, 4]}})


@pytest.mark.skipif(not TreeMemory.available(), reason="needs /proc (Linux)")
def test_tree_memory_counts_grandchildren():
    code = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
            "'import time; b = bytearray(300 * 2**20); b[::4096] = b\"x\" * len(b[::4096]); time.sleep(1.5)'])")
    proc = subprocess.Popen([sys.executable, "-c", code])
    with TreeMemory(proc.pid, every=0.02) as mem:
        proc.wait(timeout=60)
    assert mem.peak >= 300 * 2**20  # the grandchild's 300 MiB are seen through the child


def test_reader_job_reads_every_tile(tmp_path):
    region = synthesize(tmp_path / "r", height=300, width=500, seed=2)
    out = run_job({"kind": "reader", "scene": str(region.scene), "tile": 128, "overlap": 16})
    info = raster_info(region.scene)
    grid = tile_grid(info.shape, info.transform, size=128, overlap=16)
    assert out["ours_px"] == len(grid) * 128 * 128 and out["plain_px"] == 300 * 500
    assert out["ours"] > 0 and out["plain"] > 0 and (out["peak_bytes"] or 0) > 10 * 2**20


def test_short_jobs_time_both_sides_with_the_allocator_tuned(tmp_path):
    """Untuned, glibc's state decided whether decoding the bench's mask took its usual time or twice it."""

    region = synthesize(tmp_path / "r", height=300, width=500, seed=2)
    out = run_job({"kind": "areas", "mask": str(region.labels), "districts": str(region.districts), "threads": 2})
    assert out["allocator_tuned"] is (_glibc() is not None)
    assert out["ours"] > 0 and out["decode"] > 0


def test_jobs_start_without_torch_as_a_run_does():
    """A measured job's process imports geoseg but not torch (a run's driver does not either), so the
    one-process run and the naive loop time their own import of torch, and the short jobs tune the
    allocator before torch has allocated anything; `geoseg.bench` itself imports training, which loads it."""
    code = "import sys, geoseg.bench_jobs; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_forward_throughput_row_takes_the_faster_of_eager_and_compiled():
    """The GPU forward figure's code path, on the CPU at a small size: both ways are timed and
    the row carries the faster; without a C++ compiler the compile failure is named instead."""
    import re
    import shutil


    row = forward_throughput_row("cpu", encoder="resnet18", size=64, batch=2, bands=4, n=2)
    assert row.figure == "gpu_forward_tiles_per_s" and row.unit == "tiles/s" and row.ratio == round(row.value, 4)
    eager = float(re.search(r"eager (\d+) tiles/s", row.note).group(1))
    compiled = re.search(r"torch\.compile (\d+) tiles/s \(compiled in \d+ s\)", row.note)
    if shutil.which("g++") or shutil.which("c++"):
        assert compiled, row.note
        assert abs(row.value - max(eager, float(compiled.group(1)))) <= 0.5
    else:
        assert "torch.compile failed (" in row.note and abs(row.value - eager) <= 0.5


def test_device_end_to_end_row_names_the_bottleneck(tmp_path):
    """The GPU end-to-end figure's job, run on the CPU at a small size: a real workflow run whose
    row carries the run time against 60 s and names the slowest stage and the infer stage's bound."""

    scene = synthesize(tmp_path / "m", height=256, width=256, seed=1).scene
    model = _bench_model(tmp_path / "model", scene)
    row = device_e2e_row(tmp_path, model, side=896, device="cpu")
    assert row.figure == "gpu_e2e_s2_scene" and row.baseline == GPU_E2E_SECONDS and row.unit == "s"
    assert 0 < row.value < GPU_E2E_SECONDS and row.ratio == round(row.value / GPU_E2E_SECONDS, 4) and row.met
    assert "4 tiles on cpu" in row.note and "slowest stage: " in row.note
    assert any(f"inside it {k}" in row.note for k in ("read", "model", "setup", "write"))
