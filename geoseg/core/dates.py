"""Which date each band of a multi-date stack belongs to, and which dates each pixel saw. Pure: names and arrays.

A season stack holds its dates one after another, each date with the same bands in the same
order ("date-major"): ``2024-06-15 B04, 2024-06-15 B08, 2024-07-01 B04, ...``. Models that know
the dates (:mod:`geoseg.ml.temporal`, or a channel-stacked U-Net trained with date drop-out) read
the stack through a :class:`DateLayout`: per pixel, a date counts as **observed** when every one
of its bands holds data, and a missing date is data for the model (a validity plane per date),
not a reason to drop the pixel.

Band names say the date in one of these forms, followed by a space or ``_`` and the band:

``2024-06-15 B04`` / ``20240615_B04``
    A day (what ``geoseg synth`` and per-date stacks write).
``2024-07_B04``
    A month (``geoseg composite``'s monthly periods): its 15th.
``sowing_B04``
    A period label (``geoseg composite --periods sowing:2024-06-01..2024-07-15,...``): the
    middle of the period, when the stack's ``GEOSEG_PERIODS`` tag gives its start and end.

Day numbers, the model's notion of time, count days from 1 January of the first date's year,
so a kharif season gives the same numbers every year and a rabi season that crosses the new
year keeps counting (400 is early February of the next year).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

from geoseg.errors import DateLayoutError

__all__ = ["DateLayout", "date_layout", "split_band_name", "HOW_TO_NAME"]

#: What the error messages tell a user whose band names carry no dates.
HOW_TO_NAME = ("name each band '<date> <band>' in date order, e.g. '2024-06-15 B04' (or '20240615_B04', "
               "'2024-07_B04' for a monthly composite): `geoseg composite` and `geoseg synth` write such names, "
               "and `gdal_edit.py -mo` or rasterio's `set_band_description` set them on an existing stack")

_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[ _](.+)$")
_COMPACT = re.compile(r"^(\d{4})(\d{2})(\d{2})[ _](.+)$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})[ _](.+)$")
_LABEL = re.compile(r"^([A-Za-z0-9][A-Za-z0-9.\-]*)[ _](.+)$")


def split_band_name(name: str, periods: Mapping[str, tuple[date, date]] | None = None) -> tuple[str, date, str] | None:
    """``(date label, date, band)`` for a band name that carries a date, else None (see the module notes).

    Examples
    --------
    >>> split_band_name("2024-06-15 NIR")
    ('2024-06-15', datetime.date(2024, 6, 15), 'NIR')
    >>> split_band_name("2024-07_B04")
    ('2024-07', datetime.date(2024, 7, 15), 'B04')
    >>> split_band_name("sowing_B04", {"sowing": (date(2024, 6, 1), date(2024, 7, 15))})
    ('sowing', datetime.date(2024, 6, 23), 'B04')
    >>> split_band_name("B04") is None, split_band_name("2024-13-01 B04") is None
    (True, True)
    """
    name = name.strip()
    for pattern in (_DAY, _COMPACT):
        m = pattern.match(name)
        if m:
            day = _day(int(m[1]), int(m[2]), int(m[3]))
            return (name[: m.start(4) - 1], day, m[4].strip()) if day else None
    m = _MONTH.match(name)
    if m:
        day = _day(int(m[1]), int(m[2]), 15)
        return (f"{m[1]}-{m[2]}", day, m[3].strip()) if day else None
    m = _LABEL.match(name)
    if m and periods and m[1] in periods:
        start, end = periods[m[1]]
        return m[1], start + timedelta(days=(end - start).days // 2), m[2].strip()
    return None


def _day(y: int, m: int, d: int) -> date | None:
    try:
        return date(y, m, d)
    except ValueError:
        return None


@dataclass(frozen=True)
class DateLayout:
    """The dates of a date-major stack and the bands each date holds.

    Examples
    --------
    >>> lay = DateLayout((date(2024, 6, 15), date(2024, 7, 1)), ("RED", "NIR"))
    >>> lay.n_dates, lay.n_bands, lay.days().tolist()
    (2, 2, [166.0, 182.0])
    >>> v = np.array([[[True, False]], [[True, True]], [[True, True]], [[True, True]]])  # 4 bands, 1 x 2 px
    >>> lay.observed(v).tolist()  # the first date lacks its RED band at the second pixel
    [[[True, False]], [[True, True]]]
    >>> lay.band_valid(lay.observed(v)).astype(int).tolist()
    [[[1, 0]], [[1, 0]], [[1, 1]], [[1, 1]]]
    """

    dates: tuple[date, ...]
    bands: tuple[str, ...]

    @property
    def n_dates(self) -> int:
        return len(self.dates)

    @property
    def n_bands(self) -> int:
        return len(self.bands)

    def days(self) -> np.ndarray:
        """Day numbers (float32, one per date): days since 1 January of the first date's year."""
        origin = date(self.dates[0].year, 1, 1)
        return np.array([(d - origin).days for d in self.dates], np.float32)

    def observed(self, band_valid: np.ndarray) -> np.ndarray:
        """Which dates each pixel saw: ``band_valid`` (..., T*C, H, W) -> (..., T, H, W), a date
        observed where all its bands hold data."""
        t, c = self.n_dates, self.n_bands
        lead, rest = band_valid.shape[:-3], band_valid.shape[-2:]
        if band_valid.shape[-3] != t * c:
            raise ValueError(f"{band_valid.shape[-3]} band masks for a layout of {t} dates x {c} bands")
        return band_valid.reshape(*lead, t, c, *rest).all(axis=-3)

    def band_valid(self, observed: np.ndarray) -> np.ndarray:
        """Each stack band's mask from its date's: (..., T, H, W) -> (..., T*C, H, W)."""
        return np.repeat(observed, self.n_bands, axis=-3)

    def names(self) -> list[str]:
        """Band names in the ``'<date> <band>'`` form, date-major."""
        return [f"{d.isoformat()} {b}" for d in self.dates for b in self.bands]

    def to_dict(self) -> dict[str, list[str]]:
        return {"dates": [d.isoformat() for d in self.dates], "bands": list(self.bands)}


def date_layout(names: Sequence[str | None], periods: Mapping[str, tuple[date, date]] | None = None,
                source: str = "the stack") -> DateLayout:
    """The :class:`DateLayout` a stack's band names describe (see the module notes for the forms).

    Parameters
    ----------
    names : sequence of str or None
        The stack's band names (descriptions), in band order.
    periods : mapping of label -> (start, end), optional
        Period labels a composite used (its ``GEOSEG_PERIODS`` tag), for names such as ``sowing_B04``.
    source : str
        The file, for error messages.

    Raises
    ------
    DateLayoutError
        A band name carries no date, the dates are out of order or interleaved, or the dates do
        not all hold the same bands in the same order; the message says how to name bands.

    Examples
    --------
    >>> date_layout(["2024-06-15 RED", "2024-06-15 NIR", "2024-07-01 RED", "2024-07-01 NIR"]).to_dict()
    {'dates': ['2024-06-15', '2024-07-01'], 'bands': ['RED', 'NIR']}
    >>> date_layout(["2024-07-01 RED", "2024-06-15 RED"], source="s.tif")
    Traceback (most recent call last):
    ...
    geoseg.errors.DateLayoutError: s.tif: dates out of order: band 2 ('2024-06-15 RED') comes after 2024-07-01; expected dates in increasing order - re-stack the bands date by date, oldest first
    """
    if not names:
        raise DateLayoutError(f"{source}: has no bands; expected a multi-date stack - {HOW_TO_NAME}")
    labels: list[str] = []
    days: list[date] = []
    groups: list[list[str]] = []
    for i, raw in enumerate(names, start=1):
        parsed = split_band_name(raw, periods) if raw else None
        if parsed is None:
            shown = f"band {i} is named {raw!r}" if raw else f"band {i} has no name"
            raise DateLayoutError(
                f"{source}: {shown}, which carries no date; a model that reads the dates needs to know which date "
                f"each band belongs to - {HOW_TO_NAME}"
            )
        label, day, band = parsed
        if labels and label == labels[-1]:
            groups[-1].append(band)
            continue
        if label in labels:
            raise DateLayoutError(
                f"{source}: band {i} ({raw!r}) returns to date {label} after other dates; expected each date's "
                f"bands together (date-major: all bands of the first date, then all of the second...) - re-stack "
                f"the bands date by date"
            )
        if days and day <= days[-1]:
            raise DateLayoutError(
                f"{source}: dates out of order: band {i} ({raw!r}) comes after {days[-1].isoformat()}; expected "
                f"dates in increasing order - re-stack the bands date by date, oldest first"
            )
        labels.append(label)
        days.append(day)
        groups.append([band])
    first = groups[0]
    for label, g in zip(labels, groups):
        if g != first:
            raise DateLayoutError(
                f"{source}: date {label} holds bands {g}, but {labels[0]} holds {first}; expected the same bands in "
                f"the same order on every date - re-stack so that each date has every band"
            )
    if len(set(first)) != len(first):
        raise DateLayoutError(f"{source}: date {labels[0]} names a band twice ({first}); expected each band once "
                              f"per date - {HOW_TO_NAME}")
    return DateLayout(tuple(days), tuple(first))
