"""Band names of the imagery providers: one canonical spelling per Sentinel-2 band.

Files, STAC items and users name the same band differently (``red``, ``b4``,
``B04``, earth-search's ``nir08``). The local catalogue, the rs-embed bridge and the
compatibility layer all compare band names through :func:`canonical_band`, so the
spelling rules live here, outside any one provider.

>>> canonical_band("red"), canonical_band("b8a"), canonical_band("B4")
('B04', 'B8A', 'B04')
"""

from __future__ import annotations

import re
from typing import Dict, Optional

# Sentinel-2 band aliases (earth-search v1 asset keys and common names) -> canonical names.
BAND_ALIASES: Dict[str, str] = {
    "coastal": "B01",
    "coastal_aerosol": "B01",
    "blue": "B02",
    "green": "B03",
    "red": "B04",
    "rededge1": "B05",
    "rededge2": "B06",
    "rededge3": "B07",
    "nir": "B08",
    "nir08": "B8A",
    "nir09": "B09",
    "cirrus": "B10",
    "swir16": "B11",
    "swir22": "B12",
    "scl": "SCL",
    "aot": "AOT",
    "wvp": "WVP",
}
CATEGORICAL_BANDS = frozenset({"SCL"})  # class maps: always resampled with nearest neighbour

_BAND_RE = re.compile(r"^b0?(\d{1,2})(a?)$", re.IGNORECASE)


def canonical_band(name: str) -> str:
    """The canonical spelling of a band name: ``red``/``b4``/``B04`` -> ``B04``; others upper-cased."""
    text = str(name).strip()
    alias = BAND_ALIASES.get(text.lower())
    if alias:
        return alias
    m = _BAND_RE.match(text)
    if m:
        number = int(m.group(1))
        return f"B{number}A" if m.group(2) else f"B{number:02d}"
    return text.upper()


def band_from_stem(stem: str) -> Optional[str]:
    """The band a single-band file is named after (``B04``, ``red``), or None when the name is no band."""
    text = stem.strip()
    if text.lower() in BAND_ALIASES or _BAND_RE.match(text):
        return canonical_band(text)
    return None


__all__ = ["BAND_ALIASES", "CATEGORICAL_BANDS", "band_from_stem", "canonical_band"]
