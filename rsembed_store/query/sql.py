"""Read-only DuckDB SQL over the store's Lance tables.

Nothing is copied into DuckDB. Each space's :class:`lance.LanceDataset` is
registered on an in-memory DuckDB connection as a view named after the space
(``"spectral__spectral-v1"``); DuckDB scans it through the Arrow dataset
interface, pushing column projections and filters (``h3 = ...``,
``year = 2023``, ``h3 BETWEEN lo AND hi``) down into the Lance scanner, so a
selective query reads only the rows it needs. On top of those views:

- ``"<model>"``: an alias of the space view when the store holds one revision
  of that model only (``spectral`` for ``spectral__spectral-v1``);
- ``embeddings``: every space, ``UNION ALL BY NAME``, without the heavy
  columns (``vector``, ``grid``) and with a ``space`` column in front;
- ``spaces``: the catalog (space, model, revision, dim, metric, kind, h3_res).

Helpers available in every query: the H3 macros ``h3_resolution``,
``h3_parent``, ``h3_to_string``, ``h3_from_string``, ``h3_child_min``,
``h3_child_max`` (pure bit arithmetic on the int64 cell), the Python functions
``h3_center_lat``, ``h3_center_lng`` and ``h3_latlng_to_cell``, and the
vector macro ``vec_mean(list(vector))`` (element-wise mean). DuckDB's own
``array_cosine_distance`` & co. work on the ``vector`` column directly.

Queries are read-only: only one ``SELECT`` (or ``EXPLAIN [ANALYZE]`` of one)
is accepted, statement kinds are checked with DuckDB's own parser, functions
that read files or run other statements are refused, and the connection runs
with ``enable_external_access=false`` and a locked configuration.

>>> table = run_sql(store, "SELECT space, count(*) FROM embeddings GROUP BY ALL")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Union

import pyarrow as pa

from ..errors import SqlError, StoreError
from ..h3int import SQL_MACROS
from ..space import HEAVY_COLUMNS, row_schema
from .sql_values import column_values

if TYPE_CHECKING:  # pragma: no cover
    from ..store import Store

DEFAULT_LIMIT = 10_000
DEFAULT_TIMEOUT_S = 30.0
EMBEDDINGS_VIEW = "embeddings"
SPACES_VIEW = "spaces"
RESERVED_VIEWS = (EMBEDDINGS_VIEW, SPACES_VIEW)

# schema metadata on the tables run_sql returns
META_TRUNCATED = b"rsembed.truncated"
META_LIMIT = b"rsembed.limit"

Version = Union[int, str, None, Mapping[str, Union[int, str]]]

# ---------------------------------------------------------------- SQL helpers

# the H3 integer macros come from rsembed_store.h3int, beside the Python functions they mirror
H3_MACROS = {
    **SQL_MACROS,
    # element-wise mean of a list of equal-length vectors: vec_mean(list(vector))
    "vec_mean": (
        "vs",
        "list_transform(range(1, len(vs[1]) + 1), lambda i: list_avg(list_transform(vs, lambda v: v[i])))",
    ),
}


def _h3_int_api():
    import h3

    return h3.api.basic_int


def _udf_center(index: int):
    api = _h3_int_api()

    def center(cells: pa.Array) -> pa.Array:
        out = []
        for c in cells.to_pylist():
            if c is None:
                out.append(None)
                continue
            try:
                out.append(api.cell_to_latlng(c)[index])
            except Exception:  # not a valid cell
                out.append(None)
        return pa.array(out, pa.float64())

    return center


def _udf_latlng_to_cell(lat: pa.Array, lng: pa.Array, res: pa.Array) -> pa.Array:
    api = _h3_int_api()
    out = []
    for a, b, r in zip(lat.to_pylist(), lng.to_pylist(), res.to_pylist()):
        if a is None or b is None or r is None:
            out.append(None)
            continue
        try:
            out.append(api.latlng_to_cell(a, b, r))
        except Exception:
            out.append(None)
    return pa.array(out, pa.int64())


# ---------------------------------------------------------------- read-only guard

ACCEPTED = "only one SELECT statement (or EXPLAIN [ANALYZE] of one) is accepted"

# functions (table or scalar) that read files, run other SQL, or change engine state
_DENIED_FUNCTIONS = re.compile(
    r"^(read_|parquet_|sniff_|iceberg_|delta_)"
    r"|_scan$"
    r"|^(glob|query|query_table|json_execute_serialized_sql|checkpoint|force_checkpoint|"
    r"truncate_duckdb_logs|write_log|setval|nextval|python_map_function|which_secret|duckdb_secrets|"
    r"duckdb_logs|duckdb_logs_parsed|duckdb_temporary_files|duckdb_external_file_cache)$"
    r"|external_resource"
    r"|^(enable|disable)_(profil|logging|checkpoint)",
    re.IGNORECASE,
)

_LEADING = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
_EXPLAIN = re.compile(r"^explain\s*(?:\((?P<opts>[^()]*)\)|(?P<analyze>analy[sz]e)\b)?\s*", re.IGNORECASE)


def _first_word(text: str) -> str:
    rest = _LEADING.sub("", text, count=1)
    m = re.match(r"[A-Za-z_]+", rest)
    return m.group(0).upper() if m else "?"


def _refuse(what: str, query: str) -> SqlError:
    return SqlError(
        f"refused {what}: SQL queries on the store are read-only; {ACCEPTED}, "
        f"without functions that read files or run other statements. Query: {query.strip()!r}"
    )


def _kind(statement, query: str) -> str:
    """The DuckDB statement type's name; one the Python binding does not know is refused."""
    try:
        return statement.type.name
    except ValueError:  # e.g. UPDATE EXTENSIONS: "29 is not a valid StatementType"
        raise _refuse(f"the {_first_word(statement.query)} statement", query) from None


def _failed(exc: BaseException, query: str) -> SqlError:
    msg = str(exc).strip()
    return SqlError(f"{msg}\nQuery: {query.strip()}")


def _function_names(node: Any, out: set) -> set:
    """Every function name in a serialised DuckDB parse tree (json_serialize_sql)."""
    if isinstance(node, dict):
        name = node.get("function_name")
        if isinstance(name, str):
            out.add(name)
        for v in node.values():
            _function_names(v, out)
    elif isinstance(node, list):
        for v in node:
            _function_names(v, out)
    return out


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# ---------------------------------------------------------------- results


@dataclass
class SqlResult:
    """What one query returned: at most ``limit`` rows, and whether more were left out."""

    table: pa.Table
    truncated: bool
    limit: Optional[int]

    @property
    def row_count(self) -> int:
        return self.table.num_rows

    def to_json(self) -> dict:
        """``{"columns": [...], "rows": [[...], ...], "row_count": n, "truncated": bool}``, JSON-safe."""
        columns = list(self.table.column_names)
        cols = [column_values(c) for c in self.table.columns]
        rows = [[_jsonable(col[i]) for col in cols] for i in range(self.table.num_rows)]
        return {"columns": columns, "rows": rows, "row_count": len(rows), "truncated": self.truncated}


def _jsonable(value: Any) -> Any:
    import base64
    import math
    from datetime import date, datetime, time, timedelta
    from decimal import Decimal

    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def is_truncated(table: pa.Table) -> bool:
    """Whether a table returned by :func:`run_sql` was cut at its row limit."""
    meta = table.schema.metadata or {}
    return meta.get(META_TRUNCATED) == b"true"


# ---------------------------------------------------------------- the session


class SqlSession:
    """A DuckDB connection over a snapshot of the store's spaces, read-only.

    The views see each space as it was when the session was opened (or at
    ``version``: a version number or tag for every space, or a mapping
    ``{space: version}``). Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, store: "Store", *, version: Version = None):
        import duckdb

        self.store = store
        self._duckdb = duckdb
        self._lock = threading.Lock()
        self.views: Dict[str, str] = {}  # view name -> what it is
        con = duckdb.connect(":memory:")
        self._con = con
        try:
            for setting in ("SET enable_progress_bar = false", "SET python_enable_replacements = false"):
                con.execute(setting)
            self._register_spaces(version)
            self._register_helpers()
            # defence in depth, after registration: no file system, no extension loading,
            # and no way to change that from a query
            con.execute("SET enable_external_access = false")
            con.execute("SET autoinstall_known_extensions = false")
            con.execute("SET autoload_known_extensions = false")
            con.execute("SET lock_configuration = true")
        except BaseException:
            con.close()
            raise

    # ------------------------------------------------------------ setup

    def _versions(self, version: Version, spaces: List[str]) -> Dict[str, Union[int, str, None]]:
        if isinstance(version, Mapping):
            unknown = sorted(set(version) - set(spaces))
            if unknown:
                raise SqlError(f"version given for spaces the store does not hold: {unknown}; it holds {spaces}")
            return {s: version.get(s) for s in spaces}
        if version is not None and not isinstance(version, (int, str)):
            raise SqlError(f"version={version!r} must be a version number, a tag, or a mapping {{space: version}}")
        return {s: version for s in spaces}

    def _register_spaces(self, version: Version) -> None:
        con = self._con
        infos = self.store.spaces()
        names = [s.space for s in infos]
        versions = self._versions(version, names)
        selects = []
        for info in infos:
            try:
                ds = self.store.dataset(info.space, versions[info.space])
            except StoreError as exc:
                raise SqlError(str(exc)) from None
            con.register(info.space, ds)  # a view over the Arrow dataset: scanned lazily, never copied
            self.views[info.space] = f"space {info.space} (Lance version {ds.version})"
            cols = [n for n in ds.schema.names if n not in HEAVY_COLUMNS]
            selects.append(
                f"SELECT {_quote_literal(info.space)} AS space, "
                + ", ".join(_quote_ident(c) for c in cols)
                + f" FROM {_quote_ident(info.space)}"
            )
        # friendly aliases: "<model>" when exactly one revision of it is held
        by_model: Dict[str, List[str]] = {}
        for info in infos:
            by_model.setdefault(info.model, []).append(info.space)
        for model, spaces in sorted(by_model.items()):
            if len(spaces) != 1 or model in RESERVED_VIEWS or model in self.views:
                continue
            con.execute(f"CREATE VIEW {_quote_ident(model)} AS SELECT * FROM {_quote_ident(spaces[0])}")
            self.views[model] = f"alias of {spaces[0]}"
        if selects:
            con.execute(f"CREATE VIEW {EMBEDDINGS_VIEW} AS " + "\nUNION ALL BY NAME\n".join(selects))
        else:
            light = [f for f in row_schema(1) if f.name not in HEAVY_COLUMNS]
            empty = pa.schema([pa.field("space", pa.string())] + light).empty_table()
            con.register(EMBEDDINGS_VIEW, empty)
        self.views[EMBEDDINGS_VIEW] = "every space, without vector and grid, plus a space column"
        catalog = pa.Table.from_pylist(
            [s.to_dict() for s in infos],
            schema=pa.schema(
                [
                    ("space", pa.string()),
                    ("model", pa.string()),
                    ("revision", pa.string()),
                    ("dim", pa.int32()),
                    ("dtype", pa.string()),
                    ("metric", pa.string()),
                    ("kind", pa.string()),
                    ("h3_res", pa.int8()),
                ]
            ),
        )
        con.register(SPACES_VIEW, catalog)
        self.views[SPACES_VIEW] = "the catalog of spaces"

    def _register_helpers(self) -> None:
        con = self._con
        for name, (args, body) in H3_MACROS.items():
            con.execute(f"CREATE MACRO {name}({args}) AS {body}")
        udf = dict(type="arrow", null_handling="special", side_effects=False)
        con.create_function("h3_center_lat", _udf_center(0), ["BIGINT"], "DOUBLE", **udf)
        con.create_function("h3_center_lng", _udf_center(1), ["BIGINT"], "DOUBLE", **udf)
        con.create_function("h3_latlng_to_cell", _udf_latlng_to_cell, ["DOUBLE", "DOUBLE", "INTEGER"], "BIGINT", **udf)

    # ------------------------------------------------------------ checking

    def check(self, query: str) -> str:
        """Refuse anything but one read-only SELECT; returns the statement text to run."""
        if not isinstance(query, str) or not query.strip():
            raise SqlError(f"the query must be a non-empty SQL string, got {query!r}")
        statements = self._parse(query)
        if not statements:
            raise SqlError(f"the query holds no SQL statement: {query!r}")
        if len(statements) != 1:
            raise _refuse(f"{len(statements)} statements (send one at a time)", query)
        stmt = statements[0]
        kind = _kind(stmt, query)
        text = stmt.query
        inner = text
        if kind == "EXPLAIN":
            rest = _LEADING.sub("", text, count=1)
            m = _EXPLAIN.match(rest)
            if not m:
                raise _refuse("an EXPLAIN that does not explain a SELECT", query)
            opts = (m.group("opts") or "").lower()
            if opts and not set(re.split(r"[\s,]+", opts.strip())) <= {"analyze", "analyse", "format", "json",
                                                                          "text", "graphviz", "html", "true",
                                                                          "false", ""}:
                raise _refuse(f"EXPLAIN options ({m.group('opts')})", query)
            inner = rest[m.end():]
            explained = self._parse(inner)
            if len(explained) != 1 or _kind(explained[0], query) != "SELECT":
                what = _first_word(inner) if explained else "empty"
                raise _refuse(f"EXPLAIN of the {what} statement (EXPLAIN takes a SELECT)", query)
        elif kind != "SELECT":
            raise _refuse(f"the {_first_word(text)} statement (DuckDB statement type {kind})", query)
        self._check_functions(inner, query)
        return text

    def _parse(self, text: str):
        try:
            return self._con.extract_statements(text)
        except self._duckdb.Error as exc:
            raise _failed(exc, text) from None
        except ValueError:
            # a statement type the Python binding does not know (e.g. UPDATE EXTENSIONS)
            raise _refuse(f"the {_first_word(text)} statement", text) from None

    def _check_functions(self, text: str, query: str) -> None:
        try:
            ((serialised,),) = self._con.sql("SELECT json_serialize_sql($1)", params=[text]).fetchall()
            tree = json.loads(serialised)
        except Exception:  # pragma: no cover - the parser accepted the text above
            return
        if tree.get("error"):
            # not serialisable (a few exotic SELECT forms); external access is off anyway
            return
        denied = sorted(n for n in _function_names(tree, set()) if _DENIED_FUNCTIONS.search(n))
        if denied:
            raise _refuse(f"a query using {', '.join(f'{n}()' for n in denied)}", query)

    # ------------------------------------------------------------ running

    def run(self, query: str, *, limit: Optional[int] = DEFAULT_LIMIT,
            timeout_s: Optional[float] = DEFAULT_TIMEOUT_S) -> SqlResult:
        """Run one read-only query; at most ``limit`` rows (``None``: all), interrupted after ``timeout_s``."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise SqlError(f"limit={limit!r} must be a non-negative integer or None")
        if timeout_s is not None and (isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float))
                                      or not timeout_s > 0):
            raise SqlError(f"timeout_s={timeout_s!r} must be a positive number of seconds or None")
        with self._lock:  # one query at a time on this connection
            if self._con is None:
                raise SqlError("this SQL session is closed")
            text = self.check(query)
            return self._run_checked(text, query, limit, timeout_s)

    def _run_checked(self, text: str, query: str, limit: Optional[int], timeout_s: Optional[float]) -> SqlResult:
        con = self._con
        state = {"active": True, "fired": False}
        guard = threading.Lock()

        def interrupt():
            with guard:
                if state["active"]:
                    state["fired"] = True
                    con.interrupt()

        timer = None
        if timeout_s is not None:
            timer = threading.Timer(timeout_s, interrupt)
            timer.daemon = True
            timer.start()
        batches: List[pa.RecordBatch] = []
        truncated = False
        reader = None
        try:
            rel = con.sql(text)
            if rel is None:  # pragma: no cover - a SELECT always returns rows
                raise SqlError(f"the query returned no result set. Query: {query.strip()!r}")
            want = None if limit is None else limit + 1  # one more row tells whether there were more
            # a streaming reader: rows are produced as they are read, so a limit stops the work early
            to_reader = getattr(rel, "to_arrow_reader", None) or rel.fetch_arrow_reader
            reader = to_reader(min(want, 65536) if want else 65536)
            schema = reader.schema
            got = 0
            while want is None or got < want:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
                if want is not None and got + batch.num_rows > want:
                    batch = batch.slice(0, want - got)
                batches.append(batch)
                got += batch.num_rows
            if limit is not None and got > limit:
                truncated = True
        except SqlError:
            raise
        except Exception as exc:
            if state["fired"]:
                raise SqlError(
                    f"the query exceeded the time limit of {timeout_s:g} s and was interrupted. "
                    f"Query: {query.strip()!r}"
                ) from None
            raise _failed(exc, query) from None
        finally:
            with guard:
                state["active"] = False
            if timer is not None:
                timer.cancel()
            if reader is not None:
                try:
                    reader.close()
                except Exception:  # pragma: no cover
                    pass
        table = pa.Table.from_batches(batches, schema=schema)
        if truncated:
            table = table.slice(0, limit)
        table = table.combine_chunks() if table.num_columns else table
        meta = dict(table.schema.metadata or {})
        meta[META_TRUNCATED] = b"true" if truncated else b"false"
        meta[META_LIMIT] = b"" if limit is None else str(limit).encode()
        return SqlResult(table=table.replace_schema_metadata(meta), truncated=truncated, limit=limit)

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None  # type: ignore[assignment]

    def __enter__(self) -> "SqlSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_sql(store: "Store", query: str, *, limit: Optional[int] = DEFAULT_LIMIT,
            timeout_s: Optional[float] = DEFAULT_TIMEOUT_S, version: Version = None) -> pa.Table:
    """Run one read-only SQL query over the store; returns at most ``limit`` rows as an Arrow table.

    Whether rows were left out is in the schema metadata (see :func:`is_truncated`).
    Raises :class:`~rsembed_store.errors.SqlError` for refused, malformed, failed
    or timed-out queries.
    """
    return sql_result(store, query, limit=limit, timeout_s=timeout_s, version=version).table


def sql_result(store: "Store", query: str, *, limit: Optional[int] = DEFAULT_LIMIT,
               timeout_s: Optional[float] = DEFAULT_TIMEOUT_S, version: Version = None) -> SqlResult:
    """Like :func:`run_sql`, returning a :class:`SqlResult` (table, truncated, limit)."""
    with SqlSession(store, version=version) as session:
        return session.run(query, limit=limit, timeout_s=timeout_s)
