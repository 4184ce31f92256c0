"""The Earth Engine collections the ``gee`` provider knows, declared up front.

Each :class:`Collection` says everything the provider needs to turn a
``SensorSpec`` into an Earth Engine request: the collection id, the scene-level
cloud property (Sentinel-2 and Landsat spell it differently; radar has none), the
bands with the scale and offset that turn stored numbers into physical values,
the band aliases users type (``red``, ``B04``, ``nir``), and for Sentinel-1 the
metadata filters (IW mode, polarisations, orbit pass).

``SensorSpec.collection`` is looked up by short name (``s2-l2a``) or by the Earth
Engine id itself (``COPERNICUS/S2_SR_HARMONIZED``). More collections can be declared
in the provider configuration (``{"collections": {name: {...}}}``, see
:meth:`Collection.from_dict`). Nothing here imports ``ee``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from ...errors import ProviderError


@dataclass(frozen=True)
class Band:
    """One band: physical value = stored value * ``scale`` + ``offset``.

    ``categorical`` bands (scene classes, QA bit fields) are never interpolated
    and never scaled.
    """

    name: str
    scale: float = 1.0
    offset: float = 0.0
    categorical: bool = False


@dataclass(frozen=True)
class Collection:
    """A declared Earth Engine image collection."""

    name: str
    id: str
    bands: Tuple[Band, ...]
    aliases: Mapping[str, str] = field(default_factory=dict)  # lower-case alias -> band name
    cloud_property: Optional[str] = None  # scene cloud %, filtered with <= SensorSpec.cloudy_pct
    band_pattern: Optional[Tuple[str, str]] = None  # (regex on the lower-cased name, format of the band)
    instrument_mode: Optional[str] = None  # Sentinel-1: instrumentMode
    orbit_pass: Optional[str] = None  # Sentinel-1: orbitProperties_pass, ASCENDING | DESCENDING
    polarisation_property: Optional[str] = None  # Sentinel-1: transmitterReceiverPolarisation
    description: str = ""
    qa: Optional[Tuple[str, int]] = None  # (quality band, bits): a pixel with any of the bits set is masked
    members: Tuple["Collection", ...] = ()  # a merged collection (hls): read from each member, then merged

    def band(self, name: str) -> Band:
        for b in self.bands:
            if b.name == name:
                return b
        raise KeyError(name)

    @property
    def band_names(self) -> Tuple[str, ...]:
        return tuple(b.name for b in self.bands)

    def resolve_band(self, requested: str) -> Band:
        """The band a requested name means: exact (any case), an alias, or the numbered pattern.

        >>> S2_L2A.resolve_band("B04").name, S2_L2A.resolve_band("red").name
        ('B4', 'B4')
        """
        text = str(requested).strip()
        if self.members:
            meant = {m.name: m.aliases.get(text.lower()) for m in self.members}
            if all(meant.values()):
                return self.members[0].resolve_band(text)
            raise ProviderError(
                f"collection {self.name!r} merges {[m.name for m in self.members]}, whose own band numbers differ; "
                f"name band {requested!r} by a common name every member has: "
                f"{sorted(set.intersection(*(set(m.aliases) for m in self.members)))}"
            )
        by_upper = {b.name.upper(): b for b in self.bands}
        if text.upper() in by_upper:
            return by_upper[text.upper()]
        alias = self.aliases.get(text.lower())
        if alias is not None:
            return self.band(alias)
        if self.band_pattern is not None:
            m = re.fullmatch(self.band_pattern[0], text.lower())
            if m:
                candidate = self.band_pattern[1].format(int(m.group(1)), (m.group(2) or "").upper())
                if candidate.upper() in by_upper:
                    return by_upper[candidate.upper()]
        raise ProviderError(
            f"collection {self.name!r} ({self.id}) has no band {requested!r}; accepted: "
            f"{list(self.band_names)} or the aliases {sorted(self.aliases)}"
        )

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> "Collection":
        """A collection declared in configuration::

            {"id": "LANDSAT/LE07/C02/T1_L2", "cloud_property": "CLOUD_COVER",
             "bands": {"SR_B3": {"scale": 2.75e-05, "offset": -0.2}, "QA_PIXEL": {"categorical": true}},
             "aliases": {"red": "SR_B3"}, "qa": {"band": "QA_PIXEL", "bits": 31}}

        ``bands`` may also be a plain list of names (scale 1, offset 0); ``qa`` (optional) masks
        every pixel whose quality band has any of ``bits`` set.
        """
        if not isinstance(data, Mapping) or not isinstance(data.get("id"), str):
            raise ProviderError(
                f"gee collection {name!r} must be declared as an object with at least an 'id' "
                f"(an Earth Engine ImageCollection id) and 'bands'; got {data!r}"
            )
        raw = data.get("bands")
        bands = []
        if isinstance(raw, Mapping):
            for band, spec in raw.items():
                spec = dict(spec or {})
                unknown = sorted(set(spec) - {"scale", "offset", "categorical"})
                if unknown:
                    raise ProviderError(f"gee collection {name!r} band {band!r} has unknown field(s) {unknown}")
                bands.append(Band(str(band), float(spec.get("scale", 1.0)), float(spec.get("offset", 0.0)),
                                  bool(spec.get("categorical", False))))
        elif isinstance(raw, Sequence) and not isinstance(raw, str):
            bands = [Band(str(b)) for b in raw]
        if not bands:
            raise ProviderError(f"gee collection {name!r} declares no bands; give 'bands': {{name: {{scale, offset}}}}")
        aliases = {str(k).lower(): str(v) for k, v in dict(data.get("aliases") or {}).items()}
        known = {b.name for b in bands}
        bad = sorted(v for v in aliases.values() if v not in known)
        if bad:
            raise ProviderError(f"gee collection {name!r} has aliases to undeclared bands {bad}; declared: {sorted(known)}")
        qa = data.get("qa")
        if qa is not None:
            if not (isinstance(qa, Mapping) and isinstance(qa.get("band"), str) and isinstance(qa.get("bits"), int)):
                raise ProviderError(
                    f"gee collection {name!r} has qa={qa!r}; give {{'band': 'QA_PIXEL', 'bits': 31}} (a pixel "
                    "with any of the bits set is masked)"
                )
            qa = (qa["band"], int(qa["bits"]))
        return cls(
            qa=qa,
            name=name,
            id=data["id"],
            bands=tuple(bands),
            aliases=aliases,
            cloud_property=data.get("cloud_property"),
            instrument_mode=data.get("instrument_mode"),
            orbit_pass=data.get("orbit_pass"),
            polarisation_property=data.get("polarisation_property"),
            description=str(data.get("description", "")),
        )


# ------------------------------------------------------------------ Sentinel-2

_S2_ALIASES = {
    "coastal": "B1", "coastal_aerosol": "B1", "aerosol": "B1",
    "blue": "B2", "green": "B3", "red": "B4",
    "rededge1": "B5", "rededge2": "B6", "rededge3": "B7", "re1": "B5", "re2": "B6", "re3": "B7",
    "nir": "B8", "nir08": "B8A", "rededge4": "B8A", "nir09": "B9", "water_vapour": "B9",
    "swir16": "B11", "swir1": "B11", "swir22": "B12", "swir2": "B12",
    "scl": "SCL", "qa60": "QA60",
}
_S2_PATTERN = (r"b0?(\d{1,2})(a?)", "B{0}{1}")  # B04 / b4 -> B4, B08A / b8a -> B8A
_S2_REFLECTANCE = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")

S2_L2A = Collection(
    name="s2-l2a",
    id="COPERNICUS/S2_SR_HARMONIZED",
    bands=tuple(Band(b, 1e-4) for b in _S2_REFLECTANCE)
    + (Band("AOT", 1e-3), Band("WVP", 1e-3), Band("SCL", categorical=True),
       Band("MSK_CLDPRB", categorical=True), Band("QA60", categorical=True)),
    aliases=_S2_ALIASES,
    cloud_property="CLOUDY_PIXEL_PERCENTAGE",
    band_pattern=_S2_PATTERN,
    description="Sentinel-2 MSI Level-2A surface reflectance (harmonized: 0..1 = DN * 1e-4)",
)

S2_L1C = Collection(
    name="s2-l1c",
    id="COPERNICUS/S2_HARMONIZED",
    bands=tuple(Band(b, 1e-4) for b in _S2_REFLECTANCE + ("B10",)) + (Band("QA60", categorical=True),),
    aliases={k: v for k, v in _S2_ALIASES.items() if v not in ("SCL",)} | {"cirrus": "B10"},
    cloud_property="CLOUDY_PIXEL_PERCENTAGE",
    band_pattern=_S2_PATTERN,
    description="Sentinel-2 MSI Level-1C top-of-atmosphere reflectance (harmonized: DN * 1e-4)",
)

# ------------------------------------------------------------------ Landsat 8/9 Collection 2 Level 2

_LANDSAT_SR_SCALE, _LANDSAT_SR_OFFSET = 2.75e-05, -0.2
_QA_PIXEL = ("QA_PIXEL", 0b11111)  # fill, dilated cloud, cirrus, cloud, cloud shadow
_LANDSAT_ST_SCALE, _LANDSAT_ST_OFFSET = 0.00341802, 149.0  # Kelvin
_OLI_BANDS = tuple(Band(f"SR_B{i}", _LANDSAT_SR_SCALE, _LANDSAT_SR_OFFSET) for i in range(1, 8)) + (
    Band("ST_B10", _LANDSAT_ST_SCALE, _LANDSAT_ST_OFFSET),
    Band("QA_PIXEL", categorical=True),
    Band("QA_RADSAT", categorical=True),
)
_OLI_ALIASES = {
    "coastal": "SR_B1", "blue": "SR_B2", "green": "SR_B3", "red": "SR_B4", "nir": "SR_B5", "nir08": "SR_B5",
    "swir1": "SR_B6", "swir16": "SR_B6", "swir2": "SR_B7", "swir22": "SR_B7",
    "thermal": "ST_B10", "lwir": "ST_B10", "lwir11": "ST_B10", "b10": "ST_B10", "qa": "QA_PIXEL",
}
_OLI_PATTERN = (r"(?:sr_)?b0?([1-7])()", "SR_B{0}")  # Landsat numbering: B4 / B04 / SR_B4 -> SR_B4 (red)

LANDSAT8_L2 = Collection(
    name="landsat8-l2",
    id="LANDSAT/LC08/C02/T1_L2",
    bands=_OLI_BANDS,
    aliases=_OLI_ALIASES,
    cloud_property="CLOUD_COVER",
    band_pattern=_OLI_PATTERN,
    description="Landsat 8 OLI/TIRS Collection 2 Tier 1 Level-2 (SR: DN * 2.75e-5 - 0.2; ST in K)",
    # no pixel mask: answers stored before masking existed carry this collection's keys, and a key must
    # keep meaning one computation (the QA_PIXEL band can be requested and masked downstream)
)
LANDSAT9_L2 = Collection(
    name="landsat9-l2",
    id="LANDSAT/LC09/C02/T1_L2",
    bands=_OLI_BANDS,
    aliases=_OLI_ALIASES,
    cloud_property="CLOUD_COVER",
    band_pattern=_OLI_PATTERN,
    description="Landsat 9 OLI-2/TIRS-2 Collection 2 Tier 1 Level-2 (as Landsat 8)",
    # unmasked, as landsat8-l2: its keys predate pixel masking
)

_L7_L2_BANDS = tuple(Band(f"SR_B{i}", _LANDSAT_SR_SCALE, _LANDSAT_SR_OFFSET) for i in (1, 2, 3, 4, 5, 7)) + (
    Band("ST_B6", _LANDSAT_ST_SCALE, _LANDSAT_ST_OFFSET),
    Band("QA_PIXEL", categorical=True),
    Band("QA_RADSAT", categorical=True),
)
_L7_L2_ALIASES = {
    "blue": "SR_B1", "green": "SR_B2", "red": "SR_B3", "nir": "SR_B4", "nir08": "SR_B4",
    "swir1": "SR_B5", "swir16": "SR_B5", "swir2": "SR_B7", "swir22": "SR_B7",
    "thermal": "ST_B6", "lwir": "ST_B6", "qa": "QA_PIXEL",
}

LANDSAT7_L2 = Collection(
    name="landsat7-l2",
    id="LANDSAT/LE07/C02/T1_L2",
    bands=_L7_L2_BANDS,
    aliases=_L7_L2_ALIASES,
    cloud_property="CLOUD_COVER",
    band_pattern=(r"(?:sr_)?b0?([1-57])()", "SR_B{0}"),  # ETM+ numbering: B3 / SR_B3 -> SR_B3 (red)
    description="Landsat 7 ETM+ Collection 2 Tier 1 Level-2 (SR: DN * 2.75e-5 - 0.2; ST in K)",
    qa=_QA_PIXEL,
)

# ------------------------------------------------------------------ Landsat Collection 2 Level 1 (TOA)

_OLI_TOA = tuple(Band(f"B{i}") for i in range(1, 12)) + (Band("QA_PIXEL", categorical=True),)
_OLI_TOA_ALIASES = {
    "coastal": "B1", "blue": "B2", "green": "B3", "red": "B4", "nir": "B5", "nir08": "B5",
    "swir1": "B6", "swir16": "B6", "swir2": "B7", "swir22": "B7", "pan": "B8", "cirrus": "B9",
    "lwir11": "B10", "lwir12": "B11", "qa": "QA_PIXEL",
}
_ETM_TOA = tuple(Band(b) for b in ("B1", "B2", "B3", "B4", "B5", "B6_VCID_1", "B6_VCID_2", "B7", "B8")) + (
    Band("QA_PIXEL", categorical=True),)
_ETM_TOA_ALIASES = {
    "blue": "B1", "green": "B2", "red": "B3", "nir": "B4", "nir08": "B4", "swir1": "B5", "swir16": "B5",
    "lwir": "B6_VCID_1", "lwir_high": "B6_VCID_2", "swir2": "B7", "swir22": "B7", "pan": "B8", "qa": "QA_PIXEL",
}
_TOA_NOTE = "top-of-atmosphere reflectance (Earth Engine computes it from the Level-1 MTL), thermal in K"
LANDSAT7_L1 = Collection(name="landsat7-l1", id="LANDSAT/LE07/C02/T1_TOA", bands=_ETM_TOA, aliases=_ETM_TOA_ALIASES,
                         cloud_property="CLOUD_COVER", band_pattern=(r"b0?([1-578])()", "B{0}"), qa=_QA_PIXEL,
                         description="Landsat 7 ETM+ Collection 2 Tier 1 Level-1: " + _TOA_NOTE)
LANDSAT8_L1 = Collection(name="landsat8-l1", id="LANDSAT/LC08/C02/T1_TOA", bands=_OLI_TOA, aliases=_OLI_TOA_ALIASES,
                         cloud_property="CLOUD_COVER", band_pattern=(r"b0?(\d{1,2})()", "B{0}"), qa=_QA_PIXEL,
                         description="Landsat 8 OLI/TIRS Collection 2 Tier 1 Level-1: " + _TOA_NOTE)
LANDSAT9_L1 = Collection(name="landsat9-l1", id="LANDSAT/LC09/C02/T1_TOA", bands=_OLI_TOA, aliases=_OLI_TOA_ALIASES,
                         cloud_property="CLOUD_COVER", band_pattern=(r"b0?(\d{1,2})()", "B{0}"), qa=_QA_PIXEL,
                         description="Landsat 9 OLI-2/TIRS-2 Collection 2 Tier 1 Level-1: " + _TOA_NOTE)

# ------------------------------------------------------------------ HLS v2.0

_FMASK = ("Fmask", 0b1110)  # cloud, adjacent to cloud/shadow, cloud shadow (255 = fill has them set)
HLS_S30 = Collection(
    name="hls-s30",
    id="NASA/HLS/HLSS30/v002",
    bands=tuple(Band(b) for b in ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"))
    + (Band("Fmask", categorical=True),),
    aliases={"coastal": "B1", "blue": "B2", "green": "B3", "red": "B4", "rededge1": "B5", "rededge2": "B6",
             "rededge3": "B7", "nir_broad": "B8", "nir": "B8A", "nir08": "B8A", "water_vapor": "B9", "cirrus": "B10",
             "swir16": "B11", "swir1": "B11", "swir22": "B12", "swir2": "B12", "fmask": "Fmask"},
    cloud_property="CLOUD_COVERAGE",
    band_pattern=_S2_PATTERN,
    description="HLS v2.0 S30 (Sentinel-2 MSI, harmonised to OLI), 30 m NBAR reflectance",
    qa=_FMASK,
)
HLS_L30 = Collection(
    name="hls-l30",
    id="NASA/HLS/HLSL30/v002",
    bands=tuple(Band(b) for b in ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9", "B10", "B11"))
    + (Band("Fmask", categorical=True),),
    aliases={"coastal": "B1", "blue": "B2", "green": "B3", "red": "B4", "nir": "B5", "nir08": "B5",
             "swir16": "B6", "swir1": "B6", "swir22": "B7", "swir2": "B7", "cirrus": "B9", "lwir11": "B10",
             "lwir12": "B11", "fmask": "Fmask"},
    cloud_property="CLOUD_COVERAGE",
    band_pattern=(r"b0?(\d{1,2})()", "B{0}"),
    description="HLS v2.0 L30 (Landsat 8/9 OLI), 30 m NBAR reflectance",
    qa=_FMASK,
)
HLS = Collection(
    name="hls",
    id="NASA/HLS/HLSS30/v002+NASA/HLS/HLSL30/v002",
    bands=HLS_L30.bands,
    cloud_property="CLOUD_COVERAGE",
    description="HLS v2.0 S30 and L30 merged; bands by common name (nir = S30 B8A, L30 B5)",
    members=(HLS_S30, HLS_L30),
)

# ------------------------------------------------------------------ Sentinel-1 GRD

_S1_BANDS = (Band("VV"), Band("VH"), Band("HH"), Band("HV"), Band("angle"))
_S1_COMMON = dict(
    id="COPERNICUS/S1_GRD",
    bands=_S1_BANDS,
    aliases={"vv": "VV", "vh": "VH", "hh": "HH", "hv": "HV", "angle": "angle"},
    instrument_mode="IW",
    polarisation_property="transmitterReceiverPolarisation",
)
S1_GRD = Collection(name="s1-grd", orbit_pass=None,
                    description="Sentinel-1 C-band SAR GRD, IW mode, backscatter in dB, both orbit passes",
                    **_S1_COMMON)
S1_GRD_ASC = Collection(name="s1-grd-asc", orbit_pass="ASCENDING",
                        description="Sentinel-1 GRD, IW mode, dB, ascending passes only", **_S1_COMMON)
S1_GRD_DESC = Collection(name="s1-grd-desc", orbit_pass="DESCENDING",
                         description="Sentinel-1 GRD, IW mode, dB, descending passes only", **_S1_COMMON)

POLARISATIONS = ("VV", "VH", "HH", "HV")

# short name -> declaration; the Earth Engine ids resolve too (to the first entry that has them)
COLLECTIONS: Dict[str, Collection] = {
    c.name: c for c in (S2_L2A, S2_L1C, LANDSAT7_L2, LANDSAT8_L2, LANDSAT9_L2, LANDSAT7_L1, LANDSAT8_L1, LANDSAT9_L1,
                        HLS_S30, HLS_L30, HLS, S1_GRD, S1_GRD_ASC, S1_GRD_DESC)
}


def lookup(name: str, extra: Optional[Mapping[str, Collection]] = None) -> Collection:
    """The declared collection for ``SensorSpec.collection`` (short name or Earth Engine id)."""
    table: Dict[str, Collection] = dict(COLLECTIONS)
    table.update(extra or {})
    if name in table:
        return table[name]
    for entry in table.values():
        if entry.id == name:
            return entry
    raise ProviderError(
        f"the gee provider does not know collection {name!r}; declared: {sorted(table)} "
        f"(or their Earth Engine ids, e.g. 'COPERNICUS/S2_SR_HARMONIZED'). Declare others in the provider "
        "config: {'collections': {name: {'id': ..., 'bands': {...}, 'cloud_property': ...}}}"
    )


__all__ = ["Band", "COLLECTIONS", "Collection", "POLARISATIONS", "lookup"]
