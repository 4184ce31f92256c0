"""A small writer and reader of classic NetCDF (CDF-1) files, enough for rs-embed's export layout.

rs-embed writes its ``.nc`` exports with xarray (netCDF4, h5netcdf or scipy); this
store depends on none of them, so it writes the classic format itself: named
dimensions, one variable per array (big-endian, no record dimension) and global
text/int attributes. Every NetCDF reader opens it, xarray's included (that is what
``rs_embed.load_export`` uses). Format: the NetCDF classic format specification
(https://docs.unidata.ucar.edu/netcdf-c/current/file_format_specifications.html).
"""

from __future__ import annotations

import struct
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

_DIMENSION, _VARIABLE, _ATTRIBUTE = 0x0A, 0x0B, 0x0C
_TYPES = {1: ">i1", 2: "S1", 3: ">i2", 4: ">i4", 5: ">f4", 6: ">f8"}
_CODE = {np.dtype("int8"): 1, np.dtype("int16"): 3, np.dtype("int32"): 4, np.dtype("float32"): 5,
         np.dtype("float64"): 6}


def _pad(n: int) -> int:
    return (4 - n % 4) % 4


def _name(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack(">i", len(raw)) + raw + b"\0" * _pad(len(raw))


def _attrs(attrs: Mapping[str, Any]) -> bytes:
    if not attrs:
        return b"\0" * 8
    out = [struct.pack(">ii", _ATTRIBUTE, len(attrs))]
    for key, value in attrs.items():
        if isinstance(value, (bool, np.bool_)):
            value = int(value)
        if isinstance(value, (int, np.integer)):
            out.append(_name(key) + struct.pack(">iii", 4, 1, int(value)))
        elif isinstance(value, (float, np.floating)):
            out.append(_name(key) + struct.pack(">iid", 6, 1, float(value)))
        else:
            raw = str(value).encode("utf-8")
            out.append(_name(key) + struct.pack(">ii", 2, len(raw)) + raw + b"\0" * _pad(len(raw)))
    return b"".join(out)


def header(variables: Mapping[str, Tuple[Sequence[str], Sequence[int], Any]], attrs: Mapping[str, Any]) -> bytes:
    """The header of a classic NetCDF file holding ``{name: (dims, shape, dtype)}``, data laid out
    after it in that order (each variable's bytes big-endian, padded to 4 bytes).

    Split from :func:`write` so a caller can stream the data of a large variable after it
    (``rsembed_store.io`` exports vectors batch by batch this way)."""
    dims: Dict[str, int] = {}
    specs: List[Tuple[str, List[int], int, int]] = []  # name, dim ids, type code, byte size
    for name, (vdims, shape, dtype) in variables.items():
        dtype = np.dtype(dtype)
        if dtype not in _CODE:
            raise ValueError(f"variable {name!r} has dtype {dtype}; classic NetCDF holds {sorted(map(str, _CODE))}")
        ids = []
        for d, size in zip(vdims, shape):
            if dims.setdefault(d, int(size)) != int(size):
                raise ValueError(f"dimension {d!r} has size {dims[d]}, variable {name!r} gives it {size}")
            ids.append(list(dims).index(d))
        specs.append((name, ids, _CODE[dtype], int(np.prod(shape, dtype=np.int64)) * dtype.itemsize))
    head = [b"CDF\x01", struct.pack(">i", 0)]
    if dims:
        head.append(struct.pack(">ii", _DIMENSION, len(dims)))
        head += [_name(d) + struct.pack(">i", n) for d, n in dims.items()]
    else:
        head.append(b"\0" * 8)
    head.append(_attrs(attrs))

    # variable entries end with a 4-byte offset: measure the header with placeholder offsets first
    def var_list(offsets: List[int]) -> bytes:
        if not specs:
            return b"\0" * 8
        parts = [struct.pack(">ii", _VARIABLE, len(specs))]
        for (name, ids, code, nbytes), begin in zip(specs, offsets):
            parts.append(_name(name) + struct.pack(">i", len(ids)) + b"".join(struct.pack(">i", i) for i in ids)
                         + b"\0" * 8 + struct.pack(">iii", code, nbytes + _pad(nbytes), begin))
        return b"".join(parts)

    prefix = b"".join(head)
    offsets, pos = [], len(prefix) + len(var_list([0] * len(specs)))
    for *_, nbytes in specs:
        offsets.append(pos)
        pos += nbytes + _pad(nbytes)
    if pos >= 2**31:
        raise ValueError("the classic NetCDF format holds at most 2 GiB; export fewer items per file")
    return prefix + var_list(offsets)


def write(path: str, variables: Mapping[str, Tuple[Sequence[str], np.ndarray]], attrs: Mapping[str, Any]) -> None:
    """Write ``{name: (dims, array)}`` and global ``attrs`` as a classic NetCDF file at ``path``."""
    arrays = {}
    for name, (vdims, arr) in variables.items():
        arr = np.asarray(arr)
        arrays[name] = (vdims, arr if arr.dtype in _CODE else arr.astype(np.float32))
    head = header({k: (d, a.shape, a.dtype) for k, (d, a) in arrays.items()}, attrs)
    with open(path, "wb") as fh:
        fh.write(head)
        for _, arr in arrays.values():
            raw = arr.astype(arr.dtype.newbyteorder(">"), copy=False).tobytes(order="C")
            fh.write(raw + b"\0" * _pad(len(raw)))


def read(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """The variables (as native-endian arrays) and global attributes of a classic NetCDF file."""
    with open(path, "rb") as fh:
        buf = fh.read()
    if buf[:4] not in (b"CDF\x01", b"CDF\x02"):
        raise ValueError(f"{path!r} is not a classic NetCDF file (it may be NetCDF-4/HDF5: read it with xarray)")
    offset64 = buf[3] == 2
    pos = 8

    def i32():
        nonlocal pos
        (v,) = struct.unpack_from(">i", buf, pos)
        pos += 4
        return v

    def name():
        nonlocal pos
        n = i32()
        text = buf[pos:pos + n].decode("utf-8")
        pos += n + _pad(n)
        return text

    def attr_list():
        nonlocal pos
        tag, n = i32(), i32()
        out = {}
        for _ in range(n if tag == _ATTRIBUTE else 0):
            key, code, count = name(), i32(), i32()
            dtype = np.dtype(_TYPES[code])
            raw = buf[pos:pos + count * dtype.itemsize]
            pos += len(raw) + _pad(len(raw))
            out[key] = raw.decode("utf-8") if code == 2 else (np.frombuffer(raw, dtype)[0].item() if count == 1
                                                               else np.frombuffer(raw, dtype).tolist())
        return out

    tag, n = i32(), i32()
    dims = [(name(), i32()) for _ in range(n if tag == _DIMENSION else 0)]
    attrs = attr_list()
    tag, n = i32(), i32()
    variables = {}
    for _ in range(n if tag == _VARIABLE else 0):
        vname = name()
        ids = [i32() for _ in range(i32())]
        attr_list()
        code, _vsize = i32(), i32()
        if offset64:
            (begin,) = struct.unpack_from(">q", buf, pos)
            pos += 8
        else:
            begin = i32()
        shape = tuple(dims[i][1] for i in ids)
        dtype = np.dtype(_TYPES[code])
        count = int(np.prod(shape)) if shape else 1
        variables[vname] = np.frombuffer(buf, dtype, count, begin).reshape(shape).astype(dtype.newbyteorder("="))
    return variables, attrs
