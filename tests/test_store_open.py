"""``Store.open``: readers never create a store, and a bad ``h3_res`` is a SpecError."""

import pytest

import rsembed_store
from rsembed_store import NoStoreError, SpecError, Store, StoreError
from rsembed_store import PointBuffer, Request, TemporalSpec, resolve
from toy import toy_embedding


def toy(lon: float):
    return toy_embedding(resolve(Request("toy", PointBuffer(lon, 0.0, 100), TemporalSpec.year(2022))))


def test_a_reader_given_a_missing_directory_gets_no_store_and_creates_nothing(tmp_path):
    where = tmp_path / "typo"
    with pytest.raises(NoStoreError) as err:
        Store.open(where, create=False)
    msg = str(err.value)
    assert f"no store at {str(where)!r}" in msg and "does not exist" in msg
    assert "rsembed-store --db" in msg and "ingest" in msg  # how to make one
    assert not where.exists()
    # one family: callers may catch it as the store's error or as the builtin
    assert isinstance(err.value, StoreError) and isinstance(err.value, FileNotFoundError)
    assert rsembed_store.NoStoreError is NoStoreError and "NoStoreError" in rsembed_store.__all__


def test_a_directory_without_a_catalog_is_no_store(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(NoStoreError, match="holds no rsembed-store catalog"):
        Store.open(tmp_path / "plain", create=False)
    assert list((tmp_path / "plain").iterdir()) == []


def test_creating_makes_an_empty_store_that_readers_open(tmp_path):
    Store.open(tmp_path / "db")  # create=True: the directory and the empty catalog
    reader = Store.open(tmp_path / "db", create=False)
    assert reader.stats() == {"uri": str(tmp_path / "db"), "spaces": [], "total_rows": 0}


def test_a_reader_sees_what_was_written(tmp_path):
    rows = [toy(i * 0.01) for i in range(5)]
    Store.open(tmp_path / "db").put_many(rows)
    reader = Store.open(tmp_path / "db", create=False)
    assert reader.count(rows[0].space) == 5


def test_a_file_is_not_a_store(tmp_path):
    (tmp_path / "f").write_text("x")
    for create in (True, False):
        with pytest.raises(StoreError, match="is a file, not a directory"):
            Store.open(tmp_path / "f", create=create)


@pytest.mark.parametrize("res", [16, -1, True, 9.0, "9", None])
def test_a_bad_h3_res_is_a_spec_error_not_an_os_error(tmp_path, res):
    with pytest.raises(SpecError) as err:
        Store.open(tmp_path / "db", h3_res=res)
    assert not isinstance(err.value, OSError)  # the HTTP service maps OSError-family errors to 500
    assert f"h3_res={res!r}" in str(err.value) and "[0, 15]" in str(err.value)
    assert not (tmp_path / "db").exists()


def test_a_space_another_writer_adds_is_seen_by_a_store_opened_before(tmp_path):
    early = Store.open(tmp_path / "db")
    assert early.spaces() == []  # the (empty) catalog is read before the other writer's commit
    rows = [toy(i * 0.01) for i in range(3)]
    Store.open(tmp_path / "db").put_many(rows)  # another process, as far as `early` knows
    assert [s.space for s in early.spaces()] == [rows[0].space]
    assert early.count(rows[0].space) == 3
