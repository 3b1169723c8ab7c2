"""A short fuzz run of the web API from its route table: every route, random path parameters, query strings
and bodies; the server answers every request with a status below 500, and every error is one line of JSON
naming what is wrong (never a traceback, never a server path)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Route
from starlette.testclient import TestClient

from rsrag.agent.interfaces.web import create_app
from tests.rasters import write_raster
from tests.web_server import tiny_analyst

PARAM = re.compile(r"{(\w+)(?::(\w+))?}")
segment = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/?#%"), min_size=0, max_size=24)
body = st.one_of(st.binary(max_size=300), st.builds(lambda v: json.dumps(v).encode(), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["image", "question", "thread", "x"]), inner, max_size=4), max_leaves=6)))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("fuzz")
    scene = write_raster(root / "scene.tif", np.random.default_rng(4).integers(0, 255, (3, 128, 128), dtype=np.uint8))
    with tiny_analyst(root / "agent", tiling="grid:64") as analyst:
        yield TestClient(create_app(analyst, [scene], upload_dir=root / "up", max_upload_bytes=4096),
                         raise_server_exceptions=False)


def _routes(client: TestClient) -> list[tuple[str, str]]:
    out = []
    for route in client.app.routes:  # type: ignore[attr-defined]
        if isinstance(route, Route):
            for method in sorted(route.methods or {"GET"}):
                if method != "HEAD":
                    out.append((method, route.path))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_route_answers_below_500(client: TestClient, data: st.DataObject) -> None:
    routes = _routes(client)
    assert len(routes) >= 10
    method, template = data.draw(st.sampled_from(routes))

    def fill(match: re.Match[str]) -> str:
        if match.group(2) == "int":
            return str(data.draw(st.integers(-5, 40)))
        from urllib.parse import quote

        return quote(data.draw(segment), safe="") or "x"

    path = PARAM.sub(fill, template)
    query = data.draw(st.dictionaries(st.sampled_from(["name", "x"]), segment, max_size=2))
    kwargs = {"params": query}
    if method == "POST":
        kwargs["content"] = data.draw(body)
    response = client.request(method, path, **kwargs)
    assert response.status_code < 500, (method, path, response.status_code, response.text[:300])
    if response.status_code >= 400 and response.headers.get("content-type", "").startswith("application/json"):
        error = response.json()
        assert isinstance(error.get("error"), str) and "\n" not in error["error"] and "Traceback" not in response.text
        assert str(Path("/tmp")) + "/" not in error["error"]  # no server path in any error
