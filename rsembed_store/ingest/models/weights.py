"""Model weights: where a checkpoint comes from, how it is checked, and what revision it gives.

A deep model's embedding space is named by its weights, so the revision that
enters every content key is a checksum of the file actually used, never a path:

* each model class declares its published checkpoint as a :class:`PublishedWeights`
  (file name, public URL, the page to get it from, and the SHA-256 its publisher or
  library pins: a full digest, or the hex prefix torch.hub-style URLs carry in
  their file name). Its revision is ``sha256:<pinned hex, at most 16>``;
* custom weights (a fine-tune, or the tests' random-initialised files) get a
  *variant* class of the same model id whose revision is ``sha256:<first 16 hex of
  the file>``, so they can never share keys with the published weights.
  :func:`use_weights` registers the variant for this process; the environment
  variable ``RSEMBED_WEIGHTS="id=path,id2=path2"`` does the same when the model is
  first looked up; :func:`use_weights_config` applies ``{"models": {id: {"weights":
  path}}}``. A file whose digest matches the published one keeps the published
  revision (same weights, same keys).

Lookup order of the published file (:func:`locate`): the model's explicit path (a
file, or a directory holding the published file name), ``$RSEMBED_WEIGHTS_DIR/<file>``,
the cache ``$RSEMBED_CACHE/weights/<file>`` (default ``~/.cache/rsembed_store/weights``),
then a download from the public URL into the cache, verified before it is kept.
Every file that is loaded as the published checkpoint is verified against the
pinned digest; a mismatch or a missing file is a :class:`WeightsError` that says
where to get the file, where to put it, and how to use custom weights instead.

Nothing here imports torch: resolving keys must stay cheap and torch-free.
"""

from __future__ import annotations

import hashlib
import os
import threading
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

from ...errors import SpecError, WeightsError

ENV_WEIGHTS = "RSEMBED_WEIGHTS"
ENV_WEIGHTS_DIR = "RSEMBED_WEIGHTS_DIR"
ENV_CACHE = "RSEMBED_CACHE"
REVISION_HEX = 16
_CHUNK = 1 << 20


@dataclass(frozen=True)
class PublishedWeights:
    """The published checkpoint of a model: where it lives and the digest that pins it."""

    file_name: str
    url: str
    sha256: str  # full hex digest, or a pinned prefix (at least 8 hex)
    home: str = ""  # a page a person can open to get the file (defaults to the URL)
    size: Optional[int] = None  # bytes, when published

    def __post_init__(self):
        digest = self.sha256.lower()
        if len(digest) < 8 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"PublishedWeights.sha256={self.sha256!r}: give at least 8 hex digits")

    @property
    def revision(self) -> str:
        return f"sha256:{self.sha256.lower()[:REVISION_HEX]}"

    def matches(self, digest: str) -> bool:
        return digest.lower().startswith(self.sha256.lower())


# ---------------------------------------------------------------- checksums

_hash_lock = threading.Lock()
_hash_cache: Dict[Tuple[str, int, int], str] = {}


def file_sha256(path) -> str:
    """Hex SHA-256 of a file, computed once per (path, size, mtime) in this process."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    with _hash_lock:
        if key in _hash_cache:
            return _hash_cache[key]
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _hash_lock:
        _hash_cache[key] = digest
    return digest


def revision_of(path, published: Optional[PublishedWeights] = None) -> str:
    """The revision a weights file gives: the published revision when it is the published file,
    else ``sha256:<first 16 hex>`` of the file."""
    digest = file_sha256(path)
    if published is not None and published.matches(digest):
        return published.revision
    return f"sha256:{digest[:REVISION_HEX]}"


# ---------------------------------------------------------------- lookup

def cache_dir() -> Path:
    """Where downloaded checkpoints are kept: ``$RSEMBED_CACHE/weights`` or ``~/.cache/rsembed_store/weights``."""
    root = os.environ.get(ENV_CACHE)
    return Path(root) / "weights" if root else Path.home() / ".cache" / "rsembed_store" / "weights"


def _explicit_file(model_id: str, path, file_name: str) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / file_name
    if not p.is_file():
        raise WeightsError(
            f"model {model_id!r}: the weights path {str(path)!r} is neither a file nor a directory "
            f"holding {file_name!r}"
        )
    return p


def _missing_message(model_id: str, pw: PublishedWeights, why: str) -> str:
    env_dir = os.environ.get(ENV_WEIGHTS_DIR)
    where = f"{env_dir} ($RSEMBED_WEIGHTS_DIR)" if env_dir else f"{cache_dir()} (or a folder named by $RSEMBED_WEIGHTS_DIR)"
    return (
        f"model {model_id!r} needs its checkpoint {pw.file_name!r} ({why}). Download it from {pw.url}"
        f"{f' (see {pw.home})' if pw.home and pw.home != pw.url else ''} and put it in {where}; "
        f"or point to custom weights with use_weights({model_id!r}, PATH) / {ENV_WEIGHTS}={model_id}=PATH"
    )


def verify(model_id: str, path: Path, pw: PublishedWeights) -> Path:
    """Check that ``path`` is the published checkpoint; raise a WeightsError that explains the fix if not."""
    digest = file_sha256(path)
    if not pw.matches(digest):
        raise WeightsError(
            f"model {model_id!r}: {str(path)!r} has SHA-256 {digest[:16]}..., not the published "
            f"{pw.sha256[:16]}... of {pw.file_name!r} ({pw.url}). If these are custom weights (a fine-tune), "
            f"register them as their own revision with use_weights({model_id!r}, {str(path)!r}) or "
            f"{ENV_WEIGHTS}={model_id}={path}; otherwise download the file again"
        )
    return path


def download(model_id: str, pw: PublishedWeights, dest_dir: Path) -> Path:
    """Fetch ``pw.url`` into ``dest_dir`` (via a partial file), verify it, and return its path."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / pw.file_name
    part = dest.with_name(dest.name + f".part{os.getpid()}")
    try:
        with urllib.request.urlopen(pw.url, timeout=60) as resp, open(part, "wb") as out:
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                out.write(chunk)
        verify(model_id, part, pw)
        os.replace(part, dest)
    except WeightsError:
        part.unlink(missing_ok=True)
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to fetch becomes the same clear message
        part.unlink(missing_ok=True)
        raise WeightsError(_missing_message(model_id, pw, f"not found locally; downloading failed: {exc}")) from exc
    return dest


def locate(model_id: str, pw: PublishedWeights, explicit=None, *, allow_download: bool = True) -> Path:
    """The published checkpoint of ``model_id``, verified; see the module docstring for the order."""
    if explicit is not None:
        return verify(model_id, _explicit_file(model_id, explicit, pw.file_name), pw)
    candidates = []
    if os.environ.get(ENV_WEIGHTS_DIR):
        candidates.append(Path(os.environ[ENV_WEIGHTS_DIR]).expanduser() / pw.file_name)
    candidates.append(cache_dir() / pw.file_name)
    for path in candidates:
        if path.is_file():
            return verify(model_id, path, pw)
    if not allow_download:
        raise WeightsError(_missing_message(model_id, pw, "not found locally; downloads are off"))
    return download(model_id, pw, cache_dir())


def custom_file(model_id: str, path, pw: Optional[PublishedWeights]) -> Path:
    """The file a custom weights path names (a file, or a directory holding the published file name)."""
    return _explicit_file(model_id, path, pw.file_name if pw else "")


# ---------------------------------------------------------------- variants

_variant_lock = threading.Lock()
_variants: Dict[Tuple[type, str], type] = {}


def published_class(cls: type) -> type:
    """The class that declares the published weights (a variant's base)."""
    return getattr(cls, "weights_base", None) or cls


def variant(cls: type, path) -> type:
    """A subclass of ``cls`` that loads ``path`` and whose revision names that file (see module docstring).
    Same path and file give the same class object, so repeated calls register nothing new."""
    base = published_class(cls)
    pw = getattr(base, "published", None)
    file = custom_file(base.info.id, path, pw).resolve()
    rev = revision_of(file, pw)
    with _variant_lock:
        key = (base, f"{file}|{rev}")
        if key not in _variants:
            attrs = {
                "info": replace(base.info, revision=rev),
                "weights_path": str(file),
                "weights_base": base,
                "__module__": base.__module__,
            }
            _variants[key] = type(f"{base.__name__}_{rev[7:]}", (base,), attrs)
        return _variants[key]


def use_weights(model_id: str, path) -> type:
    """Use the checkpoint at ``path`` for ``model_id`` in this process and return the variant class.

    Requests resolved afterwards carry the file's revision, so their keys never collide with the
    published weights'. ``path`` may be a file or a directory holding the published file name.

    >>> use_weights("remoteclip", "/models/remoteclip-finetune.pt")  # doctest: +SKIP
    """
    from ...registry import model_class, register_model

    cls = variant(model_class(model_id), path)
    register_model(model_id, cls)
    return cls


def use_published(model_id: str) -> type:
    """Undo :func:`use_weights`: requests for ``model_id`` use its published weights again."""
    from ...registry import model_class, register_model

    base = published_class(model_class(model_id))
    register_model(model_id, base)
    return base


def weights_variants(config: Optional[Mapping]) -> Dict[str, type]:
    """The variant class of every ``{"models": {id: {"weights": path}}}`` entry of a config, registered
    nowhere: a store puts them in scope around its own calls (``registry.models_in_scope``)."""
    from ...registry import model_class

    out = {}
    for model_id, cfg in ((config or {}).get("models") or {}).items():
        if isinstance(cfg, Mapping) and cfg.get("weights"):
            out[model_id] = variant(published_class(model_class(model_id)), cfg["weights"])
    return out


def use_weights_config(config: Optional[Mapping]) -> Dict[str, type]:
    """Apply every ``{"models": {id: {"weights": path}}}`` entry of a config to the whole process
    (see :func:`use_weights`); a store applies its own to itself only (:func:`weights_variants`)."""
    from ...registry import register_model

    out = weights_variants(config)
    for model_id, cls in out.items():
        register_model(model_id, cls)
    return out


def env_weights(model_id: str) -> Optional[str]:
    """The path ``$RSEMBED_WEIGHTS`` (``id=path,...``) gives for ``model_id``, if any."""
    spec = os.environ.get(ENV_WEIGHTS, "").strip()
    if not spec:
        return None
    found = None
    for entry in spec.split(","):
        name, sep, path = entry.strip().partition("=")
        if not sep or not name.strip() or not path.strip():
            raise SpecError(
                f"{ENV_WEIGHTS}={spec!r}: entry {entry!r} is not 'model_id=path'; "
                f"write e.g. {ENV_WEIGHTS}=remoteclip=/models/rc.pt,ssl4eo-s2=/models/vit.pth"
            )
        if name.strip() == model_id:
            found = path.strip()
    return found


def settle(cls: type) -> type:
    """The class the registry should serve for ``cls``: its variant when ``$RSEMBED_WEIGHTS``
    names custom weights for it, else ``cls``."""
    path = env_weights(cls.info.id)
    return variant(cls, path) if path else cls


__all__ = [
    "PublishedWeights",
    "WeightsError",
    "cache_dir",
    "file_sha256",
    "locate",
    "revision_of",
    "use_published",
    "use_weights",
    "weights_variants",
    "use_weights_config",
    "variant",
]
