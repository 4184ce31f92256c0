"""One vocabulary across the three faces: the CLI options, the Python signatures and the HTTP
schemas name each shared concept alike and give it the same default (docs/cli.md, 'One vocabulary').

The rule: a CLI flag is the Python keyword with ``_`` written ``-``; a boolean is the pair
``--x/--no-x``; the HTTP field is the Python keyword. The HTTP side is read from
``app.openapi()``, so the test does not depend on where the body classes live.
"""

import inspect
import re

import click
import pytest

from rsembed_store import Store
from rsembed_store.cli import main

pytest.importorskip("fastapi")


def python_params(fn):
    """Keyword -> default (``inspect.Parameter.empty`` when required) of a function, ``self`` and
    ``**kwargs`` left out."""
    sig = inspect.signature(fn)
    return {n: p.default for n, p in sig.parameters.items()
            if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def cli_options(command: str):
    """dest -> click option of one subcommand."""
    return {p.name: p for p in main.commands[command].params if isinstance(p, click.Option)}


def cli_flags(command: str) -> set:
    """The keywords the long flags of one subcommand spell (``--timeout-s`` -> ``timeout_s``)."""
    return {o[2:].replace("-", "_") for p in main.commands[command].params for o in getattr(p, "opts", ())
            if o.startswith("--")}


@pytest.fixture(scope="module")
def openapi(tmp_path_factory):
    from rsembed_store.query.service import create_app

    return create_app(Store.open(tmp_path_factory.mktemp("vocab") / "db")).openapi()


def http_fields(openapi, path: str) -> dict:
    """field -> default (``inspect.Parameter.empty`` when it has none) of a POST body."""
    schema = openapi["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    while "$ref" in schema:
        schema = openapi["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return {name: prop.get("default", inspect.Parameter.empty) for name, prop in schema["properties"].items()}


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def singular(name: str) -> str:
    """A repeatable flag names one item of a list keyword: ``modalities`` -> ``modality``."""
    return name[:-3] + "y" if name.endswith("ies") else name[:-1] if name.endswith("s") else name


# Python callable, CLI command, HTTP path, and the concepts every one of the three must have
FACES = [
    ("Store.search", Store.search, "search", "/search",
     ["model", "k", "temporal", "within", "where", "exclude_self", "metric", "revision", "compute"]),
    ("Store.get", Store.get, "get", "/embeddings", ["compute"]),
    ("Store.sql", Store.sql, "sql", "/sql", ["limit"]),
    ("Store.ingest", Store.ingest, "ingest", "/ingest", ["region", "h3_res", "output"]),
]
# Python callable and CLI command (no HTTP door of their own)
CLI_ONLY = [
    ("Store.sql", Store.sql, "sql", ["limit", "timeout_s"]),
    ("export", "rsembed_store.io.exporter:export", "export", ["format", "temporal", "within", "where", "sql",
                                                               "batch_rows"]),
    ("import_table", "rsembed_store.io.importer:import_table", "import",
     ["model", "revision", "metric", "temporal", "buffer_m", "year", "update", "dry_run", "batch_rows", "npz_model"]),
    ("ingest", "rsembed_store.ingest.engine:ingest", "ingest", ["fetch_workers", "batch_size", "write_batch",
                                                                "flush_seconds", "executor"]),
    ("plan", "rsembed_store.ingest.plan:plan", "ingest", ["region", "h3_res", "output", "provider", "modalities"]),
]


def _load(target):
    if not isinstance(target, str):
        return target
    import importlib

    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def check_cli_against_python(label, params, command, concepts):
    options = cli_options(command)
    ctx = click.Context(main.commands[command])
    problems = []
    for name in concepts:
        if name not in params:
            problems.append(f"{label} has no keyword {name!r}")
        if name not in options and name not in cli_flags(command):
            problems.append(f"`{command}` has no option for {label}'s {name!r} (want {flag_of(name)})")
    for name, opt in options.items():
        if name not in params:
            continue  # a CLI-only option (e.g. --source, which fills config)
        long = [o for o in opt.opts if o.startswith("--")]
        allowed = {flag_of(name)} | ({flag_of(singular(name))} if opt.multiple else set())
        if long and long[0] not in allowed:
            problems.append(f"`{command}` spells {label}'s {name!r} as {long[0]}, the rule says {flag_of(name)}")
        if opt.is_flag and opt.is_bool_flag and params[name] in (True, False):
            if params[name] is True and opt.secondary_opts != [f"--no-{name.replace('_', '-')}"]:
                problems.append(f"`{command}` {flag_of(name)} defaults to true but is not the pair "
                                f"{flag_of(name)}/--no-{name.replace('_', '-')}")
            if opt.get_default(ctx) != params[name]:
                problems.append(f"`{command}` {flag_of(name)} defaults to {opt.get_default(ctx)}, {label} to "
                                f"{params[name]}")
        elif opt.default is not None and params[name] is not inspect.Parameter.empty and not opt.multiple \
                and params[name] is not None and opt.default != params[name]:
            problems.append(f"`{command}` {flag_of(name)} defaults to {opt.default!r}, {label} to {params[name]!r}")
    return problems


@pytest.mark.parametrize("label, fn, command, path, concepts", FACES, ids=[f[0] for f in FACES])
def test_python_cli_and_http_agree(openapi, label, fn, command, path, concepts):
    params = python_params(fn)
    fields = http_fields(openapi, path)
    problems = check_cli_against_python(label, params, command, concepts)
    for name in concepts:
        if name not in fields:
            problems.append(f"POST {path} has no field {name!r} ({label} has)")
    for name, default in fields.items():
        if name in params and default is not inspect.Parameter.empty and params[name] is not inspect.Parameter.empty:
            if default != params[name]:
                problems.append(f"POST {path} {name!r} defaults to {default!r}, {label} to {params[name]!r}")
    assert problems == []


@pytest.mark.parametrize("label, target, command, concepts", CLI_ONLY, ids=[c[0] for c in CLI_ONLY])
def test_python_and_cli_agree(label, target, command, concepts):
    assert check_cli_against_python(label, python_params(_load(target)), command, concepts) == []


def test_lookup_takes_items_in_python_and_over_http(openapi):
    assert "items" in python_params(Store.lookup) and "items" in http_fields(openapi, "/embeddings/lookup")


def test_the_checker_catches_a_drift(monkeypatch):
    """A flag spelled otherwise, or a default that differs, is reported (so the tests above can fail)."""
    def search(model, like, *, temporal=None, exclude_self=False, k=5):
        pass

    problems = check_cli_against_python("fake", python_params(search), "search", ["temporal", "exclude_self", "k"])
    assert any("--exclude-self defaults to True" in p for p in problems)
    assert any("-k" in p and "defaults to 10" in p for p in problems)
    monkeypatch.setattr(main.commands["search"].params[[p.name for p in main.commands["search"].params]
                                                       .index("temporal")], "opts", ["--during"])
    problems = check_cli_against_python("Store.search", python_params(Store.search), "search", ["temporal"])
    assert any("--during" in p for p in problems)


def test_every_command_takes_the_store_options_and_json_where_it_prints():
    for name, command in main.commands.items():
        flags = {o for p in command.params for o in getattr(p, "opts", ())}
        assert {"--db", "--storage-option", "--max-roi-pixels", "--max-array-bytes", "--max-plan-cells"} <= flags, name
        if name not in ("serve", "view"):  # they print no result of their own (serve --request prints JSON)
            assert "--json" in flags, name


def test_one_options_module(tmp_path):
    """The shared options are declared once: no command module spells --db, --json or the
    request options itself, and none imports another command's module or cli.py."""
    from pathlib import Path

    import rsembed_store.commands as commands

    folder = Path(commands.__file__).parent
    for path in sorted(folder.glob("*.py")):
        if path.name == "options.py":
            continue
        text = path.read_text(encoding="utf-8")
        for flag in ("db", "json", "storage-option", "source", "within", "where"):
            assert not re.search(r'click\.option\(\s*"--' + flag + '"', text), \
                f"{path.name} declares --{flag} (it belongs in commands/options.py)"
        assert "from ..cli import" not in text, path.name
        # `view` is `serve` plus a browser: the one command built on another
        allowed = {"options", "common", "__init__", path.stem} | ({"serve"} if path.stem == "view" else set())
        for other in folder.glob("*.py"):
            if other.stem not in allowed:
                assert f"from .{other.stem} import" not in text, f"{path.name} imports commands/{other.name}"
