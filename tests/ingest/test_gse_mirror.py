"""gse's public COG mirror: the URL layout, and the read path over HTTP with byte ranges.

The real mirror (Source Cooperative) is beyond the machine, so a loopback HTTP server
with Range support stands in for it, serving COGs in the published layout and an index
shaped like the mirror's own (``path`` as the ``s3://`` URL, ``year``, ``utm_zone``,
``crs``, ``utm_*``). GDAL reads the files through ``/vsicurl/`` exactly as it would read
the mirror; the answers must equal those read from the same files on disk.
"""

from __future__ import annotations

import os
import re
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from rsembed_store import Store
from rsembed_store.errors import ProviderError
from rsembed_store.testing import products as syn
from rsembed_store.ingest.models import gse_catalog as cat
from rsembed_store.specs import PointBuffer, TemporalSpec

YEAR = 2022
INSIDE = PointBuffer(9.0 + 1000 / 77_300, 46.04 - 1000 / 111_200, 200)


def test_the_documented_layout():
    assert cat.MIRROR_ROOT == "https://data.source.coop/tge-labs/aef/v1/annual"
    assert cat.MIRROR_INDEX == cat.MIRROR_ROOT + "/aef_index.parquet"
    assert (cat.mirror_file(cat.MIRROR_ROOT, 2023, "32N", "xabc-0000000000-0000008192.tiff")
            == "/vsicurl/https://data.source.coop/tge-labs/aef/v1/annual/2023/32N/xabc-0000000000-0000008192.tiff")
    s3 = "s3://us-west-2.opendata.source.coop/tge-labs/aef/v1/annual/2019/7S/f.tiff"
    assert cat.mirror_relative(s3) == "2019/7S/f.tiff"
    assert cat.mirror_relative(cat.MIRROR_ROOT + "/2019/7S/f.tiff") == "2019/7S/f.tiff"
    assert cat.mirror_relative("/data/gse/2019/7S/f.tiff") == "/data/gse/2019/7S/f.tiff"  # not the mirror's
    assert cat.gdal_path("/data/x.tif") == "/data/x.tif"
    with pytest.raises(ProviderError, match="'32X' is not a UTM zone"):
        cat.mirror_file(cat.MIRROR_ROOT, 2023, "32X", "f.tiff")


class RangeHandler(SimpleHTTPRequestHandler):
    """Static files with single byte ranges (what GDAL's /vsicurl/ asks for)."""

    ranges: list = []

    def log_message(self, *args):  # keep test output quiet
        pass

    def send_head(self):
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        path = self.translate_path(self.path)
        if match is None or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        start = int(match.group(1))
        end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
        if start >= size:
            self.send_error(416)
            return None
        type(self).ranges.append((self.path, start, end))
        f = open(path, "rb")
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        return _Limited(f, end - start + 1)


class _Limited:
    """A file object that yields at most ``n`` bytes (copyfile reads until empty)."""

    def __init__(self, f, n):
        self.f, self.left = f, n

    def read(self, size=-1):
        if self.left <= 0:
            return b""
        data = self.f.read(self.left if size < 0 else min(size, self.left))
        self.left -= len(data)
        return data

    def close(self):
        self.f.close()


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A loopback stand-in for the mirror: one COG of 2022 in zone 32N and the mirror-shaped index."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    served = tmp_path / "served"
    path, _, transform = syn.make_gse_file(served, YEAR, "32N", 500000, 5100000, (256, 256), seed=1)
    rel = path.relative_to(served).as_posix()
    pq.write_table(pa.table({
        "path": [f"{cat.MIRROR_S3}/{rel}"], "year": [YEAR], "utm_zone": ["32N"], "crs": ["EPSG:32632"],
        "utm_west": [500000.0], "utm_south": [5100000.0 - 2560.0], "utm_east": [502560.0], "utm_north": [5100000.0],
    }), served / "aef_index.parquet")
    RangeHandler.ranges = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("RSEMBED_GSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RSEMBED_GSE_ROOT", raising=False)
    cat.forget()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()
        cat.forget()


def test_auto_reads_the_mirror_over_http_and_gets_the_files_own_values(tmp_path, mirror):
    url, served = mirror
    store = Store.open(tmp_path / "db", config={"products": {"gse": {"mirror_root": url}}})
    emb = store.get("gse", INSIDE, TemporalSpec.year(YEAR))  # no cog root: the mirror serves it
    assert emb.request.provider == "mirror" and emb.meta["source"] == "mirror" and not emb.cached
    assert any(start > 0 for _, start, _ in RangeHandler.ranges)  # GDAL read byte ranges, not whole files
    assert len(list((tmp_path / "cache").iterdir())) == 1  # the index, downloaded once
    local = Store.open(tmp_path / "db2", config={"products": {"gse": {"root": str(served)}}})
    same = local.get("gse", INSIDE, TemporalSpec.year(YEAR), provider="cog")
    np.testing.assert_array_equal(emb.vector, same.vector)
    assert emb.key != same.key  # the provider is part of the key
    again = store.get("gse", INSIDE, TemporalSpec.year(YEAR))
    assert again.cached and again.key == emb.key


def test_a_place_the_mirror_lacks_is_declined_once_its_index_is_here(tmp_path, mirror):
    from rsembed_store.compat.auto import mirror_declines
    from rsembed_store.keys import Request, resolve

    url, _ = mirror
    config = {"products": {"gse": {"mirror_root": url}}}
    far = resolve(Request("gse", PointBuffer(9.5, 46.0, 200), TemporalSpec.year(YEAR), provider="mirror"))
    assert mirror_declines(far, config) is None  # before the index is here: taken as covered
    cat.local_index(url + "/aef_index.parquet")
    assert "covers" in mirror_declines(far, config)
    public = resolve(Request("gse", INSIDE, TemporalSpec.year(2017), provider="mirror"))
    assert "2018..2024, not 2017" in mirror_declines(public, {})
