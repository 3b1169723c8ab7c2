"""Property tests (hypothesis) for the spec parsers and the record loaders: whatever the text, a parser
either returns a usable value or raises an rsrag error of a user-fixable kind, never anything else; what
parses round-trips; boxes inside a scene stay inside it; every record gets exactly one verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rsrag.tools.errors import ErrorKind, RsragError, WindowError, error_kind
from rsrag.tools.region import PixelBox
from rsrag.tools.tiling import parse_tiling

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FIXABLE = {ErrorKind.ARGUMENT, ErrorKind.INPUT, ErrorKind.CONFIG}
spec_text = st.one_of(
    st.text(max_size=40),
    st.builds(lambda a, b, c: f"{a}:{b}{c}", st.sampled_from(["grid", "vit", "cc", "split", "pyramid", "x", ""]),
              st.text(alphabet="0123456789.-:=,abcdeflopsrvtz", max_size=12),
              st.sampled_from(["", ":overlap=0.5", ":scales=1,2", ":overlap=", ":scales=", ":top=3", ":q=1"])),
)


def _fixable(exc: BaseException) -> None:
    assert isinstance(exc, RsragError), f"{type(exc).__name__}: {exc}"
    assert error_kind(exc) in FIXABLE and str(exc).strip() and "\n" not in str(exc)


@SETTINGS
@given(spec_text)
def test_tiling_specs_parse_or_fail_cleanly(spec: str) -> None:
    try:
        scheme = parse_tiling(spec)
    except Exception as exc:  # noqa: BLE001 - the property is about which exceptions can come out
        _fixable(exc)
        return
    assert parse_tiling(scheme.id).id == scheme.id  # the canonical id parses back to itself


@SETTINGS
@given(size=st.integers(16, 1024), overlap=st.sampled_from([0.0, 0.25, 0.5]), width=st.integers(1, 3000),
       height=st.integers(1, 3000))
def test_grid_patches_cover_only_the_image(size: int, overlap: float, width: int, height: int) -> None:
    scheme = parse_tiling(f"grid:{size}:overlap={overlap}")
    try:
        patches = list(scheme.patches(width, height))
    except RsragError as exc:
        _fixable(exc)
        assert min(width, height) < size or "over the cap" in str(exc)
        return
    assert patches and len(patches) == scheme.count(width, height)
    for patch in patches:
        box = patch.box
        assert 0 <= box.x0 < box.x1 <= width and 0 <= box.y0 < box.y1 <= height


@SETTINGS
@given(st.one_of(st.text(max_size=40), st.builds(lambda p, r: f"{p}{r}", st.sampled_from(
    ["rsrag-lit", "rsrag-lit:", "remoteclip:", "georsclip:", "hf-hub:", "local-dir:", "ViT-B-32:", ""]),
    st.text(max_size=20))))
def test_encoder_specs_parse_or_fail_cleanly(spec: str) -> None:
    from rsrag.tools.encoders.spec import check_spec

    try:
        parsed = check_spec(spec)
    except Exception as exc:  # noqa: BLE001
        _fixable(exc)
        return
    assert parsed is not None


@SETTINGS
@given(st.one_of(st.text(max_size=40), st.builds(lambda k, r: f"{k}:{r}", st.sampled_from(
    ["rule", "openai", "transformers", "ollama", ""]), st.text(max_size=30))))
def test_vlm_specs_load_as_settings_or_fail_cleanly(spec: str) -> None:
    from rsrag.agent.settings import load_settings

    try:
        loaded = load_settings(overrides={"vlm.spec": spec})
    except Exception as exc:  # noqa: BLE001
        _fixable(exc)
        assert "vlm.spec" in str(exc)
        return
    assert loaded.vlm.spec == spec.strip() and loaded.vlm.spec.split(":")[0] in ("rule", "openai", "transformers")


@SETTINGS
@given(st.builds(lambda m, q: f"transformers:{m}{q}", st.text(min_size=1, max_size=20),
                 st.text(alphabet="?&=abcdefghijklmnopqrstuvwxyz_0123456789", max_size=30)))
def test_transformers_specs_parse_or_fail_cleanly(spec: str) -> None:
    from rsrag.agent.models.vlm.transformers_chat import parse_spec

    try:
        model, options = parse_spec(spec)
    except Exception as exc:  # noqa: BLE001
        _fixable(exc)
        return
    assert model and isinstance(options, dict)


coordinate = st.integers(-10_000, 10_000)


@SETTINGS
@given(coordinate, coordinate, coordinate, coordinate, st.integers(1, 4000), st.integers(1, 4000))
def test_boxes_are_valid_and_clipping_stays_inside(x0: int, y0: int, x1: int, y1: int, width: int, height: int) -> None:
    try:
        box = PixelBox(x0=x0, y0=y0, x1=x1, y1=y1)
    except WindowError:
        assert x1 <= x0 or y1 <= y0
        return
    assert box.width > 0 and box.height > 0
    fitted = box.fit_within(512)
    assert max(fitted) <= 512 and min(fitted) >= 1
    clipped_x = (max(x0, 0), min(x1, width))
    clipped_y = (max(y0, 0), min(y1, height))
    inside = clipped_x[0] < clipped_x[1] and clipped_y[0] < clipped_y[1]
    if inside:
        clip = PixelBox(x0=clipped_x[0], y0=clipped_y[0], x1=clipped_x[1], y1=clipped_y[1])
        assert 0 <= clip.x0 < clip.x1 <= width and 0 <= clip.y0 < clip.y1 <= height


class _Scene:  # resolve_box uses only check_box (and the name in its messages) for pixel boxes
    width, height = 1000, 800
    path = Path("scene.tif")

    def check_box(self, box: PixelBox) -> PixelBox:
        from rsrag.tools.raster import Scene

        return Scene.check_box(self, box)  # type: ignore[arg-type]


@SETTINGS
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32) | st.integers(-10**6, 10**6), max_size=6))
def test_tool_boxes_from_the_model_are_checked(values: list) -> None:
    from rsrag.agent.toolkit import resolve_box

    try:
        box = resolve_box(_Scene(), {}, None, values, None, None)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001
        if type(exc).__name__ == "ValidationError":
            return  # pydantic refuses a non-number: the tool node reports it as an argument error
        _fixable(exc)
        return
    assert 0 <= box.x0 < box.x1 <= 1000 and 0 <= box.y0 < box.y1 <= 800


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_box_numbers_are_argument_errors(bad: float) -> None:
    from rsrag.agent.toolkit import resolve_box

    with pytest.raises(WindowError):
        resolve_box(_Scene(), {}, None, [0, 0, bad, 10], None, None)  # type: ignore[arg-type]


json_value = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                          max_leaves=8)
record = st.dictionaries(st.sampled_from(["id", "name", "category", "description", "lon", "lat", "crs", "geometry",
                                          "location", "kind", "images", "source", "history"]), json_value, max_size=7)


@SETTINGS
@given(st.lists(record | json_value, max_size=6))
def test_jsonl_records_each_get_one_verdict(tmp_path_factory: pytest.TempPathFactory, rows: list) -> None:
    from rsrag.tools.knowledge import read_records

    path = tmp_path_factory.mktemp("kb") / "kb.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    results = list(read_records(path))
    lines = [n for n, r in enumerate(rows, 1) if json.dumps(r).strip()]
    assert [r.line for r in results] == lines
    for result in results:
        assert (result.entry is None) != (result.issue is None)
        if result.entry is not None:
            assert isinstance(result.entry.id, str) and isinstance(result.entry.name, str)
        else:
            assert str(result.issue).startswith(f"{path}:{result.line}")


@SETTINGS
@given(st.text(alphabet='ab,"\n\r x1', max_size=120))
def test_csv_text_never_breaks_the_reader(tmp_path_factory: pytest.TempPathFactory, body: str) -> None:
    from rsrag.tools.knowledge import read_records

    path = tmp_path_factory.mktemp("kb") / "kb.csv"
    path.write_text("id,name,description\n" + body, encoding="utf-8")
    seen = set()
    for result in read_records(path):
        assert result.line >= 2 and result.line not in seen
        seen.add(result.line)
        assert (result.entry is None) != (result.issue is None)
        if result.entry is not None:
            assert "\n" not in result.entry.id or '"' in body  # a multi-line id only from a quoted field


@SETTINGS
@given(st.dictionaries(st.sampled_from(["type", "coordinates", "geometries"]),
                       json_value | st.sampled_from(["Polygon", "Point", "LineString", "MultiPolygon"]), max_size=3))
def test_geometries_are_validated_never_crash(geometry: dict) -> None:
    from rsrag.tools.knowledge.ingest import _Bad, check_geometry

    try:
        check_geometry(geometry)
    except _Bad as bad:
        assert bad.field == "geometry" and bad.message
