"""Landsat and HLS product families, declared up front: band tables, file names, scaling, QA.

Each sensor numbers its bands its own way (Landsat 7's ``B4`` is near infrared,
Landsat 8's ``B4`` is red), so requests name bands by their common name
(``blue green red nir swir16 swir22``, the STAC ``eo:common_name`` spelling) and
each :class:`Sensor` maps a common name to the file suffix that holds it. A
:class:`Family` groups the sensors one local collection may hold (a Landsat
Collection 2 Level-2 folder may mix Landsat 7, 8 and 9 scenes) and says how its
files are named, how stored numbers become physical values, and which pixels its
quality band rejects. Nothing here touches a file.

Families (local collection names):

* ``landsat-c2-l2``: Collection 2 Level-2 surface reflectance, ``<product id>_SR_B4.TIF``;
  reflectance = DN x 0.0000275 - 0.2; ``QA_PIXEL`` bits 0-4 (fill, dilated cloud,
  cirrus, cloud, cloud shadow) mask a pixel.
* ``landsat-l1``: Collection 1 or 2 Level-1, ``<product id>_B4.TIF`` with the
  ``<product id>_MTL.txt``; top-of-atmosphere reflectance corrected for the sun
  elevation = (DN x REFLECTANCE_MULT + REFLECTANCE_ADD) / sin(SUN_ELEVATION) from the
  MTL (thermal bands: radiance, DN x RADIANCE_MULT + RADIANCE_ADD). Collection 1
  ``BQA``: designated fill, the cloud bit, high-confidence cloud shadow or cirrus mask
  a pixel; Collection 2 ``QA_PIXEL`` as above.
* ``hls-s30``, ``hls-l30``, ``hls``: HLS v2.0 per-band COGs
  ``HLS.S30.T32UMB.2020123T103021.v2.0.B04.tif``; reflectance = DN x 0.0001;
  ``Fmask`` bits 1-3 (cloud, adjacent to cloud or shadow, cloud shadow) and the
  fill value 255 mask a pixel. ``hls`` holds both and reads either with the same
  common names (HLS's ``nir`` is the narrow NIR: S30 ``B8A``, L30 ``B05``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ...errors import ProviderError

COMMON_NAMES = ("coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir_broad",
                "water_vapor", "swir16", "swir22", "pan", "cirrus", "lwir", "lwir_high", "lwir11", "lwir12")

# synonyms users type -> common name
_SYNONYMS = {"coastal_aerosol": "coastal", "nir08": "nir", "swir1": "swir16", "swir2": "swir22",
             "thermal": "lwir11", "tir1": "lwir11", "tir2": "lwir12"}


@dataclass(frozen=True)
class QaRule:
    """Which quality-band values reject a pixel.

    A pixel is rejected when any bit of ``any_bits`` is set, when a ``(shift, width,
    least_bad)`` bit field is ``>= least_bad``, or when the value is one of ``fill``.
    """

    band: str  # the file suffix of the quality band: QA_PIXEL, BQA, Fmask
    any_bits: int = 0
    fields: Tuple[Tuple[int, int, int], ...] = ()
    fill: Tuple[int, ...] = ()
    description: str = ""

    def reject(self, qa):
        """Boolean array: True where ``qa`` (an integer-valued array) rejects the pixel."""
        import numpy as np

        q = np.asarray(qa).astype(np.int64)
        bad = (q & self.any_bits) != 0
        for shift, width, least in self.fields:
            bad |= ((q >> shift) & ((1 << width) - 1)) >= least
        for value in self.fill:
            bad |= q == value
        return bad


QA_PIXEL = QaRule("QA_PIXEL", any_bits=0b11111,
                  description="QA_PIXEL bits 0-4: fill, dilated cloud, cirrus, cloud, cloud shadow")
BQA_C1 = QaRule("BQA", any_bits=0b1 | 0b10000, fields=((7, 2, 3), (11, 2, 3)),
                description="C1 BQA: designated fill (bit 0), cloud (bit 4), cloud shadow or cirrus confidence high")
FMASK = QaRule("Fmask", any_bits=0b1110, fill=(255,),
               description="HLS Fmask bits 1-3: cloud, adjacent to cloud/shadow, cloud shadow; 255 = fill")


@dataclass(frozen=True)
class Sensor:
    """One instrument's bands: common name -> the suffix of the file that holds it."""

    name: str
    title: str
    bands: Mapping[str, str]

    def native(self, common: str) -> Optional[str]:
        return self.bands.get(common)

    def common(self, native: str) -> Optional[str]:
        key = _norm_native(native)
        for common, suffix in self.bands.items():
            if _norm_native(suffix) == key:
                return common
        return None


def _norm_native(name: str) -> str:
    """``b04``/``B4``/``SR_B04`` -> ``B4``/``SR_B4``: upper case, no zero padding in band numbers."""
    return re.sub(r"B0+(\d)", r"B\1", str(name).strip().upper())


# ------------------------------------------------------------------ Landsat

_TM_L1 = {"blue": "B1", "green": "B2", "red": "B3", "nir": "B4", "swir16": "B5", "lwir": "B6", "swir22": "B7"}
_ETM_L1 = {"blue": "B1", "green": "B2", "red": "B3", "nir": "B4", "swir16": "B5", "lwir": "B6_VCID_1",
           "lwir_high": "B6_VCID_2", "swir22": "B7", "pan": "B8"}
_OLI_L1 = {"coastal": "B1", "blue": "B2", "green": "B3", "red": "B4", "nir": "B5", "swir16": "B6",
           "swir22": "B7", "pan": "B8", "cirrus": "B9", "lwir11": "B10", "lwir12": "B11"}
_TM_L2 = {"blue": "SR_B1", "green": "SR_B2", "red": "SR_B3", "nir": "SR_B4", "swir16": "SR_B5",
          "swir22": "SR_B7", "lwir": "ST_B6"}
_OLI_L2 = {"coastal": "SR_B1", "blue": "SR_B2", "green": "SR_B3", "red": "SR_B4", "nir": "SR_B5",
           "swir16": "SR_B6", "swir22": "SR_B7", "lwir11": "ST_B10"}

TM_L1 = Sensor("tm", "Landsat 4/5 TM", _TM_L1)
ETM_L1 = Sensor("etm", "Landsat 7 ETM+", _ETM_L1)
OLI_L1 = Sensor("oli", "Landsat 8/9 OLI/TIRS", _OLI_L1)
TM_L2 = Sensor("tm", "Landsat 4/5 TM", _TM_L2)
ETM_L2 = Sensor("etm", "Landsat 7 ETM+", _TM_L2)  # the L2 SR bands of ETM+ are numbered as TM's
OLI_L2 = Sensor("oli", "Landsat 8/9 OLI/TIRS", _OLI_L2)

HLS_S30 = Sensor("s30", "HLS S30 (Sentinel-2 MSI)", {
    "coastal": "B01", "blue": "B02", "green": "B03", "red": "B04", "rededge1": "B05", "rededge2": "B06",
    "rededge3": "B07", "nir_broad": "B08", "nir": "B8A", "water_vapor": "B09", "cirrus": "B10",
    "swir16": "B11", "swir22": "B12"})
HLS_L30 = Sensor("l30", "HLS L30 (Landsat 8/9 OLI)", {
    "coastal": "B01", "blue": "B02", "green": "B03", "red": "B04", "nir": "B05", "swir16": "B06",
    "swir22": "B07", "cirrus": "B09", "lwir11": "B10", "lwir12": "B11"})

LANDSAT_SR_SCALE, LANDSAT_SR_OFFSET = 2.75e-05, -0.2
LANDSAT_ST_SCALE, LANDSAT_ST_OFFSET = 0.00341802, 149.0  # Kelvin
HLS_SCALE = 1e-4

_LANDSAT_ID = re.compile(
    r"^(?P<pid>(?P<mission>L[CEOT]0[1-9])_(?P<level>L1TP|L1GT|L1GS|L2SP|L2SR)_(?P<pathrow>\d{6})_"
    r"(?P<date>\d{8})_(?P<processed>\d{8})_(?P<collection>\d{2})_(?P<tier>T1|T2|RT))_(?P<suffix>.+)$",
    re.IGNORECASE,
)
_HLS_ID = re.compile(
    r"^(?P<pid>HLS\.(?P<product>[SL]30)\.T(?P<tile>\w{5})\.(?P<year>\d{4})(?P<doy>\d{3})T(?P<time>\d{6})"
    r"\.v(?P<version>\d+\.\d+))\.(?P<suffix>\w+)$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ProductFile:
    """What a file name says: product id, sensor, acquisition date, the band suffix."""

    product_id: str
    sensor: Sensor
    acquired: date
    suffix: str  # B4, SR_B4, QA_PIXEL, BQA, MTL, Fmask, B8A
    collection_number: int  # Landsat 1 or 2; HLS 0


@dataclass(frozen=True)
class Family:
    """A local collection of Landsat or HLS products."""

    name: str
    title: str
    kind: str  # "landsat-l1" | "landsat-l2" | "hls"
    sensors: Tuple[Sensor, ...]
    scale_note: str

    def parse(self, stem: str) -> Optional[ProductFile]:
        """The product file a file name (without extension) is, or None when it is not one of ours."""
        if self.kind == "hls":
            m = _HLS_ID.match(stem)
            if not m:
                return None
            sensor = HLS_S30 if m["product"].upper() == "S30" else HLS_L30
            if sensor not in self.sensors:
                return None
            when = date(int(m["year"]), 1, 1) + timedelta(days=int(m["doy"]) - 1)
            return ProductFile(m["pid"], sensor, when, m["suffix"], 0)
        m = _LANDSAT_ID.match(stem)
        if not m:
            return None
        level = m["level"].upper()
        if (self.kind == "landsat-l2") != level.startswith("L2"):
            return None
        mission = m["mission"].upper()  # LC08, LO09, LT08 (TIRS only) -> OLI; LE07 -> ETM+; LT04/LT05 -> TM
        if mission[1] in "CO" or int(mission[2:]) >= 8:
            sensor = self.sensors[2]
        elif mission[1] == "E":
            sensor = self.sensors[1]
        else:
            sensor = self.sensors[0]
        d = m["date"]
        return ProductFile(m["pid"], sensor, date(int(d[:4]), int(d[4:6]), int(d[6:8])), m["suffix"],
                           int(m["collection"]))

    def qa_rule(self, pf: ProductFile) -> QaRule:
        if self.kind == "hls":
            return FMASK
        return BQA_C1 if pf.collection_number == 1 else QA_PIXEL

    def resolve(self, requested: Sequence[str]) -> List[str]:
        """Requested band names -> common names, the same for every sensor of the family.

        A common name (or synonym) is accepted when at least one sensor has it; a native
        name (``B4``, ``SR_B4``, ``B8A``) only when it means the same band on every
        sensor of the family that has it, since ``B4`` is red on OLI and NIR on ETM+.
        """
        out = []
        for name in requested:
            text = str(name).strip()
            low = _SYNONYMS.get(text.lower(), text.lower())
            if any(low in s.bands for s in self.sensors):
                out.append(low)
                continue
            meanings = {s.title: s.common(text) for s in self.sensors if s.common(text)}
            if len(set(meanings.values())) == 1:
                out.append(next(iter(meanings.values())))
                continue
            accepted = sorted({c for s in self.sensors for c in s.bands})
            if meanings:
                said = ", ".join(f"{v} on {k}" for k, v in meanings.items())
                raise ProviderError(
                    f"band {name!r} is ambiguous in collection {self.name!r}: it is {said}; name it by its "
                    f"common name, one of {accepted}"
                )
            raise ProviderError(
                f"collection {self.name!r} ({self.title}) has no band {name!r}; accepted: the common names "
                f"{accepted} or a sensor's own band name ({', '.join(sorted({v for s in self.sensors for v in s.bands.values()}))})"
            )
        return out


FAMILIES: Dict[str, Family] = {
    f.name: f
    for f in (
        Family("landsat-c2-l2", "Landsat 4-9 Collection 2 Level-2 surface reflectance", "landsat-l2",
               (TM_L2, ETM_L2, OLI_L2), "reflectance = DN x 0.0000275 - 0.2 (ST: DN x 0.00341802 + 149 K)"),
        Family("landsat-l1", "Landsat 4-9 Collection 1/2 Level-1", "landsat-l1", (TM_L1, ETM_L1, OLI_L1),
               "TOA reflectance = (DN x REFLECTANCE_MULT + REFLECTANCE_ADD) / sin(SUN_ELEVATION), from the MTL"),
        Family("hls-s30", "HLS v2.0 S30 (Sentinel-2)", "hls", (HLS_S30,), "reflectance = DN x 0.0001"),
        Family("hls-l30", "HLS v2.0 L30 (Landsat 8/9)", "hls", (HLS_L30,), "reflectance = DN x 0.0001"),
        Family("hls", "HLS v2.0 S30 and L30", "hls", (HLS_S30, HLS_L30), "reflectance = DN x 0.0001"),
    )
}


# the Earth Engine provider's per-mission names read the same band vocabulary
FAMILY_ALIASES = {"landsat7-l2": "landsat-c2-l2", "landsat8-l2": "landsat-c2-l2", "landsat9-l2": "landsat-c2-l2",
                  "landsat7-l1": "landsat-l1", "landsat8-l1": "landsat-l1", "landsat9-l1": "landsat-l1"}


def family(collection: str) -> Optional[Family]:
    """The product family a collection name declares (``landsat-l1``, ``hls``, or a per-mission
    name such as ``landsat8-l2``), or None (a Sentinel-2 style source)."""
    name = str(collection).strip().lower()
    return FAMILIES.get(FAMILY_ALIASES.get(name, name))


# Sentinel-2 band names (the vocabulary the built-in models declare their inputs in) -> common names
S2_COMMON = {"B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1", "B06": "rededge2",
             "B07": "rededge3", "B08": "nir", "B8A": "nir", "B09": "water_vapor", "B10": "cirrus",
             "B11": "swir16", "B12": "swir22"}


def as_common(s2_bands: Sequence[str], fam: Family) -> Tuple[str, ...]:
    """A model's Sentinel-2 band list in the common names of ``fam`` (``B08``/``B8A`` -> ``nir``).

    Raises ProviderError naming the bands no sensor of the family has.
    """
    out = [S2_COMMON.get(str(b).upper(), str(b).lower()) for b in s2_bands]
    missing = [b for b, c in zip(s2_bands, out) if not any(c in s.bands for s in fam.sensors)]
    if missing:
        raise ProviderError(
            f"collection {fam.name!r} ({fam.title}) has no band for {missing} "
            f"(common names {[S2_COMMON.get(str(b).upper(), b) for b in missing]}); it has "
            f"{sorted({c for s in fam.sensors for c in s.bands})}"
        )
    return tuple(out)


def band_positions(have: Sequence[str], wanted: Sequence[str]) -> List[Optional[int]]:
    """Where each ``wanted`` band sits in ``have`` (None: absent), a Sentinel-2 name and its common
    name counting as the same band (``B04`` ~ ``red``, ``B8A`` ~ ``nir``); an exact name wins.

    Two Sentinel-2 names never stand for each other: ``B08`` and ``B8A`` share the common name
    ``nir`` but are different bands, so pixels holding ``B08`` lack ``B8A``. A common name stands
    for the Sentinel-2 band of that name, either way round (a Landsat or HLS read named by common
    names, or a model asking for common names of a Sentinel-2 read)."""
    have = list(have)
    out: List[Optional[int]] = []
    for w in wanted:
        if w in have:
            out.append(have.index(w))
            continue
        w_s2 = str(w).upper() in S2_COMMON
        common = S2_COMMON.get(str(w).upper(), str(w).lower())
        hits = [i for i, h in enumerate(have)
                if not (w_s2 and str(h).upper() in S2_COMMON)
                and S2_COMMON.get(str(h).upper(), str(h).lower()) == common]
        out.append(hits[0] if len(hits) == 1 else None)
    return out


def parse_mtl(text: str) -> Dict[str, str]:
    """``KEY = value`` lines of a Landsat MTL file (groups flattened, quotes dropped)."""
    out: Dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or key in ("GROUP", "END_GROUP"):
            continue
        out.setdefault(key, value.strip().strip('"'))
    return out


__all__ = ["COMMON_NAMES", "FAMILIES", "S2_COMMON", "as_common", "band_positions", "Family", "ProductFile", "QaRule", "Sensor", "family", "parse_mtl"]
