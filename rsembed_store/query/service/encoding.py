"""Answers as JSON (and Arrow): strict JSON values, embeddings and grids as the service returns them."""

import base64
import json
import math
from datetime import date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from typing import Any, Optional

import numpy as np

ARROW_STREAM = "application/vnd.apache.arrow.stream"


def arrow_stream(table) -> bytes:
    """``table`` (a pyarrow Table) as the bytes of one Arrow IPC stream."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()

def jsonable(value: Any) -> Any:
    """``value`` as strict JSON data: NaN/inf become null, numpy and dates become plain values."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (datetime, date, dtime)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return jsonable(float(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if hasattr(value, "to_dict"):
        return jsonable(value.to_dict())
    return str(value)


def dumps(value: Any) -> bytes:
    """``value`` as strict JSON bytes, as :func:`jsonable` would make it, but in one pass through orjson
    (a search answer's rows went through ``jsonable`` and ``json.dumps`` in 0.3 ms, a fifth of a request):
    NaN and inf become null, numpy values and arrays plain values, dates ISO strings."""
    try:
        import orjson
    except ImportError:  # the `serve` extra brings it; without it, the same JSON the slower way
        return json.dumps(jsonable(value), allow_nan=False).encode("utf-8")
    try:
        return orjson.dumps(value, default=_orjson_default,
                            option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits (a DuckDB HUGEINT): Python's json holds it
        return json.dumps(jsonable(value), allow_nan=False).encode("utf-8")


def _orjson_default(value: Any) -> Any:
    """What orjson does not encode itself, as :func:`jsonable` encodes it."""
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, np.ndarray):  # non-native byte order or dtypes orjson refuses
        return jsonable(value.tolist())
    return jsonable(value)


def grid_json(emb, encoding: str) -> Optional[dict]:
    """The grid of a grid answer in the chosen encoding (``None`` for pooled answers).

    ``base64``: the stored bytes exactly (little-endian, C order, ``dtype`` and
    ``codec`` as stored). ``list``: the decoded float32 values as nested lists,
    NaN (no data) as null. ``none``: shape, dtype and codec only.
    """
    if emb.grid is None:
        return None
    raw = np.asarray(emb.grid)
    little = raw.astype(raw.dtype.newbyteorder("<"), copy=False)
    out = {"shape": list(raw.shape), "dtype": little.dtype.name, "codec": emb.grid_codec, "encoding": encoding}
    if encoding == "base64":
        out["data"] = base64.b64encode(np.ascontiguousarray(little).tobytes()).decode("ascii")
    elif encoding == "list":
        out.update(dtype="float32", codec="raw", data=jsonable(emb.grid_f32()))
    return out


def embedding_json(emb, grid_encoding: str = "base64") -> dict:
    """One answer as the service returns it (see docs/http.md, ``POST /embeddings``)."""
    return {
        "key": emb.key,
        "cached": bool(emb.cached),
        "model": emb.model,
        "revision": emb.request.revision,
        "space": emb.space,
        "output": emb.output_mode,
        "dim": emb.dim,
        "vector": jsonable(np.asarray(emb.vector, dtype=np.float32)),
        "request": json.loads(emb.request.canonical),
        "meta": jsonable(emb.meta or {}),
        "compute_s": jsonable(float(emb.compute_s or 0.0)),
        "created_at": emb.created_at.isoformat() if emb.created_at else None,
        "grid": grid_json(emb, grid_encoding),
    }


# ---------------------------------------------------------------- parsing bodies
