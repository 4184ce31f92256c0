"""The HTTP service: every endpoint against a real store, in process and once over real uvicorn.

Most tests call the ASGI app in process through httpx's ASGI transport (no
socket); one starts uvicorn on 127.0.0.1 and talks to it over TCP.
"""

import asyncio
import base64
import importlib.util
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from rsembed_store import Store, key_of, resolve
from rsembed_store.cli import main
from rsembed_store.errors import MissingExtraError
from rsembed_store.query.service import ARROW_STREAM, create_app, error_codes

DOCS = Path(__file__).resolve().parents[2] / "docs" / "http.md"
YEAR = {"mode": "year", "year": 2023}
HAS_SEARCH = importlib.util.find_spec("rsembed_store.query.search") is not None
needs_search = pytest.mark.skipif(
    not HAS_SEARCH, reason="rsembed_store/query/search.py (Store.search) is not importable yet"
)


class Client:
    """A synchronous client that sends each request to the ASGI app in process."""

    def __init__(self, app, token=None):
        self.app = app
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def request(self, method, path, *, json=None, content=None, headers=None) -> httpx.Response:
        async def send():
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://rsembed-store") as client:
                return await client.request(method, path, json=json, content=content,
                                            headers={**self.headers, **(headers or {})})

        return asyncio.run(send())

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, json=body, **kw)


def assert_error(res: httpx.Response, status: int, code: str = None, field=...) -> dict:
    """The one error shape: {"error": {"code", "message", "field"}}, with the code's own status."""
    assert res.status_code == status, res.text
    assert res.headers["content-type"].startswith("application/json")
    body = res.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}, body
    err = body["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert err["field"] is None or isinstance(err["field"], str)
    assert error_codes().get(err["code"]) == status, f"code {err['code']!r} does not carry status {status}"
    if code is not None:
        assert err["code"] == code, err
    if field is not ...:
        assert err["field"] == field, err
    return err


def centre(manifest):
    w, s, e, n = manifest["bounds_lonlat"]
    return (w + e) / 2, (s + n) / 2


def point_request(manifest, buffer_m=200, **extra):
    lon, lat = centre(manifest)
    spatial = {"type": "PointBuffer", "lon": lon, "lat": lat, "buffer_m": buffer_m}
    return {"model": "spectral", "spatial": spatial, "temporal": YEAR, **extra}


def wait_for_job(client, job_id, timeout_s=30.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        res = client.get(f"/jobs/{job_id}")
        assert res.status_code == 200, res.text
        job = res.json()
        if job["status"] in ("done", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def ingest_body(manifest, h3_res=8):
    w, s, e, n = manifest["bounds_lonlat"]
    bbox = [w + 0.003, s + 0.003, e - 0.003, n - 0.003]
    return {"model": "spectral", "region": {"bbox": bbox}, "h3_res": h3_res, "windows": [YEAR]}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, small_scene, scene_config):
    """A store with a few H3 cells ingested through POST /ingest (shared by the read-only tests)."""
    store = Store.open(tmp_path_factory.mktemp("svc") / "db", config=scene_config)
    app = create_app(store)
    client = Client(app)
    res = client.post("/ingest", ingest_body(small_scene[1]))
    assert res.status_code == 202, res.text
    job = wait_for_job(client, res.json()["job_id"])
    assert job["status"] == "done", job
    return store, app, client, job


# ---------------------------------------------------------------- reads


def test_health_models_and_stats(store):
    from rsembed_store import __version__
    from rsembed_store.registry import model_info, model_names

    client = Client(create_app(store))
    health = client.get("/health").json()
    assert health == {"ok": True, "version": __version__, "store": store.uri}
    models = client.get("/models").json()["models"]
    assert models == [model_info(name).to_dict() for name in model_names()]
    assert client.get("/stats").json() == json.loads(json.dumps(store.stats()))
    doc = client.get("/openapi.json").json()
    assert {"/health", "/models", "/stats", "/embeddings", "/embeddings/lookup", "/search", "/sql", "/ingest",
            "/jobs/{job_id}"} <= set(doc["paths"])
    assert client.get("/docs").status_code == 200


# ---------------------------------------------------------------- embeddings


def test_embedding_is_computed_on_a_miss_then_cached(tmp_path, small_scene, scene_config):
    store = Store.open(tmp_path / "db", config=scene_config)
    client = Client(create_app(store))
    request = point_request(small_scene[1])
    miss = client.post("/embeddings", {"request": request, "compute": False})
    assert_error(miss, 404, "not_found", "request")
    assert store.spaces() == []

    first = client.post("/embeddings", {"request": request})
    assert first.status_code == 200, first.text
    body = first.json()
    resolved = resolve(request)
    assert body["key"] == resolved.key == key_of(request)
    assert body["cached"] is False and body["model"] == "spectral" and body["revision"] == resolved.revision
    assert len(body["vector"]) == body["dim"] == 44
    assert body["request"] == json.loads(resolved.canonical)
    assert body["grid"] is None and body["compute_s"] > 0 and body["meta"]["n_scenes"] >= 1

    again = client.post("/embeddings", {"request": request}).json()
    assert again["cached"] is True and again["vector"] == body["vector"]
    # the same computation asked as a range shares the entry
    as_range = dict(request, temporal={"mode": "range", "start": "2023-01-01", "end": "2024-01-01"})
    same = client.post("/embeddings", {"request": as_range, "compute": False}).json()
    assert same["key"] == body["key"] and same["cached"] is True
    assert store.count(store.spaces()[0].space) == 1


def test_grid_base64_round_trips_to_the_stored_grid(tmp_path, small_scene, scene_config):
    store = Store.open(tmp_path / "db", config=scene_config)
    client = Client(create_app(store))
    request = point_request(small_scene[1], buffer_m=300, output={"mode": "grid"})
    body = client.post("/embeddings", {"request": request}).json()
    grid = body["grid"]
    assert grid["encoding"] == "base64" and grid["codec"] == "raw" and grid["dtype"] == "float32"
    # the recipe of docs/http.md
    raw = base64.b64decode(grid["data"])
    decoded = np.frombuffer(raw, dtype=np.dtype(grid["dtype"]).newbyteorder("<")).reshape(grid["shape"])
    stored = store.lookup_many([body["key"]])[0]
    assert decoded.shape == stored.grid.shape == (body["dim"], *grid["shape"][1:])
    np.testing.assert_array_equal(decoded, stored.grid)

    as_list = client.post("/embeddings", {"request": request, "grid_encoding": "list"}).json()["grid"]
    values = np.array([[[np.nan if v is None else v for v in row] for row in band] for band in as_list["data"]],
                      dtype=np.float32)
    np.testing.assert_array_equal(values, stored.grid_f32())
    bare = client.post("/embeddings", {"request": request, "grid_encoding": "none"}).json()["grid"]
    assert "data" not in bare and bare["shape"] == grid["shape"]


def test_bad_or_unanswerable_requests_are_4xx_and_store_nothing(tmp_path, small_scene, scene_config):
    store = Store.open(tmp_path / "db", config=scene_config)
    client = Client(create_app(store))
    request = point_request(small_scene[1])
    no_imagery = dict(request, temporal={"mode": "range", "start": "2019-01-01", "end": "2019-03-01"})
    assert "2019" in assert_error(client.post("/embeddings", {"request": no_imagery}), 422, "no_imagery")["message"]
    bad_lat = dict(request, spatial=dict(request["spatial"], lat=95))
    assert "lat" in assert_error(client.post("/embeddings", {"request": bad_lat}), 422, "spec_error",
                                 "request")["message"]
    unknown = dict(request, model="nope")
    assert "spectral" in assert_error(client.post("/embeddings", {"request": unknown}), 404,
                                      "unknown_model")["message"]
    assert_error(client.post("/embeddings", {"request": request, "grid_encoding": "png"}), 422,
                 "validation_error", "grid_encoding")
    assert store.spaces() == [] or store.count(store.spaces()[0].space) == 0


def test_lookup_answers_in_order_with_misses_and_never_computes(ingested, small_scene):
    store, app, client, _ = ingested
    space = store.spaces()[0].space
    rows = store.to_arrow(space, columns=["key", "cell"]).to_pylist()
    before = store.count(space)
    import h3

    cell = h3.int_to_str(rows[1]["cell"])
    hit_request = {"model": "spectral", "spatial": {"type": "H3Cell", "cell": cell}, "temporal": YEAR}
    miss_request = point_request(small_scene[1], buffer_m=123)
    items = [rows[0]["key"], miss_request, hit_request, "0" * 64]
    body = client.post("/embeddings/lookup", {"items": items, "grid_encoding": "none"}).json()
    results = body["results"]
    assert [r and r["key"] for r in results] == [rows[0]["key"], None, key_of(hit_request), None]
    assert results[2]["cached"] is True and len(results[2]["vector"]) == results[2]["dim"]
    assert body["hits"] == 2 and body["misses"] == 2
    assert store.count(space) == before  # nothing computed
    assert_error(client.post("/embeddings/lookup", {"items": ["abc"]}), 422, "validation_error", "items[0]")
    assert_error(client.post("/embeddings/lookup", {"items": [rows[0]["key"], {"model": "spectral"}]}), 422,
                 "spec_error", "items[1]")


def test_lookup_batch_limit(store):
    client = Client(create_app(store, max_batch=3, max_body_bytes=300))
    assert_error(client.post("/embeddings/lookup", {"items": ["0" * 64] * 5}), 413, "too_large")
    err = assert_error(client.post("/embeddings/lookup", {"items": ["0" * 64] * 4}), 413, "too_large", "items")
    assert "3" in err["message"]
    ok = client.post("/embeddings/lookup", {"items": ["0" * 64] * 3}).json()
    assert ok == {"results": [None, None, None], "hits": 0, "misses": 3}


# ---------------------------------------------------------------- ingest jobs


def test_ingest_runs_as_a_background_job(ingested, small_scene):
    store, app, client, job = ingested
    total = job["plan"]["n_requests"]
    assert total > 1 and job["progress"] == {"done": total, "total": total}
    assert job["summary"]["computed"] == total and job["summary"]["failed"] == 0
    assert store.count(store.spaces()[0].space) >= total
    # the same region again is all cache hits
    res = client.post("/ingest", ingest_body(small_scene[1]))
    again = wait_for_job(client, res.json()["job_id"])
    assert again["status"] == "done" and again["summary"]["cached"] == total and again["summary"]["computed"] == 0
    assert_error(client.get("/jobs/" + "f" * 32), 404, "not_found", "job_id")


def test_ingest_refuses_bad_input_before_any_job(store):
    app = create_app(store, max_ingest_requests=50)
    client = Client(app)
    body = {"model": "spectral", "region": {"bbox": [11.0, 46.0, 11.01, 46.01]}, "h3_res": 9, "windows": [YEAR]}
    assert_error(client.post("/ingest", dict(body, model="nope")), 404, "unknown_model", "model")
    assert_error(client.post("/ingest", dict(body, windows=[{"mode": "range", "start": "2023-05-01",
                                                             "end": "2023-01-01"}])), 422, "spec_error", "windows[0]")
    assert_error(client.post("/ingest", dict(body, region={"bbox": [1, 2, 3]})), 422, "spec_error", "region.bbox")
    assert_error(client.post("/ingest", dict(body, region={})), 422, "spec_error", "region")
    assert_error(client.post("/ingest", dict(body, region={"bbox": [0, 0, 10, 10]})), 413, "too_large", "region")
    assert app.state.jobs.active() == 0 and store.spaces() == []


# ---------------------------------------------------------------- search


@needs_search
def test_search_like_a_key_a_vector_or_a_request(ingested):
    store, app, client, _ = ingested
    space = store.spaces()[0].space
    rows = store.to_arrow(space, columns=["key", "vector"]).to_pylist()
    key = rows[0]["key"]
    by_key = client.post("/search", {"model": "spectral", "like": {"key": key}, "k": 3})
    assert by_key.status_code == 200, by_key.text
    results = by_key.json()["results"]
    assert 0 < len(results) <= 3 and key not in [r["key"] for r in results]  # exclude_self
    by_vector = client.post("/search", {"model": "spectral", "like": {"vector": rows[0]["vector"]}, "k": 2,
                                        "exclude_self": False}).json()["results"]
    assert by_vector[0]["key"] == key
    cell_request = {"model": "spectral", "spatial": {"type": "H3Cell", "cell": resolve_cell(store, space, key)},
                    "temporal": YEAR}
    by_request = client.post("/search", {"model": "spectral", "like": {"request": cell_request}, "k": 2,
                                         "temporal": YEAR}).json()["results"]
    assert len(by_request) == 2 and key not in [r["key"] for r in by_request]
    w, s, e, n = _bounds(store, space)
    inside = client.post("/search", {"model": "spectral", "like": {"key": key}, "k": 50,
                                     "within": {"bbox": [w - 0.01, s - 0.01, e + 0.01, n + 0.01]}}).json()
    assert len(inside["results"]) == len(rows) - 1
    # filters the search refuses are input errors, never a 500
    for bad in ({"where": "year = 2023; DROP TABLE x"}, {"metric": "manhattan"}, {"within": {"cells": ["zz"]}}):
        assert_error(client.post("/search", {"model": "spectral", "like": {"key": key}, **bad}), 422, "spec_error")
    assert_error(client.post("/search", {"model": "spectral", "like": {"vector": [1.0, 2.0]}}), 422, "vector_error")
    assert_error(client.post("/search", {"model": "mosaiks", "like": {"vector": [1.0] * 8}}), 404, "unknown_space")


def resolve_cell(store, space, key):
    import h3

    (row,) = store.to_arrow(space, columns=["cell"], filter=f"key = '{key}'").to_pylist()
    return h3.int_to_str(row["cell"])


def _bounds(store, space):
    t = store.to_arrow(space, columns=["lon", "lat"]).to_pydict()
    return min(t["lon"]), min(t["lat"]), max(t["lon"]), max(t["lat"])


def test_search_input_errors(ingested):
    store, app, client, _ = ingested
    key = store.to_arrow(store.spaces()[0].space, columns=["key"]).column("key")[0].as_py()
    like_two = {"model": "spectral", "like": {"key": key, "vector": [1.0]}}
    assert_error(client.post("/search", like_two), 422, "spec_error", "like")
    assert_error(client.post("/search", {"model": "spectral", "like": {"key": "0" * 64}}), 404, "not_found",
                 "like.key")
    assert_error(client.post("/search", {"model": "spectral", "like": {"key": key}, "k": 0}), 422,
                 "validation_error", "k")
    assert_error(client.post("/search", {"model": "spectral", "like": {"key": key}, "k": 5000}), 413, "too_large",
                 "k")
    assert_error(client.post("/search", {"model": "nope", "like": {"key": key}}), 404, "unknown_model")
    nan_vector = b'{"model": "spectral", "like": {"vector": [1.0, NaN]}}'  # Python's json reads NaN
    assert_error(client.request("POST", "/search", content=nan_vector, headers={"content-type": "application/json"}),
                 422, "vector_error", "like.vector")
    assert_error(client.post("/search", {"model": "spectral", "like": {"key": key}, "temporal": {"mode": "x"}}),
                 422, "spec_error", "temporal")


BAD_CELLS = [2**64, -1, "-1", "ffffffffffffffffff", 0]


def _cell_doors(cell, dim):
    """The four doors that take an H3 cell: (path, body, field of the error)."""
    request = {"model": "spectral", "spatial": {"type": "H3Cell", "cell": cell}, "temporal": YEAR}
    return [
        ("/embeddings", {"request": request, "compute": False}, "request"),
        ("/embeddings/lookup", {"items": [request]}, "items[0]"),
        ("/search", {"model": "spectral", "like": {"request": request}}, "like.request"),
        ("/search", {"model": "spectral", "like": {"vector": [0.5] * dim}, "within": {"cells": [cell]}}, ...),
    ]


@pytest.mark.parametrize("cell", BAD_CELLS, ids=repr)
def test_h3_cells_h3_cannot_take_are_422_at_every_door(ingested, cell):
    store, app, client, _ = ingested
    for path, body, field in _cell_doors(cell, store.spaces()[0].dim):
        err = assert_error(client.post(path, body), 422, "spec_error", field)
        assert str(cell) in err["message"], (path, err)


# ---------------------------------------------------------------- sql


def test_sql_as_json_rows_and_as_an_arrow_stream(ingested):
    store, app, client, job = ingested
    total = store.stats()["total_rows"]
    body = client.post("/sql", {"query": "SELECT count(*) AS n FROM embeddings"}).json()
    assert body == {"columns": ["n"], "rows": [[total]], "row_count": 1, "truncated": False}
    cut = client.post("/sql", {"query": "SELECT key, year, start_date FROM embeddings", "limit": 2}).json()
    assert cut["row_count"] == 2 and cut["truncated"] is True and cut["columns"] == ["key", "year", "start_date"]
    assert cut["rows"][0][1] == 2023 and cut["rows"][0][2] == "2023-01-01"
    res = client.post("/sql", {"query": "SELECT key, vector FROM spectral", "limit": 3, "format": "arrow"})
    assert res.status_code == 200 and res.headers["content-type"] == ARROW_STREAM
    table = pa.ipc.open_stream(res.content).read_all()
    assert table.num_rows == 3 and table.column_names == ["key", "vector"]
    assert table.schema.metadata[b"rsembed.truncated"] == (b"true" if total > 3 else b"false")
    capped = Client(create_app(store, sql_row_limit=2)).post("/sql", {"query": "SELECT key FROM embeddings",
                                                                       "limit": 100}).json()
    assert capped["row_count"] == 2 and capped["truncated"] is True


BEYOND_PYTHON = "SELECT 'infinity'::DATE AS d, '-infinity'::TIMESTAMP AS t, '294247-01-10'::DATE AS x"


def test_sql_values_beyond_pythons_dates_as_json_and_arrow(ingested):
    import duckdb

    store, app, client, job = ingested
    body = client.post("/sql", {"query": BEYOND_PYTHON}).json()
    assert body["rows"] == [["infinity", "-infinity", "294247-01-10"]]
    res = client.post("/sql", {"query": BEYOND_PYTHON, "format": "arrow"})
    assert res.status_code == 200 and res.headers["content-type"] == ARROW_STREAM
    answer = pa.ipc.open_stream(res.content).read_all()  # DuckDB's own values, read back by DuckDB
    con = duckdb.connect()
    con.register("answer", answer)
    assert con.execute("SELECT d::VARCHAR, t::VARCHAR, x::VARCHAR FROM answer").fetchall() == \
        [("infinity", "-infinity", "294247-01-10")]
    assert_error(client.post("/sql", {"query": "UPDATE EXTENSIONS"}), 422, "sql_error", "query")
    assert_error(client.post("/sql", {"query": "UPDATE EXTENSIONS", "format": "arrow"}), 422, "sql_error")


def test_sql_refuses_writes_and_changes_nothing(ingested, tmp_path):
    store, app, client, _ = ingested
    before = store.stats()
    target = tmp_path / "out.csv"
    for query in ["DROP TABLE x", f"COPY (SELECT 1) TO '{target}'", "DELETE FROM embeddings",
                  "CREATE TABLE t AS SELECT 1", "SELECT 1; DROP TABLE spaces", "SELEC 1", ""]:
        assert_error(client.post("/sql", {"query": query}), 422, "sql_error", "query")
    assert not target.exists()
    assert store.stats() == before


# ---------------------------------------------------------------- auth


def test_writes_need_the_token_and_reads_stay_open(tmp_path, small_scene, scene_config):
    store = Store.open(tmp_path / "db", config=scene_config)
    app = create_app(store, token="s3cret")
    anonymous, wrong, owner = Client(app), Client(app, "nope"), Client(app, "s3cret")
    for client in (anonymous, wrong):
        res = client.post("/ingest", ingest_body(small_scene[1]))
        assert_error(res, 401, "unauthorized")
        assert res.headers["www-authenticate"] == "Bearer"
        assert_error(client.post("/embeddings", {"request": point_request(small_scene[1])}), 401, "unauthorized")
    assert app.state.jobs.active() == 0 and store.spaces() == []  # nothing ran
    # reads are open: a look-up without computing, stats, models
    assert_error(anonymous.post("/embeddings", {"request": point_request(small_scene[1]), "compute": False}),
                 404, "not_found")
    assert anonymous.get("/stats").status_code == 200 and anonymous.get("/models").status_code == 200
    assert owner.post("/embeddings", {"request": point_request(small_scene[1])}).json()["cached"] is False

    private = create_app(store, token="s3cret", protect_reads=True)
    assert_error(Client(private).get("/stats"), 401, "unauthorized")
    assert Client(private).get("/health").status_code == 200
    assert Client(private, "s3cret").get("/stats").status_code == 200
    with pytest.raises(ValueError, match="token"):
        create_app(store, protect_reads=True)


# ---------------------------------------------------------------- one error shape everywhere


def _operations(app):
    """(method, path) of every documented operation, from the OpenAPI document."""
    doc = Client(app).get("/openapi.json").json()
    return sorted((method.upper(), path) for path, item in doc["paths"].items() for method in item)


def test_a_json_body_is_read_whatever_its_content_type(store):
    """curl -d sends application/x-www-form-urlencoded; the body is JSON all the same."""
    client = Client(create_app(store))
    body = b'{"query": "SELECT 41 + 1 AS answer"}'
    for content_type in ("application/x-www-form-urlencoded", "text/plain", None):
        headers = {"content-type": content_type} if content_type else {}
        res = client.request("POST", "/sql", content=body, headers=headers)
        assert res.status_code == 200, (content_type, res.text)
        assert res.json()["rows"] == [[42]]
    err = assert_error(client.request("POST", "/sql", content=b"query=SELECT+1",
                                      headers={"content-type": "application/x-www-form-urlencoded"}),
                       422, "validation_error")
    assert "not valid JSON" in err["message"]


def test_every_route_answers_errors_in_one_shape(store):
    from fastapi.routing import APIRoute

    app = create_app(store)
    client = Client(app)
    ops = _operations(app)
    routed = sorted((m, r.path) for r in app.routes if isinstance(r, APIRoute) for m in r.methods)
    assert ops == routed and len(ops) >= 9
    for method, path in ops:
        params = re.findall(r"{(\w+)}", path)
        url = re.sub(r"{\w+}", "no-such-thing", path)
        if method == "POST":
            assert_error(client.request("POST", url, content=b"{not json",
                                        headers={"content-type": "application/json"}), 422, "validation_error")
            assert_error(client.post(url, [1, 2]), 422, "validation_error")
            assert_error(client.post(url, {"unexpected_field": 1}), 422, "validation_error")
        for param in params:
            assert_error(client.request(method, url), 404, "not_found", param)
        other = "DELETE" if method != "DELETE" else "PUT"
        assert_error(client.request(other, url), 405, "method_not_allowed")
    assert_error(client.get("/no/such/endpoint"), 404, "not_found")

    private = Client(create_app(store, token="t", protect_reads=True))
    for method, path in ops:
        url = re.sub(r"{\w+}", "no-such-thing", path)
        res = private.request(method, url, json={} if method == "POST" else None)
        if path == "/health":
            assert res.status_code == 200
        else:
            assert_error(res, 401, "unauthorized")


def test_unexpected_errors_are_500_without_internals(store, monkeypatch):
    def broken():
        raise RuntimeError("secret detail at /srv/private")

    monkeypatch.setattr(store, "stats", broken)
    err = assert_error(Client(create_app(store)).get("/stats"), 500, "internal_error")
    assert "secret" not in err["message"] and "/srv" not in err["message"]


def test_a_named_thing_not_stored_is_404(store, monkeypatch):
    from rsembed_store import NotStoredError

    def not_stored(*args, **kwargs):
        raise NotStoredError("key 00 is not stored in space 'spectral__x'")

    monkeypatch.setattr(store, "search", not_stored)
    res = Client(create_app(store)).post("/search", {"model": "spectral", "like": {"vector": [1.0, 2.0]}})
    assert "is not stored" in assert_error(res, 404, "not_found")["message"]


def test_openapi_describes_the_request_specs_the_service_accepts(store):
    """The published request schema accepts every spec form the service accepts, and says what picks it."""
    jsonschema = pytest.importorskip("jsonschema")
    from rsembed_store import BBox, H3Cell, InputPrepSpec, OutputSpec, PointBuffer, Request, SensorSpec, TemporalSpec

    doc = create_app(store).openapi()
    schema = doc["components"]["schemas"]["EmbeddingsBody"]["properties"]["request"]
    requests = [
        Request("spectral", PointBuffer(11.0, 46.0, 250), TemporalSpec.year(2023)),
        Request("spectral", BBox(11.0, 46.0, 11.1, 46.1), TemporalSpec.range("2023-01-01", "2023-07-01"),
                sensor=SensorSpec("s2-l2a", ("B2", "B3"), composite="mosaic"), output=OutputSpec.grid(20),
                input_prep=InputPrepSpec.tile(tile_size=64), provider="local"),
        Request("spectral", H3Cell("8928308280fffff"), TemporalSpec.year(2023), output=OutputSpec.pooled("max")),
    ]
    for request in requests:
        jsonschema.validate(request.to_dict(), schema)
        jsonschema.validate({**request.to_dict(), "spatial": {"type": "H3Cell", "cell": 617700169958293503}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"model": "spectral", "spatial": {"type": "Circle", "r": 1}}, schema)
    titles = {s.get("title") for s in schema["properties"]["spatial"]["oneOf"]}
    assert titles == {"PointBuffer", "BBox", "H3Cell"}


def test_docs_cover_every_route_error_code_and_option(store):
    text = DOCS.read_text(encoding="utf-8")
    for method, path in _operations(create_app(store)):
        assert f"`{method} {path}`" in text, f"docs/http.md does not document {method} {path}"
    for code in error_codes():
        assert f"`{code}`" in text, f"docs/http.md does not list the error code {code!r}"
    for option in ("--host", "--port", "--token", "RSEMBED_STORE_TOKEN", "--protect-reads", "--source",
                   "--request", "--body", "max_batch", "sql_row_limit", "sql_timeout_s", "max_ingest_requests"):
        assert option in text, f"docs/http.md does not mention {option}"


# ---------------------------------------------------------------- real server, CLI, packaging


def test_real_uvicorn_on_loopback(tmp_path, small_scene, scene_config):
    import uvicorn

    store = Store.open(tmp_path / "db", config=scene_config)
    server = uvicorn.Server(uvicorn.Config(create_app(store, token="tok"), log_level="warning", lifespan="off"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as http:
            assert http.get("/health").json()["ok"] is True
            assert "/embeddings" in http.get("/openapi.json").json()["paths"]
            assert_error(http.post("/ingest", json=ingest_body(small_scene[1])), 401, "unauthorized")
            job_id = http.post("/ingest", json=ingest_body(small_scene[1], h3_res=7),
                               headers={"Authorization": "Bearer tok"}).json()["job_id"]
        # the job belongs to the server, not to the connection that started it
        with httpx.Client(base_url=base, timeout=30) as http:
            deadline = time.monotonic() + 30
            while (job := http.get(f"/jobs/{job_id}").json())["status"] not in ("done", "failed"):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert job["status"] == "done" and job["summary"]["failed"] == 0
            res = http.post("/sql", json={"query": "SELECT count(*) AS n FROM embeddings", "format": "arrow"})
            assert pa.ipc.open_stream(res.content).read_all().column("n")[0].as_py() == job["plan"]["n_requests"]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
    assert not thread.is_alive()


FUZZ_CASES = 300  # generated cases in the suite; scripts/fuzz_service.py runs 5,000 and more
FUZZ_SECONDS = 45  # ... or fewer when the machine is slow: the run stops generating after this


def test_schema_driven_fuzzing_of_the_real_server_finds_no_5xx(ingested):
    """schemathesis over /openapi.json against real uvicorn: no 5xx, no dropped connection, one error shape.

    The bodies that once gave 500s or resets (issue 17) are sent first. The
    server has a token the fuzzer lacks, so computing is fuzzed up to the token.
    """
    from scripts.fuzz_service import KNOWN_CASES, TOKEN, fuzz, serving

    store = ingested[0]
    with serving(create_app(store, token=TOKEN)) as base_url:
        report = fuzz(base_url, cases=FUZZ_CASES, seed=0, time_limit_s=FUZZ_SECONDS)
    print(report.summary())
    assert not report.server_errors, report.server_errors[:5]
    assert not report.dropped, report.dropped[:5]
    assert not report.bad_shape, report.bad_shape[:5]
    assert report.cases >= len(KNOWN_CASES) + 100, report.summary()
    operations = {f"{m} {p}" for m, p in _operations(create_app(store))}
    assert operations <= set(report.operations), operations - set(report.operations)


def test_a_500_leaves_the_connection_open_for_the_next_request(store, monkeypatch):
    """An unexpected error used to reach uvicorn after its 500, which then closed the keep-alive
    connection: the client's next request on it was reset (issue 17's '-1' after a 2**64 cell)."""
    from scripts.fuzz_service import serving

    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(store, "stats", broken)
    with serving(create_app(store)) as base_url:
        host, port = base_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as conn:
            # two requests on one connection, the second sent before the first is answered
            conn.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            received = b""
            while chunk := conn.recv(65536):
                received += chunk
    statuses = re.findall(rb"HTTP/1.1 (\d{3}) ", received)
    assert statuses == [b"500", b"200"], received[:600]
    assert b'"internal_error"' in received and b"boom" not in received


def test_the_fuzz_report_catches_5xx_and_dropped_connections(store, monkeypatch):
    from scripts.fuzz_service import fuzz, serving

    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(store, "stats", broken)
    with serving(create_app(store)) as base_url:
        report = fuzz(base_url, cases=0, known=[("GET", "/stats", None), ("GET", "/health", None)])
    assert report.cases == 2 and len(report.server_errors) == 1 and report.status_classes == {"2xx": 1, "5xx": 1}
    closer = socket.create_server(("127.0.0.1", 0))  # accepts, then hangs up without an answer
    threading.Thread(target=lambda: closer.accept()[0].close(), daemon=True).start()
    try:
        report = fuzz(f"http://127.0.0.1:{closer.getsockname()[1]}", cases=0, known=[("GET", "/health", None)])
    finally:
        closer.close()
    assert len(report.dropped) == 1 and report.failures == 1


def test_serve_request_is_an_api_smoke_test(tmp_path, small_scene):
    db = str(tmp_path / "db")
    runner = CliRunner()
    nothing = runner.invoke(main, ["--db", db, "serve", "--request", "GET", "/health"], catch_exceptions=False)
    assert nothing.exit_code == 2 and "no store at" in nothing.output  # a read creates no store
    Store.open(db)
    ok = runner.invoke(main, ["--db", db, "serve", "--request", "GET", "/health"], catch_exceptions=False)
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["ok"] is True
    refused = runner.invoke(main, ["--db", db, "serve", "--request", "POST", "/sql", "--body",
                                   '{"query": "DROP TABLE x"}'], catch_exceptions=False)
    assert refused.exit_code == 1 and json.loads(refused.stdout)["error"]["code"] == "sql_error"
    missing = runner.invoke(main, ["--db", db, "serve", "--request", "GET", "/nope"], catch_exceptions=False)
    assert missing.exit_code == 1 and json.loads(missing.stdout)["error"]["code"] == "not_found"
    body = json.dumps({"request": point_request(small_scene[1])})
    source = f"s2-l2a={small_scene[0] / 'scenes'}"
    computed = runner.invoke(main, ["--db", db, "serve", "--token", "t", "--source", source, "--request", "post",
                                    "/embeddings", "--body", body], catch_exceptions=False)
    assert computed.exit_code == 0, computed.output
    assert json.loads(computed.stdout)["cached"] is False
    help_text = runner.invoke(main, ["serve", "--help"]).output
    for option in ("--host", "--port", "--token", "--protect-reads", "--source", "--request", "--body"):
        assert option in help_text


def test_the_core_never_imports_the_web_stack(monkeypatch, store):
    code = ("import sys, rsembed_store, rsembed_store.cli, rsembed_store.query.service; "
            "bad = sorted({m.split('.')[0] for m in sys.modules} & {'fastapi', 'starlette', 'uvicorn', 'httpx'}); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(MissingExtraError, match=r"rsembed-store\[serve\]"):
        create_app(store)


def test_answers_encode_like_jsonable_with_or_without_orjson(monkeypatch):
    """The fast encoder gives the same JSON as the reference conversion, for every kind of value answers hold."""
    import builtins
    import math
    from datetime import date, datetime, timedelta, timezone
    from decimal import Decimal

    from rsembed_store.query.service import dumps, jsonable

    value = {"f": 1.5, "nan": float("nan"), "inf": -math.inf, "n": np.float32(2.5), "i": np.int64(7),
             "arr": np.array([1.0, np.nan], dtype=np.float32), "big": 2**70, "d": date(2023, 1, 2),
             "t": datetime(2023, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc), "td": timedelta(seconds=90),
             "dec": Decimal("1.25"), "b": b"\x00\x01", 3: ("x", None, True), "nested": [{"a": np.bool_(True)}]}
    want = json.loads(json.dumps(jsonable(value)))
    assert json.loads(dumps(value)) == want
    small = {k: v for k, v in value.items() if k != "big"}  # all of it within orjson's own reach
    assert json.loads(dumps(small)) == json.loads(json.dumps(jsonable(small)))
    real_import = builtins.__import__

    def no_orjson(name, *args, **kwargs):
        if name == "orjson":
            raise ImportError("hidden by the test")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_orjson)
    assert json.loads(dumps(value)) == want
