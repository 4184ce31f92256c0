"""Earth Engine sign-in for the ``gee`` provider: which project to bill, which credentials, once per process.

Earth Engine keeps one session per process, so initialisation happens once, with the
first configuration that asks; a later configuration that names a different project
or key is refused rather than silently ignored. The ``ee`` module itself is found by
:func:`rsembed_store.ingest.providers.gee.load_ee` (tests put a fake there).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from ...errors import ProviderError, RsEmbedStoreError

ENV_PROJECT = ("EE_PROJECT", "GOOGLE_CLOUD_PROJECT")
ENV_KEY = "EE_SERVICE_ACCOUNT_KEY"
ENV_ACCOUNT = "EE_SERVICE_ACCOUNT"


@dataclass(frozen=True)
class Auth:
    """Who to be and which Cloud project to bill: from configuration, then the environment."""

    project: Optional[str] = None
    key_file: Optional[str] = None
    account: Optional[str] = None
    url: Optional[str] = None

    @classmethod
    def from_config(cls, config: Mapping) -> "Auth":
        """The provider configuration's choices, each falling back to its environment variable."""
        project = config.get("project")
        for name in ENV_PROJECT:
            project = project or os.environ.get(name) or None
        key_file = config.get("service_account_key") or os.environ.get(ENV_KEY) or None
        account = config.get("service_account") or os.environ.get(ENV_ACCOUNT) or None
        return cls(
            project=str(project) if project else None,
            key_file=os.path.expanduser(str(key_file)) if key_file else None,
            account=str(account) if account else None,
            url=config.get("url") or None,
        )

    @property
    def explicit(self) -> bool:
        """Whether anything was configured (else the caller's own ``ee.Initialize`` is used as is)."""
        return bool(self.project or self.key_file or self.url)


_init_lock = threading.Lock()
_initialized: Dict[int, Tuple[Any, Auth]] = {}  # id(ee module) -> (module, the Auth it was initialised with)

_HOW_TO = (
    "Set a Cloud project registered for Earth Engine with the provider config "
    "{'providers': {'gee': {'project': 'my-project'}}} or the environment variable EE_PROJECT "
    "(or GOOGLE_CLOUD_PROJECT); authenticate once with `earthengine authenticate` (or "
    "`gcloud auth application-default login`), or use a service account key via config "
    "'service_account_key' or EE_SERVICE_ACCOUNT_KEY=/path/key.json. See docs/providers/gee.md."
)


def initialize_module(ee, config: Optional[Mapping] = None):
    """Initialise the Earth Engine client module ``ee`` once per process and return it.

    Credentials: a service-account key file when one is configured
    (``ee.ServiceAccountCredentials``), otherwise the user's stored credentials
    (``earthengine authenticate`` or Application Default Credentials). The project:
    ``config["project"]``, ``EE_PROJECT``, ``GOOGLE_CLOUD_PROJECT``, else whatever
    the credentials carry. Later calls return at once; a later call that asks for a
    different project or key raises :class:`ProviderError` (Earth Engine holds one
    session per process).
    """
    auth = Auth.from_config(config or {})
    done = _initialized.get(id(ee))
    if done is None:
        with _init_lock:
            done = _initialized.get(id(ee))
            if done is None:
                done = (ee, _initialize(ee, auth))
                _initialized[id(ee)] = done
    used = done[1]
    if auth.explicit and used.explicit and (auth.project, auth.key_file) != (used.project, used.key_file):
        raise ProviderError(
            f"Earth Engine is already initialised in this process with project={used.project!r}, "
            f"key={used.key_file!r}; cannot switch to project={auth.project!r}, key={auth.key_file!r}. "
            "Use one Earth Engine project per process."
        )
    return ee


def _initialize(ee, auth: Auth) -> Auth:
    already = False
    try:
        already = bool(ee.data.is_initialized())
    except Exception:  # older clients: no is_initialized
        already = False
    if already and not auth.explicit:
        return auth  # the caller ran ee.Initialize themselves
    try:
        if auth.key_file:
            if not os.path.isfile(auth.key_file):
                raise ProviderError(f"the Earth Engine service account key {auth.key_file!r} does not exist. {_HOW_TO}")
            credentials = ee.ServiceAccountCredentials(auth.account, key_file=auth.key_file)
        else:
            credentials = "persistent"
        kwargs = {"credentials": credentials, "project": auth.project}
        if auth.url:
            kwargs["url"] = auth.url
        ee.Initialize(**kwargs)
    except RsEmbedStoreError:
        raise
    except Exception as exc:
        raise ProviderError(
            f"Earth Engine could not be initialised (project={auth.project!r}, "
            f"{'key ' + repr(auth.key_file) if auth.key_file else 'user credentials'}): {exc}. {_HOW_TO}"
        ) from exc
    return auth


def reset_initialization() -> None:
    """Forget which clients were initialised (tests; a process that re-initialises ``ee`` itself)."""
    with _init_lock:
        _initialized.clear()


__all__ = ["Auth", "ENV_ACCOUNT", "ENV_KEY", "ENV_PROJECT", "initialize_module", "reset_initialization"]
