"""The restricted-context resolver: real paths inside the roots, every file a VRT references checked the
same way, GDAL virtual file systems and connection strings refused, URLs only by an allowed prefix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rsrag.tools.errors import AccessDeniedError, RasterNotFoundError, RasterOpenError
from rsrag.tools.raster import open_scene
from rsrag.tools.sandbox import Sandbox, sniff_format
from tests.rasters import gradient, write_raster


def _vrt(source: str, relative: bool = False, raw: bool = False, python: bool = False) -> str:
    if raw:
        return (f'<VRTDataset rasterXSize="16" rasterYSize="16"><VRTRasterBand dataType="Byte" band="1" '
                f'subClass="VRTRawRasterBand"><SourceFilename relativetoVRT="{int(relative)}">{source}</SourceFilename>'
                '<ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset><LineOffset>16</LineOffset>'
                '</VRTRasterBand></VRTDataset>')
    pixel = ('<PixelFunctionLanguage>Python</PixelFunctionLanguage><PixelFunctionType>f</PixelFunctionType>'
             '<PixelFunctionCode><![CDATA[def f(*a, **k): pass]]></PixelFunctionCode>') if python else ""
    sub = ' subClass="VRTDerivedRasterBand"' if python else ""
    return (f'<VRTDataset rasterXSize="32" rasterYSize="32"><VRTRasterBand dataType="Byte" band="1"{sub}>{pixel}'
            f'<SimpleSource><SourceFilename relativeToVRT="{int(relative)}">{source}</SourceFilename>'
            '<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>')


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    inside, outside = tmp_path / "allowed", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    return {
        "root": inside, "outside": outside,
        "image": write_raster(inside / "scene.tif", gradient(1, 32, 32)),
        "secret": write_raster(outside / "secret.tif", gradient(1, 32, 32)),
    }


def test_a_plain_image_inside_resolves_to_its_real_path(tree: dict[str, Path]) -> None:
    box = Sandbox.of([tree["root"]])
    link = tree["root"] / "alias.tif"
    link.symlink_to(tree["image"])
    assert box.resolve(link) == str(tree["image"].resolve())


def test_a_symlink_out_of_the_root_is_refused(tree: dict[str, Path]) -> None:
    link = tree["root"] / "escape.tif"
    link.symlink_to(tree["secret"])
    with pytest.raises(AccessDeniedError, match="outside the image folders"):
        Sandbox.of([tree["root"]]).resolve(link)
    with pytest.raises(AccessDeniedError, match="outside the image folders"):
        Sandbox.of([tree["root"]]).resolve(tree["root"] / ".." / "outside" / "secret.tif")


def test_a_raw_vrt_band_over_etc_passwd_is_refused(tree: dict[str, Path]) -> None:
    vrt = tree["root"] / "passwd.vrt"
    vrt.write_text(_vrt("/etc/passwd", raw=True))
    with pytest.raises(AccessDeniedError, match="passwd.vrt references '/etc/passwd'"):
        Sandbox.of([tree["root"]]).resolve(vrt)


def test_a_vrt_over_an_outside_image_is_refused_even_when_called_tif(tree: dict[str, Path]) -> None:
    disguised = tree["root"] / "innocent.tif"  # GDAL goes by content: this opens as a VRT
    disguised.write_text(_vrt(str(tree["secret"])))
    assert sniff_format(disguised) == "VRT"
    with pytest.raises(AccessDeniedError, match="outside the image folders"):
        Sandbox.of([tree["root"]]).resolve(disguised)


def test_a_vrt_over_an_inside_image_opens(tree: dict[str, Path]) -> None:
    vrt = tree["root"] / "ok.vrt"
    vrt.write_text(_vrt("scene.tif", relative=True))
    nested = tree["root"] / "nested.vrt"
    nested.write_text(_vrt("ok.vrt", relative=True))
    box = Sandbox.of([tree["root"]])
    for target in (vrt, nested):
        with open_scene(box.resolve(target)) as scene:
            assert (scene.width, scene.height) == (32, 32)
    assert Sandbox.of([tree["root"]], allow_vrt=False) is not None
    with pytest.raises(AccessDeniedError, match="VRTs are not accepted"):
        Sandbox.of([tree["root"]], allow_vrt=False).resolve(vrt)


def test_a_nested_vrt_reaching_out_is_refused(tree: dict[str, Path]) -> None:
    (tree["root"] / "inner.vrt").write_text(_vrt(str(tree["secret"])))
    outer = tree["root"] / "outer.vrt"
    outer.write_text(_vrt("inner.vrt", relative=True))
    with pytest.raises(AccessDeniedError, match="outer.vrt references 'inner.vrt'"):
        Sandbox.of([tree["root"]]).resolve(outer)


def test_a_self_referencing_vrt_and_a_python_pixel_function_are_refused(tree: dict[str, Path]) -> None:
    loop = tree["root"] / "loop.vrt"
    loop.write_text(_vrt("loop.vrt", relative=True))
    with pytest.raises(RasterOpenError, match="references itself"):
        Sandbox.of([tree["root"]]).resolve(loop)
    code = tree["root"] / "code.vrt"
    code.write_text(_vrt("scene.tif", relative=True, python=True))
    with pytest.raises(AccessDeniedError, match="Python pixel functions"):
        Sandbox.of([tree["root"]]).resolve(code)


def test_a_symlinked_sidecar_pointing_out_is_refused(tree: dict[str, Path]) -> None:
    (tree["root"] / "scene.tif.ovr").symlink_to(tree["secret"])
    with pytest.raises(AccessDeniedError, match="sidecar scene.tif.ovr"):
        Sandbox.of([tree["root"]]).resolve(tree["image"])


@pytest.mark.parametrize("target", [
    "/vsizip/{root}/a.zip/scene.tif", "/vsicurl/https://example.org/a.tif", "/VSIMEM/x", "NETCDF:\"{root}/a.nc\":v",
    "GPKG:{root}/a.gpkg:layer", "PG:dbname=x", "vrt://{root}/scene.tif?bands=1", "WMS:https://example.org/wms",
    "DERIVED_SUBDATASET:LOGAMPLITUDE:{root}/scene.tif",
])
def test_virtual_file_systems_and_connection_strings_are_refused(tree: dict[str, Path], target: str) -> None:
    with pytest.raises(AccessDeniedError, match="not allowed here"):
        Sandbox.of([tree["root"]]).resolve(target.format(root=tree["root"]))


def test_urls_only_by_an_allowed_prefix(tree: dict[str, Path]) -> None:
    box = Sandbox.of([tree["root"]], url_prefixes=["https://data.example.org/scenes/"])
    assert box.resolve("https://data.example.org/scenes/a.tif") == "https://data.example.org/scenes/a.tif"
    for url in ("https://data.example.org/other/a.tif", "https://data.example.org.evil.net/scenes/a.tif",
                "s3://bucket/a.tif"):
        with pytest.raises(AccessDeniedError, match="is not allowed here"):
            box.resolve(url)


def test_other_formats_and_bad_paths(tree: dict[str, Path]) -> None:
    box = Sandbox.of([tree["root"]])
    wms = tree["root"] / "service.xml"
    wms.write_text("<GDAL_WMS><Service name='WMS'><ServerUrl>https://example.org</ServerUrl></Service></GDAL_WMS>")
    with pytest.raises(AccessDeniedError, match=r"not a format opened here \(XML <GDAL_WMS>\)"):
        box.resolve(wms)
    (tree["root"] / "notes.txt").write_text("hello")
    with pytest.raises(AccessDeniedError, match="not a format opened here"):
        box.resolve(tree["root"] / "notes.txt")
    with pytest.raises(RasterNotFoundError, match="no such file"):
        box.resolve(tree["root"] / "missing.tif")
    with pytest.raises(RasterOpenError, match="is a directory"):
        box.resolve(tree["root"])
    (tree["root"] / "a").symlink_to(tree["root"] / "b")
    (tree["root"] / "b").symlink_to(tree["root"] / "a")
    with pytest.raises(RasterOpenError, match="loops back on itself"):
        box.resolve(tree["root"] / "a")
    with pytest.raises(AccessDeniedError, match="empty path"):
        box.resolve("  ")


def test_without_roots_any_local_image_but_the_other_rules_hold(tree: dict[str, Path]) -> None:
    box = Sandbox.of(None)
    assert box.resolve(tree["secret"]) == str(tree["secret"].resolve())
    with pytest.raises(AccessDeniedError):
        box.resolve("/vsicurl/https://example.org/a.tif")
    assert os.fspath(box.check_inside(tree["secret"])) == str(tree["secret"].resolve())
