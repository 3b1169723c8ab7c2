"""Sources: what a user types becomes one normalised source and the path GDAL opens; remote failures become
clear errors of the error tree (the network itself is exercised in tests/integration/test_remote_http.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rsrag.tools import sources
from rsrag.tools.errors import (
    RangeRequestsUnsupportedError,
    RasterNotFoundError,
    RasterOpenError,
    RemoteAccessError,
    RemoteTimeoutError,
    RemoteUnavailableError,
    SourceError,
)
from rsrag.tools.sources import is_remote, normalise_source, open_options, parse_source, source_key


@pytest.mark.parametrize(("text", "kind", "normal", "gdal"), [
    ("https://Data.Example.ORG/a/scene.tif", "http", "https://data.example.org/a/scene.tif",
     "/vsicurl/https://data.example.org/a/scene.tif"),
    ("HTTP://host:8080/x.tif?sig=abc#frag", "http", "http://host:8080/x.tif?sig=abc", "/vsicurl/http://host:8080/x.tif?sig=abc"),
    ("s3://bucket/dir/scene.tif", "s3", "s3://bucket/dir/scene.tif", "/vsis3/bucket/dir/scene.tif"),
    ("gs://bucket/scene.tif", "gs", "gs://bucket/scene.tif", "/vsigs/bucket/scene.tif"),
    ("az://container/blob/scene.tif", "az", "az://container/blob/scene.tif", "/vsiaz/container/blob/scene.tif"),
    ("/vsis3/bucket/scene.tif", "s3", "s3://bucket/scene.tif", "/vsis3/bucket/scene.tif"),
    ("/vsicurl/https://host/scene.tif", "http", "https://host/scene.tif", "/vsicurl/https://host/scene.tif"),
])
def test_remote_sources_map_to_gdal_virtual_file_systems(text: str, kind: str, normal: str, gdal: str) -> None:
    src = parse_source(text)
    assert (src.kind, src.text, src.gdal_path) == (kind, normal, gdal)
    assert src.is_remote and is_remote(text) and normalise_source(text) == normal and src.local_path is None


def test_a_url_folded_by_pathlib_is_still_a_url() -> None:
    # typer and many callers wrap arguments in Path, which folds "https://" into "https:/"
    folded = Path("https://host/dir/scene.tif")
    assert str(folded) == "https:/host/dir/scene.tif"
    assert parse_source(folded).text == "https://host/dir/scene.tif"


def test_a_local_file_that_looks_folded_stays_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "https:").mkdir()
    (tmp_path / "https:" / "x.tif").write_bytes(b"II*\x00")
    monkeypatch.chdir(tmp_path)
    src = parse_source("https:/x.tif")
    assert src.kind == "local" and src.local_path == tmp_path / "https:" / "x.tif"


def test_local_paths_are_absolute_and_file_urls_are_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    src = parse_source("scenes/../a.tif")
    assert src.kind == "local" and src.text == str(tmp_path / "a.tif") and src.gdal_path == src.text
    assert not is_remote("a.tif")
    assert parse_source(f"file://{tmp_path}/b.png").local_path == tmp_path / "b.png"
    assert parse_source("~/x.tif").text == str(Path.home() / "x.tif")
    assert open_options(src) == {}


def test_source_key_follows_links(tmp_path: Path) -> None:
    target = tmp_path / "real.tif"
    target.write_bytes(b"II*\x00")
    link = tmp_path / "link.tif"
    link.symlink_to(target)
    assert source_key(link) == source_key(target) == str(target.resolve())
    assert source_key("HTTPS://Host/x.tif") == "https://host/x.tif"


@pytest.mark.parametrize(("text", "hint"), [
    ("", "empty"), ("ftp://host/scene.tif", "ftp://"), ("s3://bucket", "s3://bucket/path"),
    ("s3://bucket/folder/", "s3://bucket/path"), ("https:///scene.tif", "no host"), ("az://container", "container/path"),
])
def test_malformed_sources_are_refused_with_the_fix(text: str, hint: str) -> None:
    with pytest.raises(SourceError) as info:
        parse_source(text)
    assert hint in str(info.value) and isinstance(info.value, ValueError)
    assert is_remote(text) or text == ""  # a malformed URL is never taken for a local path by allow-lists


def test_remote_open_options_disable_listing_and_side_cars() -> None:
    tif = open_options(parse_source("https://host/a/scene.TIF"))
    assert tif == {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif"}
    signed = open_options(parse_source("https://host/object?X-Amz-Signature=1"))  # no suffix: any name allowed
    assert signed == {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}


def test_remote_defaults_never_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from rasterio._env import del_gdal_config
    from rasterio.env import get_gdal_config

    del_gdal_config("GDAL_HTTP_TIMEOUT")  # an earlier test in this process may have applied the defaults
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "7")
    monkeypatch.setattr(sources, "_defaults_applied", False)
    sources.apply_remote_defaults()
    assert str(get_gdal_config("GDAL_HTTP_MAX_RETRY")) == sources.REMOTE_DEFAULTS["GDAL_HTTP_MAX_RETRY"]
    assert get_gdal_config("GDAL_HTTP_TIMEOUT") in (None, 7, "7")  # not set over the user's variable
    assert sources._timeout() == 7.0


@pytest.mark.parametrize(("status", "error", "builtin", "words"), [
    (404, RasterNotFoundError, FileNotFoundError, "no such object"),
    (410, RasterNotFoundError, FileNotFoundError, "no such object"),
    (401, RemoteAccessError, PermissionError, "GDAL_HTTP_HEADERS"),
    (403, RemoteAccessError, PermissionError, "GDAL_HTTP_HEADERS"),
    (503, RemoteUnavailableError, ConnectionError, "retry later"),
    (504, RemoteTimeoutError, TimeoutError, "timed out"),
    (416, RasterOpenError, OSError, "empty"),
])
def test_http_statuses_become_clear_errors(status: int, error: type, builtin: type, words: str) -> None:
    exc = sources.status_error("https://host/x.tif", "http", status, "Reason")
    assert type(exc) is error and isinstance(exc, builtin)
    assert str(exc).startswith("https://host/x.tif: ") and words in str(exc) and "\n" not in str(exc)


def test_credentials_hint_names_the_store() -> None:
    assert "AWS_ACCESS_KEY_ID" in str(sources.status_error("s3://b/k.tif", "s3", 403))
    assert "GOOGLE_APPLICATION_CREDENTIALS" in str(sources.status_error("gs://b/k.tif", "gs", 403))
    assert "AZURE_STORAGE_ACCOUNT" in str(sources.status_error("az://c/k.tif", "az", 403))


@pytest.mark.parametrize(("message", "error"), [
    ("HTTP response code: 404", RasterNotFoundError),
    ("HTTP response code: 403", RemoteAccessError),
    ("Range downloading not supported by this server!", RangeRequestsUnsupportedError),
    ("Operation timed out after 30001 milliseconds", RemoteTimeoutError),
    ("Could not resolve host: nowhere.invalid", RemoteUnavailableError),
    ("Failed to connect to 127.0.0.1 port 9: Connection refused", RemoteUnavailableError),
    ("AWS_SECRET_ACCESS_KEY and AWS_NO_SIGN_REQUEST configuration options not defined", RemoteAccessError),
])
def test_gdal_network_messages_become_clear_errors(message: str, error: type) -> None:
    assert type(sources.gdal_error(parse_source("s3://bucket/scene.tif"), message)) is error


def test_other_gdal_messages_are_not_taken_for_network_errors() -> None:
    assert sources.gdal_error(parse_source("https://host/x.tif"), "TIFFReadDirectory: not a TIFF file") is None


def test_remote_path_reads_like_a_path() -> None:
    path = sources.RemotePath("https://host/a/scene.tif?sig=1")
    assert (path.name, path.suffix, path.stem) == ("scene.tif", ".tif", "scene")
    assert str(path) == "https://host/a/scene.tif?sig=1" and os.fspath(str(path)) == str(path)
