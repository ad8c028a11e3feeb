"""geoseg composite on the synthetic region's products (geoseg synth --products), season 2021-22.

The season crosses 25 January 2022, so its products come with and without the -1000 offset;
the composite from every layout must equal the median of the true surfaces
(:meth:`SynthProducts.surface`) over the looks each product's own SCL calls clear.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio

from geoseg.ops.composite import clear_path_for, composite_season
from geoseg.synth import synthesize

SIZE = 160


@pytest.fixture(scope="module")
def region(tmp_path_factory):
    out = tmp_path_factory.mktemp("s") / "region"
    return synthesize(out, height=SIZE, width=SIZE, seed=5, season_year=2021, products="stac,cdse",
                      acquisitions=[f"2022-01-{d:02d}" for d in (5, 15, 20, 30)] + ["2022-02-04", "2022-02-09"])


def _expected(region, start: str, end: str, band: str) -> tuple[np.ndarray, np.ndarray]:
    looks = []
    for a in region.products.acquisitions:
        if a.sensor == "sentinel-2" and start <= a.date < end:
            with rasterio.open(a.bands["stac"]["SCL"]) as src:
                scl = np.repeat(np.repeat(src.read(1), 2, 0), 2, 1)[:SIZE, :SIZE]
            clear = ~np.isin(scl, [0, 1, 3, 8, 9, 10])
            # what the product delivers, through its own scale and offset, in float64 as any reader would
            dn = np.rint(region.products.surface(a, band).astype(np.float64) * 1e4) + a.offset
            refl = dn * 1e-4 + (-0.1 if a.offset else 0.0)
            looks.append(np.where(clear, refl, np.nan))
    stack = np.stack(looks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(stack, axis=0)
    return np.where(np.isfinite(med), np.clip(np.rint(med * 1e4), 1, None), 0), np.isfinite(stack).sum(0)


def test_products_across_the_2022_offset_change(region, tmp_path):
    baselines = {a.date: a.baseline for a in region.products.acquisitions}
    assert baselines["2022-01-20"] < "04.00" <= baselines["2022-01-30"]  # both sides of the change
    outs = {}
    for layout in ("stac", "safe", "cdse"):
        out = tmp_path / f"{layout}.tif"
        composite_season(out, [region.out_dir / "products" / layout], bands="B02,B04,B08",
                         periods="jan:2022-01-01/2022-02-01,feb:2022-02-01/2022-03-01")
        with rasterio.open(out) as src:
            outs[layout] = src.read()
            assert src.transform == region.transform and src.shape == (SIZE, SIZE)
    assert (outs["stac"] == outs["safe"]).all() and (outs["stac"] == outs["cdse"]).all()
    with rasterio.open(clear_path_for(tmp_path / "stac.tif")) as src:
        clear = src.read()
    for p, (a, b) in enumerate((("2022-01-01", "2022-02-01"), ("2022-02-01", "2022-03-01"))):
        for i, band in enumerate(("B02", "B04", "B08")):
            exp, n = _expected(region, a, b, band)
            np.testing.assert_array_equal(outs["stac"][p * 3 + i], exp, err_msg=f"{a} {band}")
        np.testing.assert_array_equal(clear[p], n)
