"""The exception tree: one module, one root, every error exported and classified by the service."""

import ast
import inspect
from pathlib import Path

import pytest

import rsembed_store
from rsembed_store import errors

PACKAGE = Path(rsembed_store.__file__).resolve().parent


def _error_classes():
    return [obj for _, obj in inspect.getmembers(errors, inspect.isclass)
            if issubclass(obj, BaseException) and obj.__module__ == errors.__name__]


def test_every_public_exception_class_is_defined_in_errors_py():
    """Private control-flow exceptions (``_TooLarge`` in a provider) may stay where they are used."""
    stray = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "errors.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = [ast.unparse(b) for b in node.bases]
                if node.name.endswith(("Error", "Exception")) or any(b.endswith(("Error", "Exception"))
                                                                     for b in bases):
                    stray.append(f"{path.relative_to(PACKAGE.parent)}: class {node.name}({', '.join(bases)})")
    assert not stray, "exception classes outside rsembed_store/errors.py: " + "; ".join(stray)


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda c: c.__name__)
def test_every_error_is_under_the_root_and_exported(cls):
    assert issubclass(cls, errors.RsEmbedStoreError)
    assert getattr(rsembed_store, cls.__name__) is cls
    assert cls.__name__ in rsembed_store.__all__


def test_old_import_paths_still_work():
    from rsembed_store.ingest.models.weights import WeightsError
    from rsembed_store.query.search import NotStoredError
    from rsembed_store.query.service import ApiError

    assert (WeightsError, NotStoredError, ApiError) == (errors.WeightsError, errors.NotStoredError,
                                                        errors.ApiError)
    assert issubclass(NotStoredError, LookupError) and issubclass(WeightsError, OSError)


@pytest.mark.parametrize("cls", [c for c in _error_classes() if c not in (errors.RsEmbedStoreError, errors.ApiError)],
                         ids=lambda c: c.__name__)
def test_the_service_has_a_rule_for_every_error(cls):
    from rsembed_store.query.service import classify

    status, code = classify(cls.__new__(cls))
    assert code not in ("error", "internal_error"), f"no ERROR_RULES entry covers {cls.__name__}"
    if issubclass(cls, LookupError):  # a named thing that does not exist
        assert status == 404, (cls.__name__, status)


def test_api_error_carries_its_own_status():
    from rsembed_store.query.service import classify

    exc = errors.ApiError(413, "too_large", "k has 5000")
    assert isinstance(exc, errors.RsEmbedStoreError)
    assert classify(exc) == (413, "too_large")
