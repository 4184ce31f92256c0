"""What a report records about the machine and the code it ran on.

Benchmarks mean little without the machine: cores, memory, CPU model, the
versions of every library compared, the git commit, and the load average when
the run started and ended (the figures are only as quiet as the machine was).
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIBRARIES = ("lancedb", "pylance", "duckdb", "faiss-cpu", "numpy", "pyarrow", "h3", "rasterio")


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
    """The 1, 5 and 15-minute load averages (empty where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def versions() -> Dict[str, Optional[str]]:
    """Installed version of each compared library, ``None`` when it is not installed."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> Optional[str]:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def machine() -> dict:
    """Cores, CPU model, memory, Python, library versions, commit and the load at the start."""
    mem = _first_value("/proc/meminfo", "MemTotal")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _first_value("/proc/cpuinfo", "model name") or platform.processor() or "",
        "mem_total_gib": round(int(mem.split()[0]) / 1024**2, 1) if mem else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions(),
        "commit": git_commit(),
        "loadavg_start": loadavg(),
    }


def rss_bytes() -> int:
    """Resident memory of this process now (``/proc/self/statm``; 0 where it does not exist)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
