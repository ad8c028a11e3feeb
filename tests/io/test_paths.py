"""Dataset paths: URLs and GDAL virtual paths stay whole, local files are Paths, outputs are local or standard output."""

from __future__ import annotations

from pathlib import Path

import pytest

from geoseg.errors import ConfigError, GeosegError
from geoseg.io.paths import STDOUT, check_overwrite, dataset_path, is_remote, local_path, output_path, refuse_stdout


@pytest.mark.parametrize(
    "given, expected",
    [
        ("https://example.com/a/mask.tif", "/vsicurl/https://example.com/a/mask.tif"),
        ("http://127.0.0.1:8000/mask.tif?x=1", "/vsicurl/http://127.0.0.1:8000/mask.tif?x=1"),
        ("ftp://host/m.tif", "/vsicurl/ftp://host/m.tif"),
        ("s3://bucket/key/mask.tif", "/vsis3/bucket/key/mask.tif"),
        ("S3://bucket/k.tif", "/vsis3/bucket/k.tif"),
        ("gs://bucket/k.tif", "/vsigs/bucket/k.tif"),
        ("az://container/k.tif", "/vsiaz/container/k.tif"),
        ("/vsicurl/https://example.com/m.tif", "/vsicurl/https://example.com/m.tif"),
        ("/vsis3/bucket/k.tif", "/vsis3/bucket/k.tif"),
        ("/vsizip/data/a.zip/districts.shp", "/vsizip/data/a.zip/districts.shp"),
    ],
)
def test_remote_and_virtual_paths_stay_whole_strings(given, expected):  # type: ignore[no-untyped-def]
    got = dataset_path(given)
    assert got == expected and isinstance(got, str)
    assert is_remote(given)


@pytest.mark.parametrize("given", ["mask.tif", "runs/a/mask.tif", "/abs/mask.tif", "C:odd.tif", Path("x.tif")])
def test_local_files_are_paths(given):  # type: ignore[no-untyped-def]
    got = dataset_path(given)
    assert got == Path(given) and isinstance(got, Path)
    assert not is_remote(given)


def test_file_urls_are_local_paths():  # type: ignore[no-untyped-def]
    assert dataset_path("file:///data/mask.tif") == Path("/data/mask.tif")
    assert not is_remote("file:///data/mask.tif")


def test_a_scheme_gdal_cannot_read_is_a_clear_error():  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=r"sftp://h/m.tif: GDAL reads no 'sftp://' URLs; .* download it first"):
        dataset_path("sftp://h/m.tif")


@pytest.mark.parametrize("given", ["https://h/models/m", "s3://b/models/m", "/vsis3/b/m", "-"])
def test_local_only_paths_refuse_remote_ones(given):  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=r"the checkpoint directory must be a local path.*download a remote one first") as e:
        local_path(given, "the checkpoint directory")
    assert isinstance(e.value, GeosegError) and isinstance(e.value, ValueError)
    assert local_path("models/m", "the checkpoint directory") == Path("models/m")


def test_outputs_are_local_files_or_standard_output():  # type: ignore[no-untyped-def]
    assert output_path("-") == STDOUT
    assert output_path("/vsistdout/") == STDOUT and output_path("/vsistdout") == STDOUT
    assert output_path("out/areas.csv") == Path("out/areas.csv")
    for bad in ("/vsis3/b/areas.csv", "s3://b/areas.csv", "https://h/areas.csv", "/vsimem/a.csv"):
        with pytest.raises(ConfigError, match=r"writes outputs to local files .* `aws s3 cp`"):
            output_path(bad)


def test_refuse_stdout_says_why_and_what_to_do():  # type: ignore[no-untyped-def]
    refuse_stdout("mask.tif", "a COG", "why", "fix")  # a file passes
    refuse_stdout(None, "a COG", "why", "fix")
    with pytest.raises(ConfigError, match=r"^-: a COG cannot be written to standard output \(why\); write a file "
                                          r"instead, e.g. fix$"):
        refuse_stdout("-", "a COG", "why", "fix")


def test_check_overwrite(tmp_path):  # type: ignore[no-untyped-def]
    f = tmp_path / "a.csv"
    check_overwrite(f, False)  # absent: fine
    f.write_text("x")
    with pytest.raises(ConfigError, match=r"a.csv: the area table already exists; pass --overwrite to replace it"):
        check_overwrite(f, False, "the area table")
    check_overwrite(f, True)
    check_overwrite("-", False)
    check_overwrite(None, False)
