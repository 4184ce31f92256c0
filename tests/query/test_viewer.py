"""The viewer's server side: the PCA picture, roll-ups, the data endpoints, and the no-internet rule.

The rule for URLs in what the viewer serves (the page, its script and style, the vendored libraries and
/docs): our own files hold no ``http://`` or ``https://`` at all; a vendored library may hold URLs only on
hosts listed in VENDORED_HOSTS, each reviewed and given a reason it is never fetched by the page (a link in
an error message, an XML namespace, the CDN default of a loader the page never calls); a new host after a
version bump fails here until someone reads the code around it. The browser tests add the run-time half:
every request the page makes must go to the server that served it.
"""

from __future__ import annotations

import re
from pathlib import Path

import h3
import numpy as np
import pyarrow as pa
import pytest

import viewer_data
from rsembed_store.errors import SpecError
from rsembed_store.query.viewer import Pictures, parent_cells
from rsembed_store.query.viewer.routes import STATIC

OWN_FILES = ("index.html", "viewer.js", "viewer.css")
# host -> why the page never fetches it
_XMLNS = "XML namespace or schema identifier, never fetched"
_LINK = "a link in a comment, licence header or error message"
VENDORED_HOSTS = {
    "vendor/deck.gl/dist.min.js": {
        "www.w3.org": _XMLNS, "github.com": _LINK, "deck.gl": _LINK, "en.wikipedia.org": _LINK,
        "archive.org": _LINK, "feross.org": _LINK, "www.movable-type.co.uk": _LINK, "www.apache.org": _LINK,
        "unpkg.com": "loaders.gl's worker/library CDN and an h3-js hint; the page loads no data through loaders",
        "www.gstatic.com": "the Draco mesh decoder: no mesh layers on the page",
        "raw.githubusercontent.com": "the Draco encoder: no mesh layers on the page",
        "maps.googleapis.com": "the geocoder widget: not on the page",
        "api.mapbox.com": "the geocoder widget: not on the page",
        "api.opencagedata.com": "the geocoder widget: not on the page",
    },
    "vendor/h3-js/h3-js.umd.js": {},
    "vendor/apache-arrow/Arrow.es2015.min.js": {"www.apache.org": _LINK},
    "vendor/swagger-ui/swagger-ui-bundle.js": {
        **{h: _LINK for h in ("datatracker.ietf.org", "www.rfc-editor.org", "spec.openapis.org", "json-schema.org",
                              "github.com", "www.tiktok.com", "twitter.com", "instagram.com", "example.com",
                              "www.facebook.com", "vladimirgorej.com", "swagger.io", "spdx.org", "soundcloud.com",
                              "redux.js.org", "reactjs.org", "base", "fb.me")},
        "www.w3.org": _XMLNS,
        "validator.swagger.io": "the spec validator badge: /docs sets validatorUrl to null",
    },
    "vendor/swagger-ui/swagger-ui.css": {"www.w3.org": _XMLNS, "tailwindcss.com": _LINK},
}
URL = re.compile(r"https?://([A-Za-z0-9.-]+)")


def test_our_own_files_hold_no_external_url():
    for name in OWN_FILES:
        text = (STATIC / name).read_text(encoding="utf-8")
        assert not URL.search(text), f"{name} holds an external URL: {URL.search(text).group(0)}"
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    for ref in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert ref.startswith("/viewer/static/") or ref.startswith("data:"), f"index.html loads {ref}"
        if ref.startswith("/viewer/static/"):
            assert (STATIC / ref[len("/viewer/static/"):]).is_file(), f"index.html loads a missing {ref}"


def test_every_vendored_file_is_reviewed_and_its_urls_are_known():
    served = sorted(str(p.relative_to(STATIC)) for p in STATIC.rglob("*")
                    if p.suffix in (".js", ".css", ".html") and str(p.relative_to(STATIC)).startswith("vendor/"))
    assert served == sorted(VENDORED_HOSTS), "a vendored script or style is not in VENDORED_HOSTS: review it"
    for name, allowed in VENDORED_HOSTS.items():
        text = (STATIC / name).read_text(encoding="utf-8", errors="replace")
        hosts = set(URL.findall(text))
        assert hosts <= set(allowed), f"{name} has URLs on unreviewed hosts {sorted(hosts - set(allowed))}"
        if name.endswith(".css"):
            assert not re.search(r"url\(\s*['\"]?https?:", text), f"{name} fetches from the internet"


def test_each_vendored_library_carries_its_licence_and_pin():
    vendor = STATIC / "vendor"
    for lib in ("deck.gl", "h3-js", "apache-arrow", "swagger-ui"):
        assert any(p.name.startswith("LICENSE") for p in (vendor / lib).iterdir()), f"{lib} has no licence"
    pins = (vendor / "VERSIONS").read_text().split()
    assert {p.rsplit("@", 1)[0] for p in pins} == {"deck.gl", "h3-js", "apache-arrow", "swagger-ui-dist"}
    total = sum(p.stat().st_size for p in vendor.rglob("*") if p.is_file())
    assert total < 8_000_000, f"the vendored files are {total / 1e6:.1f} MB; keep them to a few MB"


def test_parent_cells_agree_with_h3():
    rng = np.random.default_rng(1)
    cells = [h3.latlng_to_cell(float(la), float(lo), 12) for la, lo in zip(rng.uniform(-80, 80, 50),
                                                                           rng.uniform(-179, 179, 50))]
    ints = np.array([h3.str_to_int(c) for c in cells], dtype=np.int64)
    for res in (0, 5, 8, 12):
        got = parent_cells(ints, res)
        assert [h3.int_to_str(int(x)) for x in got] == [h3.cell_to_parent(c, res) for c in cells]
    with pytest.raises(SpecError, match="res=16"):
        parent_cells(ints, 16)


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    from rsembed_store import Store

    store = Store.open(tmp_path_factory.mktemp("viewer") / "db")
    return store, viewer_data.fill(store)


def test_the_picture_colours_classes_apart_and_rolls_up(filled):
    store, space = filled
    pic = Pictures(store).get(space)
    assert pic.h3_res == viewer_data.RES and pic.rows == len(viewer_data.cells_and_classes()[0])
    used, table = pic.view(None, 15, 10_000)
    assert used == viewer_data.RES and table.num_rows == pic.rows
    _, klass = viewer_data.cells_and_classes()
    hexes = [format(c, "x") for c in table.column("cell").to_pylist()]
    rgb = np.stack([table.column(c).to_numpy() for c in "rgb"], axis=1).astype(float)
    labels = np.array([klass[c] for c in hexes])
    means = np.array([rgb[labels == k].mean(axis=0) for k in range(4)])
    within = np.mean([np.linalg.norm(rgb[labels == k] - means[k], axis=1).mean() for k in range(4)])
    between = min(np.linalg.norm(means[i] - means[j]) for i in range(4) for j in range(i + 1, 4))
    assert between > 2 * within, (between, within)  # classes look different, cells of a class alike
    # a cap coarsens: parents, each holding its children's rows, every row counted once
    used, small = pic.view(None, 15, 20)
    assert used < viewer_data.RES and small.num_rows <= 20
    assert sum(small.column("n").to_pylist()) == pic.rows
    parents = {h3.cell_to_parent(c, used) for c in hexes}
    assert {format(c, "x") for c in small.column("cell").to_pylist()} == parents
    # a viewport keeps the cells whose centre is inside it
    w, s, e, n = pic.bounds
    half = (w, s, (w + e) / 2, n)
    _, left = pic.view(half, 15, 10_000)
    inside = [c for c in hexes if w <= h3.cell_to_latlng(c)[1] <= (w + e) / 2]
    assert 0 < left.num_rows < pic.rows and abs(left.num_rows - len(inside)) <= 2


def test_the_picture_is_rebuilt_when_the_space_changes(filled, tmp_path):
    from rsembed_store import Embedding, H3Cell, Request, Store, TemporalSpec, resolve

    store = Store.open(tmp_path / "db")
    space = viewer_data.fill(store)
    pics = Pictures(store)
    first = pics.get(space)
    assert pics.get(space) is first  # cached
    far = h3.latlng_to_cell(47.5, 12.5, viewer_data.RES)
    store.put_many([Embedding(request=resolve(Request("toy", H3Cell(far), TemporalSpec.year(2021))),
                              vector=np.ones(8, np.float32))])
    second = pics.get(space)
    assert second.version > first.version and second.rows == first.rows + 1


def test_endpoints_answer_arrow_and_name_bad_input(filled):
    from fastapi.testclient import TestClient

    from rsembed_store.query.service import create_app

    store, space = filled
    client = TestClient(create_app(store))
    spaces = client.get("/viewer/spaces").json()
    entry = next(s for s in spaces["spaces"] if s["space"] == space)
    assert [w["window"] for w in entry["windows"]] == ["2021-01-01/2022-01-01", "2022-01-01/2023-01-01"]
    assert spaces["basemap"] is None
    res = client.get("/viewer/cells", params={"space": space, "window": "2022-01-01/2023-01-01", "res": 7})
    assert res.headers["content-type"].startswith("application/vnd.apache.arrow.stream")
    table = pa.ipc.open_stream(res.content).read_all()
    assert res.headers["x-viewer-res"] == "7" and table.schema.names == ["cell", "r", "g", "b", "n"]
    cell = h3.latlng_to_cell(viewer_data.CENTRE[1], viewer_data.CENTRE[0], viewer_data.RES)
    lat, lon = h3.cell_to_latlng(cell)
    row = client.get("/viewer/cell", params={"space": space, "lon": lon, "lat": lat}).json()
    assert row["cell"] == cell and row["start_date"] == "2021-01-01" and len(row["key"]) == 64
    for params, field in (({"space": space, "bbox": "1,2,3"}, "bbox"),
                          ({"space": space, "window": "2021/2022"}, "window"),
                          ({"space": space, "res": 16}, "res")):
        bad = client.get("/viewer/cells", params=params)
        assert bad.status_code == 422 and bad.json()["error"]["field"] == field, bad.json()
        assert str(params[field]) in bad.json()["error"]["message"] or field == "res"
    missing = client.get("/viewer/cells", params={"space": "nope__x"})
    assert missing.status_code == 404 and "nope__x" in missing.json()["error"]["message"]
    for path in ("/", "/ui", "/docs"):
        page = client.get(path)
        assert page.status_code == 200 and not URL.search(page.text), path
    assert client.get("/redoc").status_code == 404  # it would load ReDoc from a CDN
    assert client.get("/viewer/static/../routes.py").status_code == 404


def test_a_bad_basemap_setting_is_named(filled, monkeypatch):
    from fastapi.testclient import TestClient

    from rsembed_store.query.service import create_app
    from rsembed_store.query.viewer.routes import BASEMAP_ENV

    client = TestClient(create_app(filled[0]))
    monkeypatch.setenv(BASEMAP_ENV, "tiles.example/{z}/{x}.png")
    res = client.get("/viewer/spaces")
    assert res.status_code == 422 and "tiles.example/{z}/{x}.png" in res.json()["error"]["message"]
    monkeypatch.setenv(BASEMAP_ENV, "/tiles/{z}/{x}/{y}.png")
    assert client.get("/viewer/spaces").json()["basemap"] == "/tiles/{z}/{x}/{y}.png"


def test_the_static_files_ship_with_the_package():
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"rsembed_store.query.viewer" = ["static/*", "static/vendor/*/*", "static/vendor/VERSIONS"]' in text


def test_the_view_command_serves_and_names_the_url(monkeypatch, tmp_path):
    import click
    from click.testing import CliRunner

    from rsembed_store.cli import main
    from rsembed_store.commands import view as view_module

    served = {}

    @click.command()
    @click.option("--host")
    @click.option("--port", type=int)
    def fake_serve(host, port):
        served.update(host=host, port=port)

    monkeypatch.setattr(view_module, "serve", fake_serve)
    res = CliRunner().invoke(main, ["--db", str(tmp_path / "db"), "view", "--port", "9123", "--no-browser"])
    assert res.exit_code == 0, res.output
    assert "http://127.0.0.1:9123/" in res.output and served == {"host": "127.0.0.1", "port": 9123}


def test_many_threads_share_one_build_of_a_picture(filled, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from rsembed_store.query.viewer import picture as picture_module

    store, space = filled
    builds = []
    real = picture_module.Picture.build.__func__

    def counted(cls, *args, **kwargs):
        builds.append(1)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(picture_module.Picture, "build", classmethod(counted))
    pics = Pictures(store)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: pics.get(space), range(16)))
    assert len(builds) == 1 and all(p is got[0] for p in got)
    with ThreadPoolExecutor(8) as pool:  # views of one picture from many threads agree
        views = list(pool.map(lambda r: got[0].view(None, r % 9, 10_000)[1].num_rows, range(32)))
    assert views == [got[0].view(None, r % 9, 10_000)[1].num_rows for r in range(32)]
