"""Band names -> date layout: every naming form, the observed-date rule against a plain numpy
computation, and a clear error for each bad stack."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.core.dates import DateLayout, date_layout, split_band_name
from geoseg.errors import DateLayoutError


@pytest.mark.parametrize(("name", "expected"), [
    ("2024-06-15 NIR", ("2024-06-15", date(2024, 6, 15), "NIR")),
    ("2024-06-15_B04", ("2024-06-15", date(2024, 6, 15), "B04")),
    ("20240615_B8A", ("20240615", date(2024, 6, 15), "B8A")),
    ("2024-07_B04", ("2024-07", date(2024, 7, 15), "B04")),
    ("2024-02 red edge", ("2024-02", date(2024, 2, 15), "red edge")),
    ("B04", None),
    ("2024-13-01 B04", None),
    ("2024-02-30 B04", None),
    ("sowing_B04", None),  # a period label without the periods
])
def test_band_name_forms(name: str, expected: tuple | None) -> None:
    assert split_band_name(name) == expected


def test_period_labels_take_the_middle_of_the_period() -> None:
    periods = {"sowing": (date(2024, 6, 1), date(2024, 7, 1)), "peak": (date(2024, 8, 1), date(2024, 9, 16))}
    lay = date_layout(["sowing_B04", "sowing_B08", "peak_B04", "peak_B08"], periods)
    assert lay.dates == (date(2024, 6, 16), date(2024, 8, 24))  # 30 and 46 days long
    assert lay.bands == ("B04", "B08")


def test_a_rabi_season_keeps_counting_days_across_the_new_year() -> None:
    lay = date_layout(["2024-11-20 B04", "2025-01-05 B04", "2025-03-01 B04"])
    assert lay.days().tolist() == [324.0, 370.0, 425.0]  # from 1 January 2024


@settings(max_examples=60, deadline=None)
@given(t=st.integers(1, 6), c=st.integers(1, 4), h=st.integers(1, 5), w=st.integers(1, 5), data=st.data())
def test_observed_dates_equal_a_plain_loop(t: int, c: int, h: int, w: int, data: st.DataObject) -> None:
    """A date is observed at a pixel exactly when each of its bands is valid there; band_valid inverts it."""
    first = date(2024, 6, 1)
    lay = DateLayout(tuple(first + timedelta(days=16 * i) for i in range(t)), tuple(f"b{j}" for j in range(c)))
    bits = data.draw(st.lists(st.booleans(), min_size=t * c * h * w, max_size=t * c * h * w))
    band_valid = np.array(bits, bool).reshape(t * c, h, w)
    got = lay.observed(band_valid)
    for i in range(t):
        for r in range(h):
            for q in range(w):
                assert got[i, r, q] == all(band_valid[i * c + j, r, q] for j in range(c))
    again = lay.band_valid(got)
    assert again.shape == band_valid.shape
    assert (again <= band_valid).all()  # a date partly valid counts as missing for all its bands
    assert (lay.observed(again) == got).all()
    assert date_layout(lay.names()) == lay


@pytest.mark.parametrize(("names", "says"), [
    (["B02", "B03", "B04"], "band 1 is named 'B02', which carries no date"),
    ([None, None], "band 1 has no name"),
    (["2024-07-01 B04", "2024-06-15 B04"], "dates out of order"),
    (["2024-06-15 B04", "2024-06-15 B04"], "names a band twice"),
    (["2024-06-15 B04", "2024-07-01 B04", "2024-06-15 B08"], "returns to date 2024-06-15"),
    (["2024-06-15 B04", "2024-06-15 B08", "2024-07-01 B04"], "holds bands ['B04']"),
    ([], "has no bands"),
])
def test_bad_stacks_say_how_to_name_bands(names: list, says: str) -> None:
    with pytest.raises(DateLayoutError) as e:
        date_layout(names, source="season.tif")
    msg = str(e.value)
    assert msg.startswith("season.tif: ") and says in msg, msg
    assert "\n" not in msg
