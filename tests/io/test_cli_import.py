"""`rsembed-store import`: the command over import_table, its dry run and its errors."""

import json

import pyarrow.parquet as pq
from click.testing import CliRunner
from io_data import mixed_table

from rsembed_store.cli import main


def run(db, *args):
    return CliRunner().invoke(main, ["--db", str(db), *args])


def test_import_dry_run_then_import_then_again(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(mixed_table(300), path)
    db = tmp_path / "db"
    dry = run(db, "import", str(path), "--model", "cli", "--revision", "7", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output)["rows"] == 300 and not db.exists()
    res = run(db, "import", str(path), "-m", "cli", "--revision", "7", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert (out["inserted"], out["space"]) == (300, "imported-cli__7")
    again = run(db, "import", str(path), "-m", "cli", "--revision", "7")
    assert again.exit_code == 0 and "0 new" in again.output and "300 already held" in again.output


def test_import_refuses_bad_rows_with_exit_2(tmp_path):
    t = mixed_table(30)
    lon = t.column("lon").to_pylist()
    lon[3] = 500.0
    import pyarrow as pa

    t = t.set_column(t.schema.get_field_index("lon"), "lon", pa.array(lon))
    pq.write_table(t, tmp_path / "bad.parquet")
    res = run(tmp_path / "db", "import", str(tmp_path / "bad.parquet"), "-m", "cli")
    assert res.exit_code == 2 and "row 3: lon=500.0 is out of range" in res.output


def test_column_option_names_a_role(tmp_path):
    t = mixed_table(9).rename_columns(["spatial_type", "x", "lat", "buffer_m", "minlon", "minlat", "maxlon", "maxlat",
                                       "cell", "year", "embedding"])
    pq.write_table(t, tmp_path / "x.parquet")
    bad = run(tmp_path / "db", "import", str(tmp_path / "x.parquet"), "-m", "cli", "--dry-run")
    assert bad.exit_code == 2 and "needs a 'lon' column" in bad.output
    ok = run(tmp_path / "db", "import", str(tmp_path / "x.parquet"), "-m", "cli", "--column", "lon=x", "--json")
    assert ok.exit_code == 0 and json.loads(ok.output)["inserted"] == 9


def test_netcdf_export_then_import_by_format_option(tmp_path):
    pq.write_table(mixed_table(120), tmp_path / "in.parquet")
    assert run(tmp_path / "db", "import", str(tmp_path / "in.parquet"), "-m", "nc").exit_code == 0
    out = run(tmp_path / "db", "export", "imported:nc", "--format", "netcdf", "--out", str(tmp_path / "e.nc"), "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["rows"] == 120 and (tmp_path / "e.json").exists()
    (tmp_path / "e.nc").rename(tmp_path / "e.bin")  # no suffix to go by
    guess = run(tmp_path / "db2", "import", str(tmp_path / "e.bin"), "-m", "nc")
    assert guess.exit_code == 2 and "is not a Parquet file" in guess.output
    res = run(tmp_path / "db2", "import", str(tmp_path / "e.bin"), "-m", "nc", "--format", "netcdf", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["inserted"] == 120
