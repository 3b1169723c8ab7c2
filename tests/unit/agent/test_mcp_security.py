"""The MCP server's boundaries: `--images DIR` cannot be escaped through a VRT, a symlink, /vsi paths or
connection strings; arguments are checked, never cut; threads about outside images cannot be continued."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import numpy as np
import pytest
from mcp import Client

from rsrag.agent.interfaces.api import Analyst
from rsrag.agent.interfaces.mcp import build_mcp_server
from rsrag.agent.settings import Settings, load_settings
from tests.rasters import write_raster

TINY = "rsrag-tiny-test:random"


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    inside, outside = tmp_path / "images", tmp_path / "private"
    inside.mkdir()
    outside.mkdir()
    rng = np.random.default_rng(11)
    scene = write_raster(inside / "scene.tif", rng.integers(0, 255, (3, 128, 128), dtype=np.uint8))
    secret = write_raster(outside / "secret.tif", rng.integers(0, 255, (3, 128, 128), dtype=np.uint8))
    (inside / "passwd.vrt").write_text(
        '<VRTDataset rasterXSize="16" rasterYSize="4"><VRTRasterBand dataType="Byte" band="1" '
        'subClass="VRTRawRasterBand"><SourceFilename relativetoVRT="0">/etc/passwd</SourceFilename>'
        '<ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset><LineOffset>16</LineOffset></VRTRasterBand></VRTDataset>')
    (inside / "other.vrt").write_text(
        f'<VRTDataset rasterXSize="128" rasterYSize="128"><VRTRasterBand dataType="Byte" band="1"><SimpleSource>'
        f'<SourceFilename relativeToVRT="0">{secret}</SourceFilename><SourceBand>1</SourceBand></SimpleSource>'
        '</VRTRasterBand></VRTDataset>')
    (inside / "link.tif").symlink_to(secret)
    return {"inside": inside, "scene": scene, "secret": secret}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    from tests.tiny_encoder import register_tiny_model_config

    register_tiny_model_config()
    return load_settings(overrides={"home": tmp_path / "home", "encoder.spec": TINY, "store.tiling": "grid:64"})


@pytest.fixture
def analyst(settings: Settings) -> Iterator[Analyst]:
    with settings.analyst() as a:
        yield a


def call(analyst: Analyst, settings: Settings, roots: list[Path], tool: str, args: dict) -> tuple[bool, str]:
    async def main() -> tuple[bool, str]:
        async with Client(build_mcp_server(analyst, settings, image_roots=roots)) as client:
            result = await client.call_tool(tool, args)
            text = " ".join(getattr(c, "text", "") for c in result.content)
            return bool(result.is_error), text
    return anyio.run(main)


@pytest.mark.parametrize("name", ["passwd.vrt", "other.vrt", "link.tif", "../private/secret.tif"])
def test_the_image_folder_cannot_be_escaped(analyst: Analyst, settings: Settings, folders: dict[str, Path],
                                            name: str) -> None:
    for tool, extra in (("zoom", {"bbox": [0, 0, 8, 4]}), ("scene_info", {}), ("search_patches", {"phrases": ["x"]})):
        error, text = call(analyst, settings, [folders["inside"]], tool, {"image": str(folders["inside"] / name), **extra})
        assert error and "bad argument:" in text and ("outside the image folders" in text or "refused" in text), text
        assert "root:" not in text  # nothing of /etc/passwd came back


@pytest.mark.parametrize("image", ["/vsicurl/https://example.org/a.tif", "NETCDF:\"x.nc\":v", "https://example.org/a.tif"])
def test_virtual_paths_and_urls_are_refused(analyst: Analyst, settings: Settings, folders: dict[str, Path],
                                            image: str) -> None:
    error, text = call(analyst, settings, [folders["inside"]], "scene_info", {"image": image})
    assert error and "not allowed here" in text


@pytest.mark.parametrize(("tool", "args", "text"), [
    ("search_patches", {"phrases": ["x"], "top_k": 0}, "top_k must be a whole number from 1 to 100, got 0"),
    ("search_patches", {"phrases": ["x"], "top_k": -5}, "got -5"),
    ("search_patches", {"phrases": ["x"], "top_k": 10_000}, "got 10000"),
    ("search_patches", {"phrases": [f"thing {n}" for n in range(50)]}, "at most 4 phrases per search, got 50"),
    ("search_patches", {"phrases": []}, "1 to 4 short noun phrases"),
    ("search_patches", {"phrases": ["  "]}, "non-empty text"),
    ("zoom", {"bbox": [0, 0, 10]}, "four finite numbers"),
    ("zoom", {"max_side": 3}, "max_side must be a whole number from 16 to 4096"),
])
def test_arguments_are_checked_not_cut(analyst: Analyst, settings: Settings, folders: dict[str, Path], tool: str,
                                       args: dict, text: str) -> None:
    error, said = call(analyst, settings, [folders["inside"]], tool, {"image": str(folders["scene"]), **args})
    assert error and text in said, said


def test_inside_images_still_work_and_outside_threads_cannot_be_continued(
        analyst: Analyst, settings: Settings, folders: dict[str, Path]) -> None:
    error, _ = call(analyst, settings, [folders["inside"]], "search_patches",
                    {"image": str(folders["scene"]), "phrases": ["roofs"], "top_k": 3})
    assert not error
    analyst.ask(folders["secret"], "what is here?", thread_id="private-1")  # asked elsewhere, e.g. the CLI
    error, text = call(analyst, settings, [folders["inside"]], "ask",
                       {"image": str(folders["scene"]), "question": "and here?", "thread_id": "private-1"})
    assert error and "cannot be continued on this server" in text
    error, text = call(analyst, settings, [folders["inside"]], "ask",
                       {"image": str(folders["scene"]), "question": "what is here?", "thread_id": "mine-1"})
    assert not error, text
