"""Seeing the result: quicklook PNGs, the district chart, report.html (checked in headless Chromium), run summaries.

One small real run (300 x 250 px scene, two districts, a random-weight U-Net, growth features)
is made once through ``geoseg run --json`` and shared by the tests; a second run switches the
report off. A copy of the first gets a reference sample and an estimate (``geoseg sample`` /
``geoseg estimate``) and its report's section of estimated areas; the crops' index profiles per
district (``district_crop_timeseries.parquet``) get their chart and section.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from affine import Affine
from click.testing import CliRunner
from PIL import Image

from geoseg.classes import default_classes
from geoseg.cli.main import cli
from geoseg.ops.estimate import estimate_file
from geoseg.ops.query import query_run
from geoseg.ops.sample import sample_file
from geoseg.report import ReportError, RunEstimate, load_run, write_run_report
from geoseg.report.chart import crop_pivot, crop_profiles, profile_series, write_profile_chart
from geoseg.report.html import estimate_section, profile_section
from geoseg.report.inputs import false_colour_bands, read_decimated
from geoseg.rundir import RunPaths, read_manifest

from ..workflow_helpers import write_districts, write_model, write_scene, write_workflow

TF = Affine(10, 0, 560000, 0, -10, 3420000)
H, W = 300, 250
CLASSES = default_classes()
RGB = {c.name: c.rgb for c in CLASSES.classes}
# seed 1 makes a random U-Net that maps this scene to several crop classes (cotton, maize, rice, sugarcane)
MODEL_SEED = 1
#: The run's growth features (``outputs.features``): the profiles are drawn for ndvi, the first is gcvi.
FEATURES = ["gcvi=ratio(NIR,G)", "ndvi"]


def _project(root: Path, model_dir: Path, **outputs: object) -> Path:
    write_scene(root / "scene.tif", H, W, TF)
    shutil.copytree(model_dir, root / "model")
    write_districts(root / "districts.gpkg", 561200, (560000, 3417000, 562500, 3420000))
    return write_workflow(root / "wf.yaml", districts={"path": "districts.gpkg", "name_field": "district"},
                          outputs={"fields": ["parquet", "gpkg"], "district_areas": True, "min_area_ha": 0.05,
                                   **outputs})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):  # type: ignore[no-untyped-def]
    return write_model(tmp_path_factory.mktemp("m") / "model", seed=MODEL_SEED)


@pytest.fixture(scope="module")
def run(tmp_path_factory, model_dir):  # type: ignore[no-untyped-def]
    """A finished run made by ``geoseg run --json``: (summary JSON, run directory)."""
    root = tmp_path_factory.mktemp("proj")
    wf = _project(root, model_dir, features=FEATURES)
    out = CliRunner().invoke(cli, ["run", str(wf), "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    return summary, Path(summary["run_dir"])


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _count(img: np.ndarray, rgb: tuple[int, int, int]) -> int:
    return int(np.all(img == np.array(rgb, dtype=img.dtype), axis=-1).sum())


# ------------------------------------------------------------------ the run writes the report


def test_run_writes_report_quicklook_chart_and_log(run):  # type: ignore[no-untyped-def]
    summary, rd = run
    outputs = read_manifest(rd)["outputs"]
    for key, name in [("report_html", "report.html"), ("quicklook_scene", "quicklook_scene.png"),
                      ("district_chart", "district_chart.png"), ("run_log", "run.log")]:
        assert outputs[key] == name  # stored relative to the run folder
        assert (rd / name).stat().st_size > 1000 or name == "run.log"
    assert "report" in read_manifest(rd)["timings"] and "report" in summary["timings"]
    assert not [p.name for p in rd.iterdir() if ".partial-" in p.name]  # written to temporary names, renamed
    log = (rd / "run.log").read_text()
    assert f"run {summary['run_id']}" in log
    for line in ("polygonising fields", "summing district areas", "writing the report", "done:"):
        assert line in log, line


def test_run_json_summary_matches_the_district_table(run):  # type: ignore[no-untyped-def]
    summary, rd = run
    assert set(summary) >= {"run_id", "run_dir", "status", "tiles", "timings", "outputs", "district_crop_ha"}
    assert summary["status"] == "done" and summary["run_id"] == rd.name
    assert summary["tiles"] == read_manifest(rd)["tiles"] > 0
    table = pd.read_csv(rd / "district_areas.csv")
    crops = table[table.class_id.isin([c.id for c in CLASSES.classes if c.crop])]
    assert set(summary["district_crop_ha"]) == {"West", "East"}
    n = 0
    for row in crops.itertuples():
        assert summary["district_crop_ha"][row.district][row.crop] == pytest.approx(row.area_ha, rel=1e-9)
        n += 1
    assert n == sum(len(v) for v in summary["district_crop_ha"].values())
    assert "background" not in json.dumps(summary["district_crop_ha"])


def test_report_switched_off_and_text_summary(tmp_path, model_dir):  # type: ignore[no-untyped-def]
    wf = _project(tmp_path, model_dir, report=False)
    out = CliRunner().invoke(cli, ["run", str(wf)])
    assert out.exit_code == 0, out.output
    lines = out.stdout.strip().splitlines()
    rd = Path(lines[-1])  # the last line stays the run directory
    assert (rd / "manifest.json").is_file()
    assert not (rd / "report.html").exists() and not list(rd.glob("*.png"))
    assert "report" not in read_manifest(rd)["timings"]
    # the districts x crops table in hectares, matching district_areas.csv
    i = lines.index("crop area per district (hectares):")
    header = lines[i + 1].split()
    table = pd.read_csv(rd / "district_areas.csv")
    for district in ("West", "East"):
        row = next(line for line in lines[i + 2:] if line.split()[0] == district).split()
        ha = table[(table.district == district) & (table.class_id != 0)].area_ha.sum()
        assert float(row[header.index("total")].replace(",", "")) == pytest.approx(ha, abs=0.5)
    quiet = CliRunner().invoke(cli, ["run", str(wf), "--quiet"])
    assert quiet.exit_code == 0 and len(quiet.stdout.strip().splitlines()) == 1


# ------------------------------------------------------------------ PNGs


def test_quicklook_png_size_and_content(run):  # type: ignore[no-untyped-def]
    _, rd = run
    img = _pixels(rd / "quicklook_scene.png")
    h, w = img.shape[:2]
    assert 1200 <= w <= 2500 and 500 <= h <= 2000, (w, h)
    colours = np.unique(img.reshape(-1, 3), axis=0)
    assert len(colours) > 2000  # a real false-colour composite, not a blank canvas
    mask, _, _, _ = read_decimated(rd / "mask.tif", 1)
    values, counts = np.unique(mask, return_counts=True)
    present = [CLASSES.classes[v] for v, n in zip(values, counts) if v != 255 and n > 0.005 * mask.size]
    assert len(present) >= 2
    right = img[:, w // 2:]  # the crop-map panel
    for c in present:
        assert _count(right, c.rgb) > 200, f"{c.name} {c.color} not drawn in the quicklook's mask panel"


def test_district_chart_png_size_and_content(run):  # type: ignore[no-untyped-def]
    _, rd = run
    img = _pixels(rd / "district_chart.png")
    h, w = img.shape[:2]
    assert 800 <= w <= 2000 and 200 <= h <= 1500, (w, h)
    table = pd.read_csv(rd / "district_areas.csv")
    per_crop = table[table.class_id != 0].groupby("crop").area_ha.sum()
    big = [c for c, ha in per_crop.items() if ha > 0.02 * per_crop.sum()]
    assert len(big) >= 2
    for crop in big:
        assert _count(img, RGB[crop]) > 100, f"{crop} bar segment missing from the chart"


def test_read_decimated_bounds_memory_and_grid(run):  # type: ignore[no-untyped-def]
    _, rd = run
    a, t, crs, _ = read_decimated(rd / "mask.tif", 1, max_px=64)
    assert a.shape == (1, 60, 50)  # factor 5: 300 x 250 -> 60 x 50
    assert (t.a, t.e, t.c, t.f) == (50.0, -50.0, TF.c, TF.f)  # same bounds, coarser pixels
    assert crs.to_epsg() == 32643


def test_false_colour_bands_pick_nir_red_green_per_date():  # type: ignore[no-untyped-def]
    desc = [f"{d} {b}" for d in ("2024-06-15", "2024-09-05") for b in ("B", "G", "R", "NIR")]
    assert false_colour_bands(desc) == [("2024-06-15", [4, 3, 2]), ("2024-09-05", [8, 7, 6])]
    assert false_colour_bands(["B02", "B03", "B04", "B08"]) == [("", [4, 3, 2])]


def test_crop_pivot_sorts_districts_by_total_and_keeps_empty_ones():  # type: ignore[no-untyped-def]
    t = pd.DataFrame({"district": ["A", "A", "B", "C", "C"], "class_id": [0, 1, 2, 0, 1],
                      "crop": ["background", "rice", "wheat", "background", "rice"],
                      "area_ha": [100.0, 2.0, 5.0, 50.0, 0.0]})
    p = crop_pivot(t, CLASSES)
    assert p.index.tolist() == ["B", "A", "C"]
    assert "background" not in p.columns and p.loc["C", "total"] == 0.0
    assert p.loc["A", "rice"] == 2.0 and p.loc["B", "wheat"] == 5.0


# ------------------------------------------------------------------ report.html


class _Page(HTMLParser):
    """Collects what the tests look at: resource URLs, map paths, district table rows, field records."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.fields: list[tuple[str, str]] = []  # (crop of the enclosing group, data-i)
        self.rows: list[str] = []
        self.tags: set[str] = set()
        self._crop = ""
        self._json = False
        self.records: list = []  # type: ignore[type-arg]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.add(tag)
        for k in ("src", "href"):
            if a.get(k):
                self.urls.append(str(a[k]))
        if tag == "g" and a.get("data-crop"):
            self._crop = str(a["data-crop"])
        if tag == "path" and a.get("class") == "f":
            self.fields.append((self._crop, str(a.get("data-i"))))
        if tag == "tr" and a.get("data-district") is not None:
            self.rows.append(str(a["data-district"]))
        self._json = tag == "script" and a.get("id") == "field-data"

    def handle_data(self, data: str) -> None:
        if self._json:
            self.records = json.loads(data)
            self._json = False


def _parse(text: str) -> _Page:
    p = _Page()
    p.feed(text)
    return p


def _assert_self_contained(text: str, page: _Page) -> None:
    """Nothing is fetched: images are data URIs, links point at files of the run (relative), no stylesheet links."""
    assert "link" not in page.tags and "iframe" not in page.tags
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text)
    assert not re.search(r"@import|url\(\s*[\"']?https?:", text)
    for u in page.urls:
        assert u.startswith("data:image/") or not re.match(r"^[a-z]+:", u), u


def test_report_html_is_self_contained_and_complete(run):  # type: ignore[no-untyped-def]
    _, rd = run
    text = (rd / "report.html").read_text(encoding="utf-8")
    page = _parse(text)
    _assert_self_contained(text, page)
    assert any(u.startswith("data:image/png;base64,") for u in page.urls)  # the chart
    # every field of this small run is on the map, in its group's crop, with its record
    import geopandas as gpd

    fields = gpd.read_parquet(rd / "fields.parquet")
    assert len(page.fields) == len(page.records) == len(fields)
    by_id = fields.set_index("field_id")
    for crop, i in page.fields:
        fid, rec_crop, area, conf, district = page.records[int(i)]
        assert rec_crop == crop == by_id.loc[fid, "crop:name"]
        assert area == pytest.approx(by_id.loc[fid, "area_ha"], abs=0.006)
        assert conf == pytest.approx(by_id.loc[fid, "confidence"], abs=0.0006)
        assert district == by_id.loc[fid, "district"]
    assert sorted(page.rows) == ["East", "West"]
    for heading in ("Stage timings", "Crop area per district", "Chart", "Run", "Outputs"):
        assert f"<h2>{heading}" in text
    assert read_manifest(rd)["run_id"] in text


def test_large_runs_load_only_the_largest_fields_and_say_so(run, tmp_path):  # type: ignore[no-untyped-def]
    _, rd = run
    copy = tmp_path / rd.name
    shutil.copytree(rd, copy)
    import geopandas as gpd

    fields = gpd.read_parquet(copy / "fields.parquet")
    m = read_manifest(copy)
    m["outputs"] = {k: v.replace(str(rd), str(copy)) for k, v in m["outputs"].items()}
    (copy / "manifest.json").write_text(json.dumps(m))
    steps: list[tuple[int, int]] = []
    write_run_report(copy, max_fields=5, progress=lambda d, t: steps.append((d, t)))
    assert steps == [(0, 3), (1, 3), (2, 3), (3, 3)]  # one scene's quicklook, the chart, the page
    text = (copy / "report.html").read_text(encoding="utf-8")
    page = _parse(text)
    assert len(page.fields) == 5
    largest = sorted(fields.area_ha, reverse=True)[:5]
    assert sorted((r[2] for r in page.records), reverse=True) == pytest.approx(largest, abs=0.006)
    assert f"the 5 largest of {len(fields):,} fields" in text


def test_report_command_rebuilds_a_run(run, tmp_path):  # type: ignore[no-untyped-def]
    _, rd = run
    runner = CliRunner()
    help_text = runner.invoke(cli, ["report", "--help"]).output
    assert "Example" in help_text and "geoseg report runs/demo/latest" in help_text
    for name in ("report.html", "quicklook_scene.png", "district_chart.png"):
        (rd / name).unlink()
    out = runner.invoke(cli, ["report", str(rd), "--json"])
    assert out.exit_code == 0, out.output
    written = json.loads(out.stdout)
    assert written == {"quicklook_scene": str(rd / "quicklook_scene.png"),
                       "district_chart": str(rd / "district_chart.png"),
                       "profile_chart": str(rd / "profile_chart.png"), "report_html": str(rd / "report.html")}
    assert all(Path(p).stat().st_size > 1000 for p in written.values())
    assert read_manifest(rd)["outputs"]["report_html"] == "report.html"  # relative to the run folder
    bad = runner.invoke(cli, ["report", str(tmp_path)])
    assert bad.exit_code == 1
    assert f"{tmp_path}: no manifest.json found" in bad.output and "geoseg run" in bad.output
    with pytest.raises(ReportError):
        write_run_report(tmp_path)


# ------------------------------------------------------------------ estimated areas from a reference sample


@pytest.fixture(scope="module")
def estimated(run, tmp_path_factory):  # type: ignore[no-untyped-def]
    """A copy of the run with an estimate: a sample drawn from it, labelled with each point's map class
    except every seventh point, called wheat; then its report. (run directory, the report's outputs)."""
    _, rd = run
    copy = tmp_path_factory.mktemp("estimated") / rd.name
    shutil.copytree(rd, copy)
    sample_file(copy, minimum=5, target_se=0.05)
    points = pd.read_csv(RunPaths(copy).sample / "points.csv")
    key = pd.read_csv(RunPaths(copy).sample / "key.csv").set_index("point_id")
    points["reference"] = points.point_id.map(key.crop).astype(object)
    points.loc[points.index[::7], "reference"] = "wheat"
    labels = copy.parent / "labels.csv"
    points.to_csv(labels, index=False)
    estimate_file(copy, labels)
    return copy, write_run_report(copy)


def _section(text: str) -> str:
    m = re.search(r'<section id="estimate-section">.*?</section>', text, re.DOTALL)
    assert m, "no estimate section"
    return m.group(0)


def _cells(section: str, row_attrs: str) -> list[str]:
    """The text of each cell of the table row whose <tr> carries ``row_attrs``."""
    m = re.search(f"<tr {re.escape(row_attrs)}>(.*?)</tr>", section, re.DOTALL)
    assert m, row_attrs
    return [unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", m.group(1), re.DOTALL)]


def _plain(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def test_report_shows_the_estimated_areas_of_the_csv(estimated):  # type: ignore[no-untyped-def]
    rd, _ = estimated
    text = (rd / "report.html").read_text(encoding="utf-8")
    page = _parse(text)
    _assert_self_contained(text, page)
    sec = _section(text)
    assert (text.index('id="chart-section"') < text.index('id="estimate-section"') < text.index('id="profile-section"')
            < text.index('id="manifest-section"'))
    assert "<h2>Estimated areas (reference sample)</h2>" in sec
    summary = json.loads((rd / "estimate.json").read_text())
    lo, hi = summary["overall_ci"]
    plain = _plain(sec)
    assert (f"Overall accuracy {100 * summary['overall_accuracy']:.1f} % (95 % CI {100 * lo:.1f} – {100 * hi:.1f} %); "
            f"from {summary['points_labelled']} of the design's {summary['points_design']} points labelled") in plain
    assert summary["points_labelled"] == summary["points_design"] > 0
    # per class: every value as the CSV has it
    areas = pd.read_csv(rd / "estimate_areas.csv")
    wheat = areas.set_index("crop").loc["wheat"]
    assert wheat.estimated_ha > wheat.mapped_ha + 1  # every seventh point called wheat: the estimate is larger
    assert f'<td class="n" data-v="{wheat.estimated_ha:.6g}">{wheat.estimated_ha:,.1f}</td>' in sec
    shown = 0
    for r in areas.itertuples():
        if r.mapped_ha == 0 and r.estimated_ha == 0 and r.points_mapped == 0 and r.points_reference == 0:
            assert f'data-crop="{r.crop}"' not in sec.split('id="estimate-districts"')[0]  # nothing to show
            continue
        cells = _cells(sec, f'data-crop="{r.crop}"')
        assert cells[:6] == [r.crop, f"{r.mapped_ha:,.1f}", f"{r.estimated_ha:,.1f}",
                             f"± {(r.ci_high_ha - r.ci_low_ha) / 2:,.1f}", f"{r.ci_low_ha:,.1f} – {r.ci_high_ha:,.1f}",
                             f"{r.margin_pct:.1f} %" if np.isfinite(r.margin_pct) else "–"]
        assert cells[6] == f"{100 * r.users_accuracy:.1f} % ± {100 * 1.96 * r.users_se:.1f}"
        assert cells[7] == f"{100 * r.producers_accuracy:.1f} % ± {100 * 1.96 * r.producers_se:.1f}"
        assert cells[8:] == [str(r.points_mapped), str(r.points_reference)]
        shown += 1
    assert shown >= 3
    # per district and crop: estimated with its interval next to the mapped hectares
    crops = {c.name for c in CLASSES.classes if c.crop}
    districts = pd.read_csv(rd / "estimate_districts.csv")
    assert set(districts.district) == {"West", "East"}
    rows = 0
    for r in districts.itertuples():
        attrs = f'data-estimate-district="{r.district}" data-crop="{r.crop}"'
        if r.crop not in crops or (r.mapped_ha == 0 and r.estimated_ha == 0 and r.ci_high_ha <= 0):
            assert attrs not in sec
            continue
        assert _cells(sec, attrs) == [r.district, r.crop, f"{r.mapped_ha:,.1f}", f"{r.estimated_ha:,.1f}",
                                      f"± {(r.ci_high_ha - r.ci_low_ha) / 2:,.1f}",
                                      f"{r.ci_low_ha:,.1f} – {r.ci_high_ha:,.1f}", str(r.points)]
        rows += 1
    assert rows >= 4
    # what the intervals are, and what mapped hectares count
    for words in ("95 % confidence intervals", "± 1.96 standard errors", "Olofsson et al. (2014)", "Stehman (2014)",
                  "Mapped hectares count the map's pixels"):
        assert words in plain, words
    # the chart, embedded: the very PNG written beside the page
    m = re.search(r'<img class="fig" id="estimate-chart" [^>]*src="data:image/png;base64,([^"]+)"', sec)
    assert m and base64.b64decode(m.group(1)) == (rd / "estimate_chart.png").read_bytes()


def test_the_estimate_chart_is_written(estimated):  # type: ignore[no-untyped-def]
    rd, outputs = estimated
    assert outputs["estimate_chart"] == str(RunPaths(rd).estimate_chart) == str(rd / "estimate_chart.png")
    assert list(outputs) == ["quicklook_scene", "district_chart", "estimate_chart", "profile_chart", "report_html"]
    img = _pixels(rd / "estimate_chart.png")
    h, w = img.shape[:2]
    assert 800 <= w <= 2000 and 200 <= h <= 1500, (w, h)
    table = pd.read_csv(rd / "estimate_districts.csv")
    per_crop = table[table.crop.isin([c.name for c in CLASSES.classes if c.crop])].groupby("crop").estimated_ha.sum()
    big = [c for c, ha in per_crop.items() if ha > 0.02 * per_crop.sum()]
    assert len(big) >= 2
    for crop in big:  # the estimated bars are solid in the crop's colour
        assert _count(img, RGB[crop]) > 100, f"{crop} estimated bar missing from the chart"
    assert _count(img, (0, 0, 0)) > 50  # the whiskers


def test_no_estimate_section_without_an_estimate(run, estimated, tmp_path):  # type: ignore[no-untyped-def]
    _, rd = run
    assert 'id="estimate-section"' not in (rd / "report.html").read_text(encoding="utf-8")
    assert not RunPaths(rd).estimate_chart.exists() and load_run(rd).estimate is None
    # tables without estimate.json (published last): an estimate being rewritten, not one to show
    src, _ = estimated
    copy = tmp_path / src.name
    shutil.copytree(src, copy)
    RunPaths(copy).estimate_summary.unlink()
    RunPaths(copy).estimate_chart.unlink()
    assert load_run(copy).estimate is None
    outputs = write_run_report(copy)
    assert "estimate_chart" not in outputs and not RunPaths(copy).estimate_chart.exists()
    text = (copy / "report.html").read_text(encoding="utf-8")
    assert 'id="estimate-section"' not in text and "estimate_areas" not in text
    # a damaged summary: no section, and the notes say why
    RunPaths(copy).estimate_summary.write_text("{not json")
    data = load_run(copy)
    assert data.estimate is None
    assert len(data.notes) == 1 and data.notes[0].startswith(f"estimate left out: {RunPaths(copy).estimate_summary} "
                                                              f"cannot be read")
    write_run_report(copy)
    text = (copy / "report.html").read_text(encoding="utf-8")
    assert 'id="estimate-section"' not in text and "estimate left out: " in text


def test_the_estimate_section_escapes_names_and_works_without_districts():  # type: ignore[no-untyped-def]
    areas = pd.DataFrame({
        "class_id": [0, 1], "crop": ["<b>bold</b>", "rice & <script>x</script>"], "mapped_ha": [10.0, 20.0],
        "estimated_ha": [12.5, 17.5], "se_ha": [1.0, 1.0], "ci_low_ha": [10.54, 15.54], "ci_high_ha": [14.46, 19.46],
        "margin_pct": [15.68, 11.2], "users_accuracy": [0.9, np.nan], "users_se": [0.05, np.nan],
        "producers_accuracy": [0.8, 0.95], "producers_se": [0.1, 0.02], "points_mapped": [20, 0],
        "points_reference": [18, 2]})
    est = RunEstimate({"overall_accuracy": 0.85, "overall_ci": [0.8, 0.9], "z": 1.96, "points_design": 22,
                       "points_labelled": 20, "notes": ["2 of the design's 22 points <i>unlabelled</i>"]}, areas)
    sec = estimate_section(est, CLASSES)
    assert "<script>" not in sec and "<b>bold" not in sec and "<i>" not in sec
    assert "rice &amp; &lt;script&gt;x&lt;/script&gt;" in sec and "&lt;i&gt;unlabelled&lt;/i&gt;" in sec
    assert _cells(sec, 'data-crop="rice &amp; &lt;script&gt;x&lt;/script&gt;"')[1:7] == [
        "20.0", "17.5", "± 2.0", "15.5 – 19.5", "11.2 %", "–"]  # no point mapped rice: no user's accuracy
    plain = _plain(sec)
    assert "Overall accuracy 85.0 % (95 % CI 80.0 – 90.0 %); from 20 of the design's 22 points labelled" in plain
    assert "Per district" not in sec and "estimate-chart" not in sec


# ------------------------------------------------------------------ crop growth per district (outputs.features)


def _profile_section(text: str) -> str:
    m = re.search(r'<section id="profile-section">.*?</section>', text, re.DOTALL)
    assert m, "no profile section"
    return m.group(0)


def _weighted(table: pd.DataFrame, index: str) -> pd.DataFrame:
    """The test's own (district, crop, date) -> area-weighted mean of ``index`` over the scenes' rows."""
    crops = {c.id: c.name for c in CLASSES.classes if c.crop}
    t = table[(table["index"] == index) & table.class_id.isin(list(crops)) & (table.observed_ha > 0)
              & table["mean"].notna()]
    t = t.assign(crop=t.class_id.map(crops), wm=t["mean"] * t.observed_ha)
    g = t.groupby(["district", "crop", "date"]).agg(wm=("wm", "sum"), w=("observed_ha", "sum"))
    return (g.wm / g.w).rename("mean")


def test_a_run_with_features_gets_the_profile_chart_and_section(run):  # type: ignore[no-untyped-def]
    _, rd = run
    outputs = read_manifest(rd)["outputs"]
    assert outputs["profile_chart"] == "profile_chart.png" and outputs["district_crop_timeseries"]
    assert RunPaths(rd).profile_chart == rd / "profile_chart.png"
    img = _pixels(rd / "profile_chart.png")
    h, w = img.shape[:2]
    assert 800 <= w <= 2000 and 300 <= h <= 1500, (w, h)
    table = pd.read_parquet(RunPaths(rd).district_crop_timeseries)
    assert set(table["index"]) == {"gcvi", "ndvi"} and set(table.district) == {"West", "East"}
    series = _weighted(table, "ndvi")
    drawn = sorted(set(series.index.get_level_values("crop")))
    assert len(drawn) >= 2
    for crop in drawn:  # each crop's line in its class colour
        assert _count(img, RGB[crop]) > 10, f"{crop} line missing from the profile chart"
    for crop in {c.name for c in CLASSES.classes if c.crop} - set(drawn):
        assert _count(img, RGB[crop]) == 0, crop
    text = (rd / "report.html").read_text(encoding="utf-8")
    _assert_self_contained(text, _parse(text))
    sec = _profile_section(text)
    assert (text.index('id="chart-section"') < text.index('id="profile-section"')
            < text.index('id="quicklook-section"'))  # no estimate in this run: after the district chart
    assert "<h2>Crop growth per district</h2>" in sec
    plain = _plain(sec)
    # ndvi is drawn though gcvi comes first; the districts, largest crop area first
    areas = pd.read_csv(rd / "district_areas.csv")
    crop_ha = areas[areas.class_id.isin([c.id for c in CLASSES.classes if c.crop])].groupby("district").area_ha.sum()
    order = crop_ha.sort_values(ascending=False).index.tolist()
    assert f"ndvi of each crop over the season in 2 districts: {order[0]}, {order[1]}. The tables also hold gcvi." \
        in plain
    for words in ("area-weighted mean of ndvi over the pixels mapped as that crop in the district, per date",
                  "shaded: ± one standard deviation", "district_crop_timeseries.parquet", "field_timeseries.parquet",
                  "SQL views district_crop_timeseries and field_timeseries of geoseg query"):
        assert words in plain, words
    assert "left out" not in plain
    m = re.search(r'<img class="fig" id="profile-chart" [^>]*src="data:image/png;base64,([^"]+)"', sec)
    assert m and base64.b64decode(m.group(1)) == (rd / "profile_chart.png").read_bytes()
    # the views the page names exist in the run
    q = query_run(rd, "SELECT count(DISTINCT district) AS n FROM district_crop_timeseries")
    assert int(q.n[0]) == 2


def test_the_plotted_series_is_the_area_weighted_mean_over_scenes(run):  # type: ignore[no-untyped-def]
    _, rd = run
    table = pd.read_parquet(RunPaths(rd).district_crop_timeseries)
    got = profile_series(table, CLASSES, "ndvi")
    assert set(got.crop) <= {c.name for c in CLASSES.classes if c.crop}
    want = _weighted(table, "ndvi")
    got = got.dropna(subset=["mean"]).set_index(["district", "crop", "date"])["mean"]
    assert len(want) >= 4
    pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), check_names=False, rtol=1e-12)
    # two scenes over the same districts, two dates, a class that is no crop, another index, a date nobody saw
    rng = np.random.default_rng(3)
    rows = []
    for scene in ("a", "b"):
        for district in ("North", "South"):
            for cid, crop in ((0, "background"), (1, "rice"), (3, "sugarcane")):
                for date in ("2024-06-01", "2024-07-01", "2024-08-01"):
                    for index in ("ndvi", "evi"):
                        obs = 0.0 if date == "2024-08-01" else float(rng.uniform(0.5, 20))
                        rows.append((scene, district, cid, crop, date, index,
                                     float(rng.uniform(0.1, 0.9)) if obs else np.nan, float(rng.uniform(0, 0.1)),
                                     obs, 30.0, obs / 30.0))
    synth = pd.DataFrame(rows, columns=["scene", "district", "class_id", "crop", "date", "index", "mean", "std",
                                        "observed_ha", "area_ha", "observed"])
    got = profile_series(synth, CLASSES, "evi")
    assert set(got.crop) == {"rice", "sugarcane"} and len(got) == 2 * 2 * 3
    assert got[got.date == "2024-08-01"]["mean"].isna().all()  # not observed: a gap in the line
    pd.testing.assert_series_equal(got.dropna(subset=["mean"]).set_index(["district", "crop", "date"])["mean"],
                                   _weighted(synth, "evi").sort_index(), check_names=False, rtol=1e-12)
    # the std pools the scenes' pixels: sqrt of the weighted mean of std^2 + mean^2, less the mean^2
    one = synth[(synth["index"] == "evi") & (synth.district == "North") & (synth.class_id == 1)
                & (synth.date == "2024-06-01")]
    w = one.observed_ha / one.observed_ha.sum()
    mu = float((w * one["mean"]).sum())
    sd = float(np.sqrt((w * (one["std"] ** 2 + one["mean"] ** 2)).sum() - mu**2))
    row = got[(got.district == "North") & (got.crop == "rice") & (got.date == "2024-06-01")].iloc[0]
    assert row["mean"] == pytest.approx(mu, rel=1e-12) and row["std"] == pytest.approx(sd, rel=1e-9)
    assert sd > max(one["std"])  # the scenes' means differ: the pooled spread is wider than each


def test_the_profile_chart_shows_the_largest_districts_and_escapes_names(tmp_path):  # type: ignore[no-untyped-def]
    rows = []
    for k in range(15):
        for cid, crop in ((1, "rice"), (4, "cotton")):
            for date in ("2024-06-01", "2024-07-15", "2024-09-01"):
                rows.append((f"D{k:02d}", cid, crop, date, "evi", 0.1 * cid + 0.01 * k + 0.1 * (date > "2024-07"), 0.05,
                             5.0, 10.0 + k, 0.5))
    rows.append(("<b>$x$ & co</b>", 1, "rice", "2024-06-01", "evi", 0.5, 0.1, 2.0, 500.0, 0.004))
    t = pd.DataFrame(rows, columns=["district", "class_id", "crop", "date", "index", "mean", "std", "observed_ha",
                                    "area_ha", "observed"])
    p = crop_profiles(t, CLASSES)
    assert p is not None and p.index == "evi" and p.n_districts == 16 and p.left_out == 4
    assert p.districts == ("<b>$x$ & co</b>", *(f"D{k:02d}" for k in range(14, 3, -1)))  # largest crop area first
    assert set(p.series.district) == set(p.districts)
    png = write_profile_chart(tmp_path / "profile_chart.png", p, CLASSES)
    img = _pixels(png)
    assert img.shape[1] >= 1000 and _count(img, RGB["rice"]) > 10 and _count(img, RGB["cotton"]) > 10
    assert not [f.name for f in tmp_path.iterdir() if f.name != "profile_chart.png"]  # written atomically
    sec = profile_section(p, png)
    assert "<b>$x" not in sec and "&lt;b&gt;$x$ &amp; co&lt;/b&gt;" in sec
    plain = _plain(sec)
    assert "evi of each crop over the season in 12 districts: <b>$x$ & co</b>, D14, D13" in plain
    assert "(the 12 largest by crop area; 4 smaller districts are left out of the chart, not of the tables)" in plain
    # nothing observed: no profiles
    assert crop_profiles(t.assign(observed_ha=0.0), CLASSES) is None
    assert crop_profiles(t.assign(class_id=0), CLASSES) is None  # background only: no crop


def test_no_profile_section_without_the_file_and_a_note_for_a_damaged_one(run, tmp_path):  # type: ignore[no-untyped-def]
    _, rd = run
    copy = tmp_path / rd.name
    shutil.copytree(rd, copy)
    paths = RunPaths(copy)
    # without the file: no chart, no section, no note
    paths.district_crop_timeseries.unlink()
    paths.profile_chart.unlink()
    m = read_manifest(copy)
    m["outputs"].pop("district_crop_timeseries")
    m["outputs"].pop("profile_chart")
    (copy / "manifest.json").write_text(json.dumps(m))
    data = load_run(copy)
    assert data.profiles is None and data.notes == []
    outputs = write_run_report(copy)
    assert "profile_chart" not in outputs and not paths.profile_chart.exists()
    text = (copy / "report.html").read_text(encoding="utf-8")
    assert 'id="profile-section"' not in text and "Crop growth" not in text and "crop growth" not in text
    # a damaged file: a note says why, and still no section
    paths.district_crop_timeseries.write_bytes(b"PAR1 not really parquet")
    data = load_run(copy)
    assert data.profiles is None
    assert len(data.notes) == 1 and data.notes[0].startswith(
        f"crop growth profiles left out: {paths.district_crop_timeseries} cannot be read")
    outputs = write_run_report(copy)
    assert "profile_chart" not in outputs and not paths.profile_chart.exists()
    text = (copy / "report.html").read_text(encoding="utf-8")
    assert 'id="profile-section"' not in text
    notes = re.search(r'<section id="notes-section">.*?</section>', text, re.DOTALL)
    assert notes and "crop growth profiles left out: " in _plain(notes.group(0))
    # a table without the columns the chart draws from
    pd.DataFrame({"district": ["West"], "date": ["2024-06-15"]}).to_parquet(paths.district_crop_timeseries)
    data = load_run(copy)
    assert data.profiles is None and "lacks the columns ['class_id', 'index', 'mean'" in data.notes[0]


# ------------------------------------------------------------------ in a real browser


@pytest.fixture(scope="session")
def chromium() -> str:
    """A headless Chromium: Debian's ``chromium`` package, installed here when missing and possible."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        pytest.skip("no chromium, and it cannot be installed here (needs apt-get as root): "
                    "`sudo apt-get install chromium` to run this test")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run([apt, "update"], env=env, capture_output=True, timeout=300)
        res = subprocess.run([apt, "install", "-y", "--no-install-recommends", "chromium"], env=env,
                             capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        pytest.skip("installing chromium with apt-get timed out (no package mirror reachable?)")
    found = shutil.which("chromium")
    if res.returncode != 0 or not found:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["?"]
        pytest.skip(f"chromium is missing and `apt-get install chromium` failed ({tail[0]})")
    return found


def _chromium(exe: str, *args: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--force-color-profile=srgb", "--window-size=1400,1000", *args],
                          capture_output=True, text=True, timeout=120)


def test_report_in_headless_chromium_shows_crop_polygons_and_every_district(run, chromium, tmp_path):  # type: ignore[no-untyped-def]
    _, rd = run
    url = (rd / "report.html").as_uri()
    shot = tmp_path / "shot.png"
    res = _chromium(chromium, f"--screenshot={shot}", url)
    assert shot.is_file(), res.stderr[-2000:]
    img = _pixels(shot)
    assert img.shape[:2] == (1000, 1400)
    map_area = img[60:, :840]  # the map is the page's first section, on the left; the legend is to its right
    import geopandas as gpd

    fields = gpd.read_parquet(rd / "fields.parquet")
    visible = fields.groupby("crop:name").area_ha.max()
    visible = visible[visible >= 0.3].index.tolist()  # at least ~250 screen pixels at this zoom
    assert len(visible) >= 2
    for crop in visible:
        assert _count(map_area, RGB[crop]) > 30, f"no {crop} polygon ({RGB[crop]}) on the rendered map"
    absent = [c for c in CLASSES.classes if c.crop and c.name not in set(fields["crop:name"])]
    for c in absent:  # a colour of no field is not on the map
        assert _count(map_area, c.rgb) == 0, c.name
    dom = _chromium(chromium, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    rows = _parse(dom.stdout).rows
    districts = sorted(pd.read_csv(rd / "district_areas.csv").district.unique())
    assert sorted(rows) == districts == ["East", "West"]
    assert len(_parse(dom.stdout).records) == len(fields)  # the field data parsed in the browser's DOM too
