"""The real store on object storage: an S3-compatible server on loopback.

moto's S3 server (in this process, on 127.0.0.1 and a free port) stands in for
the cloud; everything else is the real store code talking S3 to it through
LanceDB: creating spaces, upserts from several processes, look-ups, search
with and without a vector index, DuckDB SQL, time travel, the CLI and the HTTP
service.

Azure takes the same code path; when the Azurite emulator is installed
(``npm install azurite``; ``$AZURITE_BLOB`` or ``azurite-blob`` on the PATH) and
``azure-storage-blob`` is importable, the ``az://`` tests run against it too,
otherwise they are skipped. ``gs://`` is not exercised here.

AWS S3 makes a conditional write (``If-None-Match: *``) atomic; moto checks the
condition and then writes, in two steps that two server threads could
interleave. :class:`AtomicConditionalWrites` serialises conditional PUTs so the
stand-in keeps S3's promise, and records them, so a test can check that Lance
really commits through them.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

pytest.importorskip("moto.server", reason="the object-store tests need moto[server] (pip install 'moto[server]')")
boto3 = pytest.importorskip("boto3")

from click.testing import CliRunner  # noqa: E402

from rsembed_store import Embedding, PointBuffer, Request, Store, TemporalSpec, resolve  # noqa: E402
from rsembed_store.cli import main  # noqa: E402
from rsembed_store.errors import StoreError  # noqa: E402
from rsembed_store.store import parse_storage_options, redact  # noqa: E402

BUCKET = "rsembed-test"
ACCESS_KEY, SECRET_KEY = "testing-access-key", "testing-secret-key-9f3c"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "object-storage.md"


class AtomicConditionalWrites:
    """WSGI middleware: conditional PUTs one at a time (as S3 promises), each recorded."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.puts: list = []  # (path, If-None-Match header, status)

    def __call__(self, environ, start_response):
        condition = environ.get("HTTP_IF_NONE_MATCH") or environ.get("HTTP_IF_MATCH")
        if environ.get("REQUEST_METHOD") != "PUT":
            return self.app(environ, start_response)
        status = []

        def record(code, headers, *rest):
            status.append(code)
            return start_response(code, headers, *rest)

        if condition is None:
            body = list(self.app(environ, record))
        else:
            with self.lock:
                body = list(self.app(environ, record))
        self.puts.append((environ.get("PATH_INFO", ""), environ.get("HTTP_IF_NONE_MATCH"), status[0]))
        return body


class S3Server:
    """moto's S3 on loopback, with one bucket; ``storage_options`` point LanceDB at it."""

    def __init__(self):
        import logging

        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
        self.app = AtomicConditionalWrites(DomainDispatcherApplication(create_backend_app))
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True, request_handler=MotoRequestHandler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                                   aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
        self.client.create_bucket(Bucket=BUCKET)
        self.storage_options = {"aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": SECRET_KEY,
                                "aws_endpoint": self.endpoint, "aws_region": "us-east-1", "allow_http": "true"}
        # the same, as the AWS SDKs' environment variables
        self.env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                    "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}

    def new_uri(self) -> str:
        """A fresh, empty store location in the bucket."""
        return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"

    def objects(self, uri: str) -> list:
        prefix = uri.split(f"s3://{BUCKET}/", 1)[1] + "/"
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def stop(self):
        self._server.shutdown()
        self._thread.join(timeout=10)


@pytest.fixture(scope="session")
def s3():
    server = S3Server()
    yield server
    server.stop()


def _wait_for_port(port: int, proc, seconds: float) -> None:
    """Until something listens on 127.0.0.1:port (a node server takes a few seconds to start)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"Azurite did not start listening on 127.0.0.1:{port} (exit code {proc.poll()})")


# Azurite's documented development account (public, the same in every installation)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.fixture(scope="session")
def azurite():
    """Azurite's blob service on a free loopback port with one container; yields the storage options."""
    binary = os.environ.get("AZURITE_BLOB") or shutil.which("azurite-blob")
    if not binary:
        pytest.skip("Azurite is not installed (npm install azurite; set AZURITE_BLOB to its azurite-blob)")
    blob = pytest.importorskip("azure.storage.blob", reason="creating the container needs azure-storage-blob")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
                             "--skipApiVersionCheck", "--silent"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_for_port(port, proc, seconds=60)
        blob.BlobServiceClient.from_connection_string(
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};").create_container(BUCKET)
        # object_store's emulator mode reads the endpoint from this variable (spawned writers inherit it)
        previous = os.environ.get("AZURITE_BLOB_STORAGE_URL")
        os.environ["AZURITE_BLOB_STORAGE_URL"] = endpoint
        yield {"azure_storage_account_name": AZURITE_ACCOUNT, "azure_storage_account_key": AZURITE_KEY,
               "azure_storage_use_emulator": "true", "allow_http": "true"}
        if previous is None:
            os.environ.pop("AZURITE_BLOB_STORAGE_URL", None)
        else:
            os.environ["AZURITE_BLOB_STORAGE_URL"] = previous
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:  # it waits for open connections to close
            proc.kill()
            proc.wait(timeout=10)


def toy(lon: float, lat: float = 0.0, year: int = 2022, seed: int = 0) -> Embedding:
    request = resolve(Request("toy", PointBuffer(lon, lat, 100), TemporalSpec.year(year)))
    vector = np.random.default_rng([seed, int(request.key[:12], 16)]).standard_normal(8)
    return Embedding(request=request, vector=vector.astype(np.float32))


@pytest.fixture(scope="module")
def filled(s3):
    """A store on S3 with 300 toy rows written in three upserts (versions 2, 3, 4 of the space)."""
    uri = s3.new_uri()
    store = Store.open(uri, storage_options=s3.storage_options)
    rows = [toy(i * 0.001, 0.5 * (i % 3)) for i in range(300)]
    for start in range(0, 300, 100):
        store.put_many(rows[start:start + 100])
    return uri, rows


# ---------------------------------------------------------------- the store itself


def test_writes_land_in_the_bucket_not_on_disk(s3, filled, tmp_path, monkeypatch):
    uri, rows = filled
    keys = s3.objects(uri)
    space = rows[0].space
    assert any(k.endswith(".manifest") and f"/{space}.lance/_versions/" in k for k in keys), keys[:5]
    assert any("/_spaces.lance/" in k for k in keys)
    monkeypatch.chdir(tmp_path)  # opening must not create a local directory named after the URI
    Store.open(uri, storage_options=s3.storage_options).spaces()
    assert list(tmp_path.iterdir()) == []


def test_a_reader_finds_no_store_at_an_empty_prefix_and_writes_nothing(s3):
    from rsembed_store import NoStoreError

    uri = s3.new_uri()
    with pytest.raises(NoStoreError, match="no catalog table there"):
        Store.open(uri, storage_options=s3.storage_options, create=False)
    assert s3.objects(uri) == []
    Store.open(uri, storage_options=s3.storage_options)  # creating writes the empty catalog
    assert Store.open(uri, storage_options=s3.storage_options, create=False).stats()["spaces"] == []


def test_lookup_get_and_stats_on_s3(s3, filled):
    uri, rows = filled
    store = Store.open(uri, storage_options=s3.storage_options)  # a second client sees the first one's writes
    wanted = [rows[5].key, "0" * 64, rows[299].key]
    found = store.lookup_many(wanted)
    assert [e.key if e else None for e in found] == [rows[5].key, None, rows[299].key]
    np.testing.assert_array_equal(found[0].vector, rows[5].vector)
    hit = store.get(rows[7].request, compute=False)
    assert hit.cached and np.array_equal(hit.vector, rows[7].vector)
    (space,) = store.stats()["spaces"]
    assert space["rows"] == 300 and space["pooled_rows"] == 300
    assert space["bytes"] > 300 * 8 * 4  # at least the raw vectors
    assert any(i["columns"] == ["key"] for i in space["indices"])


def test_upsert_versions_tags_and_time_travel_on_s3(s3):
    store = Store.open(s3.new_uri(), storage_options=s3.storage_options)
    first = [toy(i * 0.01) for i in range(20)]
    store.put_many(first)
    space = first[0].space
    tagged = store.tag(space, "before-update")
    changed = [toy(i * 0.01, seed=1) for i in range(10)]  # same keys, new vectors
    res = store.put_many(changed + [toy(5.0)])
    assert (res.inserted, res.updated) == (1, 10)
    assert store.count(space) == 21 and store.count(space, version="before-update") == 20
    old, new = (store.lookup_many([first[3].key], version=v)[0] for v in ("before-update", None))
    np.testing.assert_array_equal(old.vector, first[3].vector)
    np.testing.assert_array_equal(new.vector, changed[3].vector)
    versions = store.versions(space)
    assert [v["version"] for v in versions if v["tags"]] == [tagged]
    assert versions[-1]["version"] > tagged
    with pytest.raises(StoreError, match="no-such-tag"):
        store.count(space, version="no-such-tag")


def test_search_exact_then_through_a_vector_index_on_s3(s3, filled):
    uri, rows = filled
    store = Store.open(uri, storage_options=s3.storage_options)
    target = rows[42]
    exact = store.search("toy", target.vector, k=5)
    assert exact.plan["exact"] and exact.rows[0]["key"] == target.key
    report = store.maintain(min_rows_for_index=100, sample_size=10)
    (space,) = report["spaces"]
    assert space["vector_index"]["action"] == "built"
    # the tuned settings live in the Lance manifest on S3: a fresh client finds and uses them
    # (on the Lance path: the serving tier, which would answer first, is off for this client)
    fresh = Store.open(uri, storage_options=s3.storage_options, config={"serving": {"enabled": False}})
    indexed = fresh.search("toy", target.vector, k=5)
    assert not indexed.plan["exact"] and indexed.plan["index"] == space["vector_index"]["type"]
    assert indexed.rows[0]["key"] == target.key and indexed.rows[0]["distance"] == pytest.approx(0, abs=1e-5)
    by_key = fresh.search("toy", rows[10].key, k=3, where="lat > 0.7")
    assert by_key.rows and all(r["lat"] == 1.0 for r in by_key.rows)


def test_the_serving_tier_of_an_s3_space_is_saved_in_the_local_cache(s3, filled, tmp_path):
    uri, rows = filled
    config = {"serving": {"cache_dir": str(tmp_path / "cache"), "background": False}}
    store = Store.open(uri, storage_options=s3.storage_options, config=config)
    res = store.search("toy", rows[42].vector, k=3)
    assert res.plan["path"] == "serving" and res.rows[0]["key"] == rows[42].key
    saved = list((tmp_path / "cache" / "serving").glob("*/*/v*/tier.json"))
    assert len(saved) == 1  # keyed by the store URI's digest and the space
    again = Store.open(uri, storage_options=s3.storage_options, config=config)
    assert again.search("toy", rows[42].vector, k=3).keys == res.keys
    assert again.serving.describe(rows[42].space)["source"] == "loaded"


def test_sql_on_s3_with_time_travel(s3, filled):
    uri, rows = filled
    store = Store.open(uri, storage_options=s3.storage_options)
    by_lat = store.sql("SELECT lat, count(*) AS n FROM embeddings GROUP BY lat ORDER BY lat").to_pylist()
    assert by_lat == [{"lat": 0.0, "n": 100}, {"lat": 0.5, "n": 100}, {"lat": 1.0, "n": 100}]
    space = rows[0].space
    first_write = store.versions(space)[1]["version"]  # version 1 is the empty table
    (then,) = store.sql("SELECT count(*) AS n FROM embeddings", version=first_write).to_pylist()
    assert then == {"n": 100}


# ---------------------------------------------------------------- several writers


def race(uri: str, storage_options: dict, writers: int, rounds: int) -> None:
    """Spawned writers upsert overlapping new keys at the same instant; then no key twice, none lost."""
    import workers

    Store.open(uri, storage_options=storage_options).put_many([toy(-50, -50)])  # the space exists first
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(writers)
    procs = [ctx.Process(target=workers.upsert_worker, args=(uri, w, 30, rounds, barrier, storage_options))
             for w in range(writers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0] * writers
    store = Store.open(uri, storage_options=storage_options)
    keys = store.to_arrow(toy(0).space, columns=["key"]).column("key")
    assert len(keys) == len(pc.unique(keys)), "a key was stored twice"
    assert len(keys) == 1 + 30 * rounds + writers * rounds * 5  # nothing lost either: every commit landed


def test_concurrent_writers_on_s3_never_duplicate_a_key(s3):
    """Three spawned processes race three times on one S3 store."""
    uri = s3.new_uri()
    before = len(s3.app.puts)
    race(uri, s3.storage_options, writers=3, rounds=3)
    # Lance committed every new manifest of the race with a put-if-absent
    manifests = [(h, status) for path, h, status in s3.app.puts[before:] if "/_versions/" in path
                 and path.endswith(".manifest")]
    assert manifests and all(h == "*" for h, _ in manifests), manifests


def test_s3_with_a_dynamodb_commit_table(s3):
    """``s3+ddb://``: commits go through a DynamoDB table (moto serves DynamoDB on the same endpoint)."""
    table = f"commits-{uuid.uuid4().hex[:8]}"
    dynamodb = boto3.client("dynamodb", endpoint_url=s3.endpoint, region_name="us-east-1",
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
    dynamodb.create_table(
        TableName=table, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "base_uri", "KeyType": "HASH"}, {"AttributeName": "version", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "base_uri", "AttributeType": "S"},
                              {"AttributeName": "version", "AttributeType": "N"}])
    uri = f"s3+ddb://{BUCKET}/{uuid.uuid4().hex[:12]}?ddbTableName={table}"
    store = Store.open(uri, storage_options={**s3.storage_options, "dynamodb_endpoint": s3.endpoint})
    rows = [toy(i * 0.01) for i in range(20)]
    store.put_many(rows)
    assert store.put_many([toy(i * 0.01, seed=1) for i in range(5)]).updated == 5
    assert store.sql("SELECT count(*) AS n FROM embeddings").to_pylist() == [{"n": 20}]
    space = rows[0].space
    commits = dynamodb.scan(TableName=table)["Items"]
    assert any(space in item["base_uri"]["S"] for item in commits), commits
    assert max(int(item["version"]["N"]) for item in commits if space in item["base_uri"]["S"]) == \
        store.dataset(space).version


# ---------------------------------------------------------------- CLI and HTTP service


def test_cli_with_storage_options_on_s3(s3, filled):
    uri, _ = filled
    runner = CliRunner()
    flags = ["--db", uri]
    for name, value in s3.storage_options.items():
        flags += ["--storage-option", f"{name}={value}"]
    stats = runner.invoke(main, flags + ["stats", "--json"], catch_exceptions=False)
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.output)["total_rows"] == 300
    env = {"RSEMBED_STORE_STORAGE_OPTIONS": " ".join(f"{k}={v}" for k, v in s3.storage_options.items())}
    sql = runner.invoke(main, ["--db", uri, "sql", "--json", "SELECT count(*) AS n FROM embeddings"], env=env,
                        catch_exceptions=False)
    assert sql.exit_code == 0, sql.output
    assert json.loads(sql.output)["rows"] == [[300]]


def test_cli_refuses_a_malformed_storage_option_without_echoing_it(s3, filled):
    uri, _ = filled
    bad = CliRunner().invoke(main, ["--db", uri, "--storage-option", "=" + SECRET_KEY, "stats"])
    assert bad.exit_code == 2
    assert "--storage-option" in bad.output and "KEY=VALUE" in bad.output
    assert SECRET_KEY not in bad.output


def test_service_reads_the_s3_store_with_environment_credentials(s3, filled):
    uri, rows = filled
    runner = CliRunner()
    stats = runner.invoke(main, ["--db", uri, "serve", "--request", "GET", "/stats"], env=s3.env,
                          catch_exceptions=False)
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.output)["total_rows"] == 300
    body = json.dumps({"items": [rows[1].key, rows[2].key]})
    lookup = runner.invoke(main, ["--db", uri, "serve", "--request", "POST", "/embeddings/lookup", "--body", body],
                           env=s3.env, catch_exceptions=False)
    assert lookup.exit_code == 0, lookup.output
    assert rows[1].key in lookup.output and rows[2].key in lookup.output


# ---------------------------------------------------------------- Azure (Azurite), when installed


def test_round_trip_on_azure_blob(azurite):
    store = Store.open(f"az://{BUCKET}/{uuid.uuid4().hex[:12]}", storage_options=azurite)
    rows = [toy(i * 0.01) for i in range(40)]
    store.put_many(rows)
    space = rows[0].space
    tagged = store.tag(space, "first")
    res = store.put_many([toy(i * 0.01, seed=1) for i in range(10)])
    assert (res.inserted, res.updated) == (0, 10)
    found = store.lookup_many([rows[20].key, rows[3].key])
    np.testing.assert_array_equal(found[0].vector, rows[20].vector)
    assert not np.array_equal(found[1].vector, rows[3].vector)  # updated
    np.testing.assert_array_equal(store.lookup_many([rows[3].key], version=tagged)[0].vector, rows[3].vector)
    assert store.sql("SELECT count(*) AS n FROM embeddings").to_pylist() == [{"n": 40}]
    assert store.search("toy", rows[30].vector, k=3).rows[0]["key"] == rows[30].key


@pytest.mark.slow
def test_concurrent_writers_on_azure_blob_never_duplicate_a_key(azurite):
    race(f"az://{BUCKET}/{uuid.uuid4().hex[:12]}", azurite, writers=2, rounds=2)


# ---------------------------------------------------------------- options and secrets


def test_storage_options_are_checked_and_secrets_redacted(s3):
    with pytest.raises(StoreError, match="allow_http"):
        Store.open(s3.new_uri(), storage_options={**s3.storage_options, "allow_http": True})
    with pytest.raises(StoreError, match="KEY=VALUE") as exc:
        parse_storage_options(["aws_secret_access_key" + SECRET_KEY])  # no '=': the value stays unprinted
    assert SECRET_KEY not in str(exc.value)
    text = f"failed with {SECRET_KEY} for region us-east-1 and allow_http true"
    cleaned = redact(text, s3.storage_options)
    assert SECRET_KEY not in cleaned and "us-east-1" in cleaned and "true" in cleaned
    with pytest.raises(StoreError, match="s4") as bad_scheme:
        Store.open("s4://bucket/prefix", storage_options=s3.storage_options)
    assert SECRET_KEY not in str(bad_scheme.value)


def test_docs_cover_the_object_store_options():
    text = DOCS.read_text(encoding="utf-8")
    for needle in ("--storage-option", "RSEMBED_STORE_STORAGE_OPTIONS", "AWS_ENDPOINT_URL", "s3://", "gs://",
                   "az://", "If-None-Match", "s3+ddb://", "scripts/bench_object_store.py"):
        assert needle in text, f"docs/object-storage.md does not mention {needle}"
