"""A workflow whose scene is a season: STAC items -> composite -> mask -> district hectares, in one run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from affine import Affine

from geoseg.classes import default_classes
from geoseg.errors import ConfigError
from geoseg.ml.model import ModelCard, build_from_card, save_checkpoint
from geoseg.workflow.config import load_workflow
from geoseg.workflow.run import run_workflow
from tests.season_products import scl_of, write_item
from tests.workflow_helpers import write_districts, write_workflow

T10 = Affine(10, 0, 600000.0, 0, -10, 3400000.0)
H = W = 96
NAMES = [f"{m}_{b}" for m in ("2024-06", "2024-07") for b in ("B02", "B03", "B04", "B08")]


def _items(folder: Path) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    for i, day in enumerate(("2024-06-05", "2024-06-20", "2024-07-05", "2024-07-20")):
        refl = {b: np.round(0.1 + 0.08 * np.sin(xx / (9 + k) + i) * np.cos(yy / (13 - k)), 4)
                for k, b in enumerate(("B02", "B03", "B04", "B08"))}
        clouds = np.zeros((H, W), bool)
        clouds[rng.integers(0, H - 16):, :][:16, :16] = True
        write_item(folder, f"S2A_43RFQ_{day.replace('-', '')}_0_L2A", day, "EPSG:32643", T10, refl, scl_of(clouds),
                   platform="sentinel-2a" if i % 2 else "sentinel-2b")


def _model(path: Path, names: list[str]) -> None:
    torch.manual_seed(0)
    card = ModelCard(arch="unet", encoder="resnet18", in_channels=len(names), classes=default_classes(),
                     arch_kwargs={"encoder_depth": 4, "decoder_channels": [128, 64, 32, 16]}, bands=names,
                     band_mean=[1000.0] * len(names), band_std=[600.0] * len(names), tile=64, overlap=16)
    save_checkpoint(path, build_from_card(card), card)


def _season(**extra):
    return {"name": "kharif", "season": {"sources": ["items"], "bands": ["B02", "B03", "B04", "B08"],
                                         "start": "2024-06-01", "end": "2024-08-01", "periods": "monthly", **extra}}


def test_run_from_stac_items_to_district_hectares(tmp_path):
    _items(tmp_path / "items")
    _model(tmp_path / "model", NAMES)
    write_districts(tmp_path / "d.gpkg", 600480.0, (600000.0, 3399040.0, 600960.0, 3400000.0))
    wf = write_workflow(tmp_path / "wf.yaml", scenes=[_season()], districts={"path": "d.gpkg", "name_field": "district"},
                        outputs={"fields": ["parquet"], "district_areas": True, "report": False,
                                 "exclude_classes": []})
    res = run_workflow(load_workflow(wf))
    composite = Path(res.outputs["season_kharif"])
    assert composite == res.run_dir / "inputs" / "kharif.tif"
    with rasterio.open(composite) as src:
        assert list(src.descriptions) == NAMES and src.transform == T10 and src.shape == (H, W)
    with rasterio.open(res.outputs["mask"]) as m:
        assert m.transform == T10 and m.shape == (H, W)
        mask = m.read(1)
    table = pd.read_csv(res.outputs["district_areas_csv"])
    assert set(table["district"]) == {"West", "East"}
    # every mapped pixel (100 m2 here, UTM at 30.7 N: ground area within 0.1 %) is in the table once
    mapped = int((mask != 255).sum())
    assert abs(table["area_ha"].sum() - mapped * 0.01) / (mapped * 0.01) < 2e-3
    assert "composite" in res.timings
    fields = pd.read_parquet(res.outputs["fields_parquet"])
    assert set(fields["determination:datetime"].astype(str).str[:10]) == {"2024-07-20"}  # the last look
    # resumed or repeated: the spec's composite is made again for a new run, same pixels
    res2 = run_workflow(load_workflow(wf))
    with rasterio.open(res2.outputs["season_kharif"]) as a, rasterio.open(composite) as b:
        assert (a.read() == b.read()).all()


def test_season_spec_checked_before_the_run(tmp_path):
    _items(tmp_path / "items")
    _model(tmp_path / "model", NAMES)
    bad = write_workflow(tmp_path / "a.yaml", scenes=[_season(periods="semimonthly")])
    with pytest.raises(ConfigError, match=r"scenes\[0\].season.*would have 16 bands .* expects 8"):
        load_workflow(bad)
    bad = write_workflow(tmp_path / "b.yaml", scenes=[{"name": "k", "season": {"sources": ["nope"], "bands": ["B04"],
                                                                                  "start": "2024-06-01", "end": "2024-08-01"}}])
    with pytest.raises(ConfigError, match=r"key 'scenes\[0\].season.sources\[0\]'.*does not exist"):
        load_workflow(bad)
    bad = write_workflow(tmp_path / "c.yaml", scenes=[_season(start="June")])
    with pytest.raises(ConfigError, match=r"scenes\[0\].season.*YYYY-MM-DD"):
        load_workflow(bad)
    bad = write_workflow(tmp_path / "d.yaml", scenes=[{"season": _season()["season"]}])
    with pytest.raises(ConfigError, match=r"name.*is required for a season"):
        load_workflow(bad)


def test_resumed_run_keeps_a_composite_of_the_same_spec(tmp_path):
    """The composite stage alone (threads, no cluster): a complete composite of the same season spec is
    kept on resume; a changed spec composites again."""
    from dataclasses import replace

    from geoseg.rundir import RunPaths
    from geoseg.workflow.stages import composite_seasons

    _items(tmp_path / "items")
    _model(tmp_path / "model", NAMES)
    cfg = load_workflow(write_workflow(tmp_path / "wf.yaml", scenes=[_season()]))
    paths = RunPaths(tmp_path / "run")
    said: list[str] = []
    composite_seasons(cfg, paths, None, said.append)
    first = paths.season_scene("kharif").stat().st_mtime_ns
    composite_seasons(cfg, paths, None, said.append)
    assert paths.season_scene("kharif").stat().st_mtime_ns == first and "kept" in said[-1]
    changed = replace(cfg, scenes=(replace(cfg.scenes[0], season=replace(cfg.scenes[0].season, dilate=1)),))
    composite_seasons(changed, paths, None, said.append)
    assert paths.season_scene("kharif").stat().st_mtime_ns != first and "compositing" in said[-1]
