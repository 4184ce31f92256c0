"""What every benchmark script records about the machine it ran on."""

from __future__ import annotations

import os
import platform
from typing import List, Optional


def _first_value(path: str, prefix: str) -> Optional[str]:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def loadavg() -> List[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine(**versions) -> dict:
    """Cores, CPU model, memory, Python, the storage libraries, plus any ``versions`` given."""
    import lance
    import lancedb
    import numpy as np
    import pyarrow as pa

    mem = _first_value("/proc/meminfo", "MemTotal")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _first_value("/proc/cpuinfo", "model name") or platform.processor() or "",
        "mem_total_gib": round(int(mem.split()[0]) / 1024**2, 1) if mem else None,
        "python": platform.python_version(),
        "lancedb": lancedb.__version__,
        "pylance": lance.__version__,
        "pyarrow": pa.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "loadavg_start": loadavg(),
        **versions,
    }


def dir_bytes(path: str) -> int:
    """Bytes of every file below ``path``."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total
