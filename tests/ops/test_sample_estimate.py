"""Reference samples drawn from a mask and areas estimated from them: exact strata, uniform draws,
the estimate against the truth, every bad input with its clear error, and the two commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from affine import Affine
from click.testing import CliRunner
from rasterio.crs import CRS

from geoseg.cli.main import cli as root
from geoseg.core.geodesy import row_pixel_areas
from geoseg.errors import EstimateError
from geoseg.ops.areas import district_areas_raster
from geoseg.ops.estimate import (
    AREA_COLUMNS,
    DISTRICT_COLUMNS,
    MATRIX_COLUMNS,
    estimate_file,
    estimate_tables,
    read_design,
)
from geoseg.ops.sample import POINT_COLUMNS, draw_sample, sample_file
from geoseg.synth import synthesize

CLASSES = ["background", "rice", "wheat", "sugarcane", "cotton", "maize", "fallow"]


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory):
    return synthesize(tmp_path_factory.mktemp("region"), height=384, width=384, seed=5)


@pytest.fixture(scope="module")
def noisy_map(region, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The truth with errors a model makes: a block of rice mapped as wheat, some wheat as background."""
    out = tmp_path_factory.mktemp("map") / "mask.tif"
    with rasterio.open(region.labels) as src:
        a = src.read(1)
        profile = {**src.profile, "driver": "GTiff"}
        tags = src.tags()
    rows = slice(0, 200)
    a[rows][a[rows] == 1] = 2
    wheat = np.argwhere(a == 2)[::5]
    a[wheat[:, 0], wheat[:, 1]] = 0
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(a, 1)
        dst.update_tags(**tags)
    return out


def _label_from_truth(points: pd.DataFrame, labels: Path) -> pd.DataFrame:
    with rasterio.open(labels) as src:
        r, c = rasterio.transform.rowcol(src.transform, points.x.to_numpy(), points.y.to_numpy())
        truth = src.read(1)[np.asarray(r), np.asarray(c)]
    out = points.copy()
    out["reference"] = [CLASSES[v] for v in truth]
    return out


def test_strata_are_the_exact_district_areas_and_points_land_in_their_stratum(region, noisy_map):
    s = draw_sample(noisy_map, districts=region.districts, name_field="district", by_district=True,
                    minimum=6, target_se=0.05, seed=2)
    table = district_areas_raster(noisy_map, region.districts, "district")
    got = {(m["district"], m["class_id"]): m["area_ha"] for m in s.design["mapped"]}
    for r in table.itertuples():
        assert got.get((r.district, r.class_id), 0.0) == pytest.approx(r.area_ha, rel=1e-9, abs=1e-9)
    strata = {st["name"]: st for st in s.design["strata"]}
    assert sum(st["area_ha"] for st in strata.values()) == pytest.approx(table.area_ha.sum(), rel=1e-12)
    assert list(s.points.columns) == list(POINT_COLUMNS)
    assert "class_id" not in s.points.columns  # the interpretation stays blind
    p = s.points.merge(s.key, on="point_id")
    with rasterio.open(noisy_map) as src:
        r, c = rasterio.transform.rowcol(src.transform, p.x.to_numpy(), p.y.to_numpy())
        assert (src.read(1)[np.asarray(r), np.asarray(c)] == p.class_id.to_numpy()).all()
    d = gpd.read_file(region.districts).to_crs(region.crs)
    geom = dict(zip(d.district, d.geometry, strict=True))
    assert all(shapely.contains_xy(geom[n], x, y) for n, x, y in zip(p.district, p.x, p.y, strict=True))
    assert (p.groupby("stratum_name").size().to_dict()
            == {name: st["n"] for name, st in strata.items()})
    assert min(st["n"] for st in strata.values()) >= 6
    assert sorted(s.points.point_id) == list(range(1, len(s.points) + 1))
    # ids are shuffled: their order says nothing about the stratum
    assert not (np.diff(p.sort_values("point_id").stratum.to_numpy()) >= 0).all()


def test_the_draws_depend_on_the_seed_alone(region, noisy_map):
    a = draw_sample(noisy_map, districts=region.districts, name_field="district", minimum=5, seed=4,
                    workers=1)
    b = draw_sample(noisy_map, districts=region.districts, name_field="district", minimum=5, seed=4,
                    workers=2)
    pd.testing.assert_frame_equal(a.points, b.points)
    pd.testing.assert_frame_equal(a.key, b.key)
    c = draw_sample(noisy_map, districts=region.districts, name_field="district", minimum=5, seed=5)
    assert not np.allclose(a.points.x.to_numpy(), c.points.x.to_numpy())


def test_points_are_uniform_over_ground_area(tmp_path):
    """On a geographic grid from 0 to 80 degrees north, rows differ sixfold in ground area; the
    points fall in each row in proportion to its area, not its pixel count."""
    t = Affine(1.0, 0, 70.0, 0, -1.0, 80.0)
    mask = np.ones((80, 4), np.uint8)
    path = tmp_path / "geo.tif"
    with rasterio.open(path, "w", driver="GTiff", height=80, width=4, count=1, dtype="uint8",
                       crs=CRS.from_epsg(4326), transform=t, nodata=255) as dst:
        dst.write(mask, 1)
    classes = tmp_path / "classes.yaml"
    classes.write_text("classes:\n- {id: 0, name: background, color: '#000000', crop: false}\n"
                       "- {id: 1, name: rice, color: '#00ff00'}\n")
    s = draw_sample(path, classes=classes, minimum=20000, seed=1)
    rows = np.floor(80.0 - s.points.y.to_numpy()).astype(int)
    counts = np.bincount(rows, minlength=80)
    expected = row_pixel_areas(t, CRS.from_epsg(4326), 80)
    expected = expected / expected.sum() * len(rows)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 125  # 79 degrees of freedom: p ~ 0.001
    # a pixel-uniform draw would be far off: the top rows hold a sixth of the bottom rows' area
    assert counts[:10].sum() < 0.4 * counts[-10:].sum()


def test_the_users_own_strata(region, noisy_map, tmp_path):
    """A raster of zones on the mask's grid stratifies instead of the map classes; each point still
    carries its map class, and the estimate of a perfect map is its own map."""
    with rasterio.open(region.labels) as src:
        profile = {**src.profile, "driver": "GTiff", "nodata": 255}
        h, w = src.shape
    zones = np.zeros((h, w), np.uint8)
    zones[:, w // 2 :] = 1
    zones[:40, :40] = 255  # no stratum: never sampled
    zpath = tmp_path / "zones.tif"
    with rasterio.open(zpath, "w", **profile) as dst:
        dst.write(zones, 1)
    s = draw_sample(region.labels, districts=region.districts, name_field="district", strata=zpath, minimum=30,
                    target_se=0.05, seed=1)
    assert s.design["strata_by"] == "strata" and [st["name"] for st in s.design["strata"]] == ["stratum 0", "stratum 1"]
    p = s.points.merge(s.key, on="point_id")
    with rasterio.open(region.labels) as src:
        r, c = rasterio.transform.rowcol(src.transform, p.x.to_numpy(), p.y.to_numpy())
        r, c = np.asarray(r), np.asarray(c)
        assert (src.read(1)[r, c] == p.class_id.to_numpy()).all()
    assert (zones[r, c] == p.stratum.to_numpy()).all() and not ((r < 40) & (c < 40)).any()
    # the strata's areas add up to the mapped areas outside the hole
    mapped = sum(m["area_ha"] for m in s.design["mapped"])
    assert sum(st["area_ha"] for st in s.design["strata"]) == pytest.approx(mapped, rel=1e-12)
    ids = s.points.point_id.to_numpy()
    est = estimate_tables(s.design, s.key, ids, s.key.set_index("point_id").loc[ids, "class_id"].to_numpy())
    # strata that are not the map classes: a perfect map is all correct, but each class's area is
    # estimated from the share of the points in each stratum (Stehman 2014), so it has an error
    assert est.summary["overall_accuracy"] == 1.0
    assert (est.areas.users_accuracy.dropna() == 1.0).all() and (est.areas.producers_accuracy.dropna() == 1.0).all()
    assert est.areas.estimated_ha.sum() == pytest.approx(mapped)
    a = est.areas[est.areas.points_reference > 0]  # a class no point fell on is estimated at 0 ha, SE 0
    assert (abs(a.estimated_ha - a.mapped_ha) < 4 * a.se_ha + 1e-6).all() and (a.se_ha > 0).all()
    wrong = tmp_path / "wrong.tif"
    with rasterio.open(wrong, "w", **{**profile, "width": w - 1}) as dst:
        dst.write(zones[:, :-1], 1)
    with pytest.raises(EstimateError, match=r"wrong.tif: the strata raster is not on the mask's grid"):
        draw_sample(noisy_map, strata=wrong)


def _run_folder(root: Path, mask: Path, districts: Path) -> Path:
    """A finished run's folder, as far as sample and estimate read it."""
    run = root / "runs" / "r1"
    run.mkdir(parents=True)
    shutil.copy(mask, run / "mask.tif")
    if Path(f"{mask}.aux.xml").exists():
        shutil.copy(f"{mask}.aux.xml", run / "mask.tif.aux.xml")
    wf = root / "wf.yaml"
    wf.write_text(f"name: r\ndistricts:\n  path: {districts}\n  name_field: district\n")
    (run / "manifest.json").write_text(json.dumps({
        "run_id": "r1", "name": "r", "status": "done", "workflow": str(wf), "workflow_text": wf.read_text(),
        "outputs": {"mask": "mask.tif"}}))
    return run


def test_estimate_recovers_the_truth_the_map_missed(region, noisy_map, tmp_path):
    run = _run_folder(tmp_path, noisy_map, region.districts)
    folder, s = sample_file(run, minimum=60, target_se=0.01, seed=3)
    assert folder == run / "sample"
    assert {p.name for p in folder.iterdir()} == {"design.json", "points.csv", "points.gpkg", "key.csv"}
    pts = pd.read_csv(folder / "points.csv")
    gpkg = gpd.read_file(folder / "points.gpkg")
    assert len(gpkg) == len(pts) == s.design["points"] and gpkg.crs == CRS.from_user_input(region.crs)
    labelled = _label_from_truth(pts, region.labels)
    labelled.to_csv(tmp_path / "labelled.csv", index=False)
    _, est = estimate_file(run, tmp_path / "labelled.csv")
    a = est.areas.set_index("crop")
    truth = district_areas_raster(region.labels, region.districts, "district").groupby("crop").area_ha.sum()
    mapped = a.mapped_ha
    # the map moved the rice of 200 rows to wheat and a fifth of the wheat to background (so wheat's
    # mapped area is right by accident): the estimate finds rice and background again
    assert mapped["rice"] < 0.9 * truth["rice"] and mapped["background"] > 1.1 * truth["background"]
    for crop in ("rice", "background"):
        assert abs(a.estimated_ha[crop] - truth[crop]) < 0.5 * abs(mapped[crop] - truth[crop])
    for crop in ("rice", "wheat", "background"):  # within its interval, give or take two SEs
        assert a.ci_low_ha[crop] - 2 * a.se_ha[crop] <= truth[crop] <= a.ci_high_ha[crop] + 2 * a.se_ha[crop]
    assert a.estimated_ha.sum() == pytest.approx(mapped.sum())
    assert a.producers_accuracy["rice"] < 0.95 and a.users_accuracy["rice"] == pytest.approx(1.0)
    # the files, with their columns; per district areas add up to the class totals
    for name, cols in (("areas", AREA_COLUMNS), ("districts", DISTRICT_COLUMNS), ("matrix", MATRIX_COLUMNS)):
        csv = pd.read_csv(run / f"estimate_{name}.csv")
        assert tuple(csv.columns) == cols
        pd.testing.assert_frame_equal(pd.read_parquet(run / f"estimate_{name}.parquet"), csv, check_dtype=False)
    dist = pd.read_csv(run / "estimate_districts.csv")
    np.testing.assert_allclose(dist.groupby("crop").estimated_ha.sum()[a.index], a.estimated_ha, rtol=1e-9)
    summary = json.loads((run / "estimate.json").read_text())
    assert summary["points_labelled"] == len(pts) and summary["points_unlabelled"] == 0
    assert summary["overall_ci"][0] < summary["overall_accuracy"] < summary["overall_ci"][1]
    matrix = pd.read_csv(run / "estimate_matrix.csv")
    assert matrix.points.sum() == len(pts) and matrix.proportion.sum() == pytest.approx(1.0)


def test_a_perfect_map_estimates_its_own_areas(region, tmp_path):
    folder, _ = sample_file(region.labels, tmp_path / "s", districts=region.districts, name_field="district",
                            minimum=5, target_se=0.05)
    pts = pd.read_csv(folder / "points.csv")
    _label_from_truth(pts, region.labels).to_csv(tmp_path / "l.csv", index=False)
    _, est = estimate_file(folder / "design.json", tmp_path / "l.csv")
    np.testing.assert_allclose(est.areas.estimated_ha, est.areas.mapped_ha, rtol=1e-12)
    assert (est.areas.se_ha == 0).all() and est.summary["overall_accuracy"] == 1.0
    assert (folder / "estimate_areas.csv").exists()


# --------------------------------------------------------------------------------------
# bad input
@pytest.fixture()
def drawn(region, noisy_map, tmp_path):
    folder, _ = sample_file(noisy_map, tmp_path / "s", districts=region.districts, name_field="district",
                            minimum=4, target_se=0.1)
    pts = _label_from_truth(pd.read_csv(folder / "points.csv"), region.labels)
    return folder, pts, tmp_path


def test_unknown_reference_classes_are_named(drawn):
    folder, pts, tmp = drawn
    pts.loc[0, "reference"] = "paddy"
    pts.to_csv(tmp / "l.csv", index=False)
    with pytest.raises(EstimateError, match=r"reference classes \['paddy'\] in 'reference' are not in the "
                                            r"design's class table; expected one of \['background', 'rice'"):
        estimate_file(folder / "design.json", tmp / "l.csv")


def test_points_outside_the_design_are_named(drawn):
    folder, pts, tmp = drawn
    extra = pts.iloc[:1].copy()
    extra["point_id"] = 99999
    pd.concat([pts, extra]).to_csv(tmp / "l.csv", index=False)
    with pytest.raises(EstimateError, match=r"1 point\(s\) are not in the design \(point ids \[99999\]\)"):
        estimate_file(folder / "design.json", tmp / "l.csv")


def test_a_stratum_left_with_one_labelled_point_is_named(drawn):
    folder, pts, tmp = drawn
    key = pd.read_csv(folder / "key.csv")
    maize = key.point_id[key.crop == "maize"].to_numpy()
    pts.loc[pts.point_id.isin(maize[1:]), "reference"] = ""
    pts.to_csv(tmp / "l.csv", index=False)
    with pytest.raises(EstimateError, match=r"fewer than two labelled points: maize \(1 point\); a stratum's "
                                            r"variance needs at least two"):
        estimate_file(folder / "design.json", tmp / "l.csv")


def test_unlabelled_points_are_left_out_and_said(drawn):
    folder, pts, tmp = drawn
    pts.loc[pts.index[:3], "reference"] = np.nan
    pts.to_csv(tmp / "l.csv", index=False)
    _, est = estimate_file(folder / "design.json", tmp / "l.csv")
    assert est.summary["points_unlabelled"] == 3
    assert est.notes == [f"3 of the design's {len(pts)} points have no reference class and are left out"]


def test_a_design_that_does_not_match_the_run(region, noisy_map, tmp_path):
    run = _run_folder(tmp_path, region.labels, region.districts)
    sample_file(noisy_map, run / "sample", districts=region.districts, name_field="district", minimum=4,
                target_se=0.1)
    pts = _label_from_truth(pd.read_csv(run / "sample" / "points.csv"), region.labels)
    pts.to_csv(tmp_path / "l.csv", index=False)
    with pytest.raises(EstimateError, match=r"the design does not match the run"):
        estimate_file(run, tmp_path / "l.csv")


def test_other_bad_inputs(region, noisy_map, drawn):
    folder, pts, tmp = drawn
    with pytest.raises(EstimateError, match=r"holds a sample already .* pass --overwrite"):
        sample_file(noisy_map, folder, districts=region.districts, name_field="district")
    pts.rename(columns={"reference": "crop"}).to_csv(tmp / "l.csv", index=False)
    with pytest.raises(EstimateError, match=r"no column 'reference'; its columns are \['point_id'"):
        estimate_file(folder / "design.json", tmp / "l.csv")
    (tmp / "not.json").write_text('{"format": "something"}')
    with pytest.raises(EstimateError, match=r"not a sample design"):
        read_design(tmp / "not.json")
    with pytest.raises(EstimateError, match=r"a budget of 3 points for 7 strata"):
        draw_sample(noisy_map, budget=3)
    with pytest.raises(EstimateError, match=r"strata by district need the district boundaries"):
        draw_sample(noisy_map, by_district=True)
    with pytest.raises(EstimateError, match=r"give the folder to write the sample to \(--out DIR\)"):
        sample_file(noisy_map)


def test_the_commands(region, noisy_map, tmp_path):
    run = _run_folder(tmp_path, noisy_map, region.districts)
    runner = CliRunner()
    r = runner.invoke(root, ["sample", str(run), "--min-per-stratum", "8", "--target-se", "0.05", "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert "points in 7 strata" in r.output and "rice" in r.output
    pts = _label_from_truth(pd.read_csv(run / "sample" / "points.csv"), region.labels)
    pts.to_csv(tmp_path / "l.csv", index=False)
    r = runner.invoke(root, ["estimate", str(run), str(tmp_path / "l.csv"), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["points_labelled"] == len(pts)
    est = pd.read_csv(run / "estimate_areas.csv")
    assert [row["estimated_ha"] for row in out["areas"]] == pytest.approx(est.estimated_ha.tolist())
    r = runner.invoke(root, ["estimate", str(run), str(tmp_path / "l.csv")])
    assert r.exit_code == 1
    assert r.output.strip().splitlines()[-1].startswith("Error: ") and "Traceback" not in r.output
    assert "an estimate exists already; pass --overwrite" in r.output


def test_strata_sized_for_their_users_accuracy(region, noisy_map):
    s = draw_sample(noisy_map, target_ua_se=0.05, users_accuracy={"rice": 0.95, "default": 0.8}, minimum=10)
    n = {st["name"]: st["n"] for st in s.design["strata"]}
    assert n["rice"] == 20 and n["wheat"] == 65 and n["background"] == 65  # U(1-U)/0.05^2 + 1
    capped = draw_sample(noisy_map, target_ua_se=0.05, minimum=10, budget=200)
    assert capped.design["points"] == 200
