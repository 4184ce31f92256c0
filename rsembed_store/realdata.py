"""Real Landsat scenes that Debian ships, fetched once into a cache directory.

Debian's ``r-cran-satellite`` package carries real Landsat Collection 1 Level-1
subsets of one place near Marburg, Germany (WRS-2 path 195 row 25) on two dates:
``LE07_L1TP_195025_20010730_20170204_01_T1`` (Landsat 7 ETM+, 30 July 2001) and
``LC08_L1TP_195025_20130707_20170503_01_T1`` (Landsat 8 OLI, 7 July 2013), each
41 x 41 px of 30 m in EPSG:32632 with every band, the quality band ``BQA`` and the
``MTL.txt`` metadata, all in ``usr/lib/R/site-library/satellite/extdata/``.
(The data are USGS Landsat products, public domain; the R package is GPL.)

:func:`debian_landsat` runs ``apt-get download r-cran-satellite`` and
``dpkg -x`` (no R is installed, nothing is installed at all) and returns the
folder. It is what the real-imagery tests and ``rsembed-store demo --real`` use.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

from .errors import RealDataUnavailable

PACKAGE = "r-cran-satellite"
EXTDATA = Path("usr/lib/R/site-library/satellite/extdata")
ENV_CACHE = "RSEMBED_TESTDATA"
LE07 = "LE07_L1TP_195025_20010730_20170204_01_T1"
LC08 = "LC08_L1TP_195025_20130707_20170503_01_T1"


def cache_dir() -> Path:
    """``$RSEMBED_TESTDATA`` or ``~/.cache/rsembed-store/testdata``."""
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rsembed-store" / "testdata"


def _complete(folder: Path) -> bool:
    return all((folder / f"{pid}_{part}").is_file() for pid in (LE07, LC08) for part in ("B4.TIF", "BQA.TIF", "MTL.txt"))


def _run(cmd, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


def debian_landsat(cache: Optional[Path] = None) -> Path:
    """The folder of the two real Landsat scenes, fetched with apt-get on first use.

    Raises :class:`RealDataUnavailable` naming the command that failed and its output
    (``apt-get update`` is tried once first when the download fails and we are root).
    """
    root = Path(cache) if cache is not None else cache_dir()
    target = root / PACKAGE
    folder = target / EXTDATA
    if _complete(folder):
        return folder
    apt, dpkg = shutil.which("apt-get"), shutil.which("dpkg")
    if apt is None or dpkg is None:
        raise RealDataUnavailable(
            f"fetching the real Landsat scenes needs apt-get and dpkg (Debian/Ubuntu); not found on PATH. "
            f"Alternatively unpack the {PACKAGE} .deb into {target}"
        )
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp:
        got = _run([apt, "download", PACKAGE], tmp)
        if got.returncode != 0 and hasattr(os, "geteuid") and os.geteuid() == 0:
            _run([apt, "update"], tmp)
            got = _run([apt, "download", PACKAGE], tmp)
        debs = sorted(Path(tmp).glob(f"{PACKAGE}_*.deb"))
        if got.returncode != 0 or not debs:
            raise RealDataUnavailable(
                f"`apt-get download {PACKAGE}` failed (exit {got.returncode}): "
                f"{(got.stderr or got.stdout).strip()[-500:]}"
            )
        unpacked = Path(tmp) / "x"
        done = _run([dpkg, "-x", str(debs[0]), str(unpacked)], tmp)
        if done.returncode != 0 or not _complete(unpacked / EXTDATA):
            raise RealDataUnavailable(f"`dpkg -x {debs[0].name}` did not yield {EXTDATA}: {done.stderr.strip()[-500:]}")
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(unpacked, target)  # atomic: a concurrent fetch sees all or nothing
        except OSError:
            if not _complete(folder):  # another process won the race with a complete copy, or not
                raise
    return folder


__all__ = ["LC08", "LE07", "RealDataUnavailable", "cache_dir", "debian_landsat"]
