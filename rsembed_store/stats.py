"""What a store holds, per space: the one report behind ``Store.stats()``, ``GET /stats`` and
``rsembed-store stats``.

It reads only through what every reader of a store offers (``uri``, ``spaces()``,
``dataset()``), so the same function runs over the storage core (and the Store facade,
which adds what serves each space through ``_space_extras``) and over the light
:class:`~rsembed_store.lance_reader.LanceReader` that the command line uses to answer
without importing LanceDB (a second or more of start-up).
"""

from __future__ import annotations

from typing import Callable, Optional

import pyarrow.compute as pc


def store_stats(store, extras: Optional[Callable[[str], dict]] = None) -> dict:
    """Per space: rows, pooled/grid rows, versions, bytes, indexes, and ``extras(space)``
    (default: the store's ``_space_extras``).

    ``bytes`` is every file of the space's directory on a local store; on an
    object store (where that would mean listing every object) it is the size
    of the data files of the current version.
    """
    from .sizes import space_bytes

    if extras is None:
        extras = getattr(store, "_space_extras", lambda space: {})
    out = {"uri": store.uri, "spaces": []}
    for s in store.spaces():
        ds = store.dataset(s.space)
        outputs = ds.to_table(columns=["output"]).column("output")
        counts = pc.value_counts(outputs).to_pylist() if len(outputs) else []
        by_mode = {c["values"]: c["counts"] for c in counts}
        out["spaces"].append(
            {
                **s.to_dict(),
                "rows": ds.count_rows(),
                "pooled_rows": int(by_mode.get("pooled", 0)),
                "grid_rows": int(by_mode.get("grid", 0)),
                "version": ds.version,
                "versions": len(ds.versions()),
                "bytes": space_bytes(ds),
                "indices": indices_of(ds),
                **extras(s.space),
            }
        )
    out["total_rows"] = sum(s["rows"] for s in out["spaces"])
    return out


def indices_of(ds) -> list:
    """The indexes of a Lance dataset as ``{"name", "type", "columns"}``, as LanceDB lists them."""
    import warnings

    with warnings.catch_warnings():  # list_indices names the type as LanceDB does ("BTree", "IVF_PQ");
        warnings.simplefilter("ignore", DeprecationWarning)  # describe_indices gives a protobuf URL instead
        listed = ds.list_indices()
    return [{"name": i["name"], "type": i["type"], "columns": list(i.get("fields") or ())} for i in listed]


def serving_summary(serving, space: str) -> dict:
    """Which path serves ``space`` and the memory its tier holds, from a serving-tier manager
    (loads a saved tier; builds no graph)."""
    try:
        serving.view(space, build=False)
    except Exception as exc:  # stats must not fail because a tier could not be read
        return {"path": "lance", "reason": f"the tier could not be loaded: {exc}"}
    return serving.describe(space)
