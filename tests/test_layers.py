"""The layers of DESIGN.md, checked on the source: who may import whom.

Every ``import`` statement of the package is read (module level and inside
functions alike: a lazy import is still a dependency), relative imports are
resolved, and each rule below is a set of (importer, imported) pairs that must
not exist. A registry name and its ModelInfo.id must agree too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rsembed_store"
WINGS = ("rsembed_store.ingest", "rsembed_store.query", "rsembed_store.io", "rsembed_store.compat",
         "rsembed_store.commands", "rsembed_store.cli")
# The top-level modules that are not the core: the facade, the command line, the demo and its data.
NOT_CORE = {"rsembed_store.store", "rsembed_store.cli", "rsembed_store.__main__", "rsembed_store.demo",
            "rsembed_store.demo_real", "rsembed_store.demo_map", "rsembed_store.realdata", "rsembed_store.__init__"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set:
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{a.name}" for a in node.names)  # `from . import x` names a module
    return out


def _graph() -> dict:
    return {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def _violations(importers, forbidden) -> list:
    bad = []
    for module, imported in sorted(_graph().items()):
        if not importers(module):
            continue
        for target in sorted(imported):
            if any(target == f or target.startswith(f + ".") for f in forbidden):
                bad.append(f"{module} imports {target}")
    return bad


CORE = {f"rsembed_store.{p.stem}" for p in PACKAGE.glob("*.py")} - NOT_CORE  # top-level files, not packages


def _is_core(module: str) -> bool:
    return module in CORE


def test_the_core_imports_no_wing():
    assert _violations(_is_core, WINGS) == []


def test_query_imports_no_provider_or_model():
    forbidden = ("rsembed_store.ingest.providers", "rsembed_store.ingest.models")
    assert _violations(lambda m: m.startswith("rsembed_store.query"), forbidden) == []


def test_ingest_imports_no_service_and_no_command_line():
    forbidden = ("rsembed_store.query.service", "rsembed_store.commands", "rsembed_store.cli")
    assert _violations(lambda m: m.startswith("rsembed_store.ingest"), forbidden) == []


def test_the_rules_can_fail():
    """The checker sees a lazy import inside a function, and a relative one."""
    graph = _graph()
    assert "rsembed_store.query.search" in graph["rsembed_store.store"]  # store.search imports it lazily
    assert any(t.startswith("rsembed_store.errors") for t in graph["rsembed_store.query.service.app"])


def test_every_registry_name_is_its_models_id():
    from rsembed_store.registry import _MODELS, model_class

    mismatched = []
    for name in sorted(_MODELS):
        try:
            cls = model_class(name)
        except ImportError as exc:  # an optional extra is missing: the declaration cannot be read here
            pytest.skip(f"{name}: {exc}")
        if cls.info.id != name:
            mismatched.append((name, cls.info.id))
    assert mismatched == []
