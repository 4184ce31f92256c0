"""The exception tree of rsembed_store.

Every error the package raises on purpose derives from :class:`RsEmbedStoreError`
and also from the builtin it resembles, so callers may catch either
(``except SpecError`` or ``except ValueError``). Messages name the bad value,
what is accepted, and where possible the fix.
"""

from __future__ import annotations

from typing import Dict, Optional


class RsEmbedStoreError(Exception):
    """Root of every error raised on purpose by rsembed_store."""


class SpecError(RsEmbedStoreError, ValueError):
    """A request spec (spatial, temporal, sensor, output, input prep) is invalid."""


class LimitError(SpecError):
    """A request larger than a size limit (``rsembed_store.limits``), refused before any work.

    ``limit`` is the limit's name, ``size`` the request's size and ``maximum`` the
    limit's value; the message names all three and how to raise the limit.
    """

    def __init__(self, message: str, *, limit: str = "", size: float = 0, maximum: float = 0):
        super().__init__(message)
        self.limit = limit
        self.size = size
        self.maximum = maximum


class UnknownModelError(SpecError, LookupError):
    """A model id that is not in the registry."""


class UnknownProviderError(SpecError, LookupError):
    """A provider name that is not in the registry."""


class VectorError(RsEmbedStoreError, ValueError):
    """A vector or grid of the wrong shape, dimension or with non-finite values."""


class UnknownSpaceError(RsEmbedStoreError, LookupError):
    """An embedding space (model + revision) the store does not hold."""


class NotStoredError(RsEmbedStoreError, LookupError):
    """A key or request named by the caller (e.g. search's ``like``) has no stored answer in the space."""


class StoreError(RsEmbedStoreError, OSError):
    """The store could not be opened, read or written."""


class CorruptTierError(StoreError):
    """A saved serving tier that does not match what it claims; it is never trusted, but rebuilt."""


class NoStoreError(StoreError, FileNotFoundError):
    """No store exists at the URI, and the caller asked not to create one (``create=False``)."""


class WeightsError(RsEmbedStoreError, OSError):
    """A checkpoint is missing, cannot be downloaded, or does not match its declared checksum."""


class ProviderError(RsEmbedStoreError, RuntimeError):
    """A provider could not deliver pixels for a request."""


class NoImageryError(ProviderError):
    """No scene passes the filters for the requested place and window."""


class RealDataUnavailable(ProviderError):
    """The real test scenes (Debian's r-cran-satellite Landsat files) could not be fetched: no apt, no
    network, no package (``rsembed_store.realdata``)."""


class NoProviderError(ProviderError):
    """No provider of a model can serve a request (``provider="auto"``); ``tried`` lists
    ``(provider, why it declined)`` for every one of them."""

    tried: tuple = ()


class ComputeError(RsEmbedStoreError, RuntimeError):
    """A model failed on an input."""


class SqlError(RsEmbedStoreError, ValueError):
    """A SQL statement was refused (not read-only) or failed."""


class MissingExtraError(RsEmbedStoreError, ImportError):
    """An optional dependency is not installed; the message names the extra."""


class ApiError(RsEmbedStoreError):
    """An error the HTTP service answers as-is: its status, code, message and the body field at fault."""

    def __init__(self, status: int, code: str, message: str, field: Optional[str] = None,
                 headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers


def require(module: str, extra: str, feature: str):
    """Import an optional dependency or raise :class:`MissingExtraError` naming the extra.

    >>> np = require("numpy", "core", "arrays")  # doctest: +SKIP
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised via monkeypatch in tests
        raise MissingExtraError(
            f"{feature} needs the optional package {module!r}, which is not installed. "
            f"Install it with: pip install 'rsembed-store[{extra}]'"
        ) from exc
