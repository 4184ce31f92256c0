"""How many bytes a space takes: its directory when local, its current data files on an object store."""

from __future__ import annotations

import os
from typing import Optional


def space_bytes(ds) -> Optional[int]:
    """Bytes of a space: its whole directory when local, else its current data files."""
    uri = ds.uri
    if "://" not in uri or uri.startswith("file://"):
        return dir_bytes(uri[len("file://"):] if uri.startswith("file://") else uri)
    sizes = [d.file_size_bytes for f in ds.get_fragments() for d in f.data_files()]
    return None if any(s is None for s in sizes) else int(sum(sizes))


def dir_bytes(path: str) -> int:
    """Bytes of every file below ``path`` (a local directory)."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total
