"""Where a store lives: its URI, and the storage options (credentials, endpoint) that go with it.

The store's one door to the outside (:meth:`~rsembed_store.storage.Storage.open`)
takes its URI and options from here: ``$RSEMBED_STORE_DB`` and
``$RSEMBED_STORE_STORAGE_OPTIONS``, checked, with secret values kept out of
every message (:func:`redact`).
"""

from __future__ import annotations

import os
import re
from typing import Dict, Iterable, Mapping, Optional

from .errors import StoreError

DEFAULT_URI = "./rsembed-store"
STORAGE_OPTIONS_ENV = "RSEMBED_STORE_STORAGE_OPTIONS"
# storage-option names whose values are secrets: redacted from every message
_SECRET_NAME = re.compile(r"secret|token|password|key|sas|credential|signature", re.IGNORECASE)


def default_uri() -> str:
    return os.environ.get("RSEMBED_STORE_DB") or DEFAULT_URI


def parse_storage_options(items: Iterable[str], *, source: str = "storage option") -> Dict[str, str]:
    """``["KEY=VALUE", ...]`` as a dict; a malformed item is a :class:`StoreError` naming it
    (without its value, which may be a secret).

    >>> parse_storage_options(["aws_region=eu-west-1", "allow_http=true"])
    {'aws_region': 'eu-west-1', 'allow_http': 'true'}
    """
    out: Dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name or not value:
            shown = name if sep else "(no '=')"
            raise StoreError(f"{source} {shown!r} must be KEY=VALUE with a non-empty key and value, "
                             "e.g. aws_region=eu-west-1")
        out[name] = value
    return out


def storage_options_from_env() -> Optional[Dict[str, str]]:
    """Storage options from ``$RSEMBED_STORE_STORAGE_OPTIONS`` (whitespace-separated KEY=VALUE), or None."""
    text = os.environ.get(STORAGE_OPTIONS_ENV, "").strip()
    return parse_storage_options(text.split(), source=f"${STORAGE_OPTIONS_ENV} item") if text else None


def redact(text: str, storage_options: Optional[Mapping[str, str]]) -> str:
    """``text`` with the value of every secret-looking storage option replaced by ``***``."""
    for name, value in (storage_options or {}).items():
        if _SECRET_NAME.search(name) and len(value) >= 4 and value.lower() not in ("true", "false"):
            text = text.replace(value, "***")
    return text


def check_options(options: Mapping) -> Dict[str, str]:
    """Storage options as LanceDB takes them: string keys and values (names, not values, in errors)."""
    if not isinstance(options, Mapping):
        raise StoreError(f"storage_options must be a mapping of strings, got {type(options).__name__}")
    bad = sorted(str(k) for k, v in options.items() if not isinstance(k, str) or not isinstance(v, str))
    if bad:
        raise StoreError(f"storage_options {bad} must have string values (e.g. 'true', '30s'); "
                         "LanceDB takes every option as a string")
    return dict(options)
