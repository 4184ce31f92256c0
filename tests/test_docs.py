"""Every shell, Python and SQL example of README.md and docs/ runs as written (issue 19).

One test per fenced block, named ``PAGE:LINE``; a page's blocks run in order in one
scratch directory (see tests/docs_examples.py for the rules and the directives). The
directory holds a copy of a small demo store built once per session with
``rsembed-store demo --size-px 256``, so a page may write to its store without
disturbing another. A block marked ``<!-- docs-test: skip (REASON) -->`` is reported as
skipped with its reason (``-ra`` lists them); ``test_skips_are_few_and_explained`` keeps
their number bounded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict

import pytest

from docs_examples import ROOT, Block, Page, copy_store, doc_files, parse_blocks

BLOCKS = [b for path in doc_files() for b in parse_blocks(path)]
MAX_SKIPS = 25  # examples that cannot run here (credentials, clusters, hub weights, long benchmarks)
MIN_RUN = 39  # examples that do run: a page that stops being collected must not pass unnoticed


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """A small demo (256 px scene, two models, H3 resolution 9), built once."""
    from click.testing import CliRunner

    from rsembed_store.cli import main

    out = tmp_path_factory.mktemp("docs-demo")
    res = CliRunner().invoke(main, ["--db", str(out / "rsembed-store"), "demo", "--workdir",
                                    str(out / "rsembed-demo"), "--size-px", "256", "--json"])
    assert res.exit_code == 0, res.output
    return out


SETUPS: Dict[str, Callable[[Path], None]] = {}  # name -> makes what a page assumes the reader has


@pytest.fixture(scope="session")
def pages(demo_dir, tmp_path_factory):
    """Page state by path, made on a page's first block and closed at the end of the session."""
    made: Dict[Path, Page] = {}

    def prepare(workdir: Path) -> None:
        copy_store(demo_dir / "rsembed-store", workdir / "rsembed-store")
        (workdir / "rsembed-demo").mkdir()
        (workdir / "rsembed-demo" / "source").symlink_to(demo_dir / "rsembed-demo" / "source")
        (workdir / "scripts").symlink_to(ROOT / "scripts")  # `python scripts/x.py` as from a checkout

    def get(path: Path) -> Page:
        if path not in made:
            made[path] = Page(path, tmp_path_factory.mktemp("page") / path.stem, prepare, SETUPS)
        return made[path]

    yield get
    for page in made.values():
        page.close()


@pytest.mark.timeout(120)  # an example that takes minutes is a bug of the page (e.g. a forgotten h3_res)
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_example_runs(block: Block, pages):
    reason = block.skip_reason
    if reason:
        pytest.skip(f"{block.id}: {reason}")
    page = pages(block.path)
    for earlier in BLOCKS:  # a block selected alone (-k) still runs after the ones before it
        if earlier.path == block.path and earlier.line < block.line and earlier.line not in page.done \
                and not earlier.skip_reason:
            page.done.add(earlier.line)
            page.run_block(earlier)
    if block.line not in page.done:  # else it ran already, before a later block selected first
        page.done.add(block.line)
        page.run_block(block)


def test_skips_are_few_and_explained():
    skipped = [(b.id, b.skip_reason) for b in BLOCKS if b.skip_reason]
    listing = "\n".join(f"  {i}: {r}" for i, r in skipped)
    assert len(skipped) <= MAX_SKIPS, f"{len(skipped)} examples are skipped (at most {MAX_SKIPS}):\n{listing}"
    assert len(BLOCKS) - len(skipped) >= MIN_RUN, f"only {len(BLOCKS) - len(skipped)} examples run"
    print(f"{len(skipped)} of {len(BLOCKS)} doc examples skipped:\n{listing}")


def test_the_rules_catch_drift(tmp_path):
    """The harness itself: a wrong expected output, a wrong exit code and a bad directive all fail."""
    from docs_examples import output_matches, parse_console

    assert output_matches('{"ok": true, ...}', '{"ok":true,"version":"0.1.0"}')
    assert not output_matches('{"ok": false, ...}', '{"ok":true,"version":"0.1.0"}')
    assert output_matches("a … c", "a b\nc")
    cmds = parse_console("$ rsembed-store sql \\\n   'SELECT 1'\nx\n-\n1\n$ curl -d '{\n  \"a\": 1}'\n")
    assert [c for c, _ in cmds] == ["rsembed-store sql \\\n   'SELECT 1'", "curl -d '{\n  \"a\": 1}'"]
    assert cmds[0][1] == "x\n-\n1"
    page_md = tmp_path / "page.md"
    page_md.write_text("<!-- docs-test: skip -->\n```bash\ntrue\n```\n")
    with pytest.raises(ValueError, match="needs a reason"):
        parse_blocks(page_md)[0].skip_reason
    page_md.write_text("<!-- docs-test: frobnicate -->\n```bash\ntrue\n```\n")
    with pytest.raises(ValueError, match="unknown directive"):
        parse_blocks(page_md)
    page_md.write_text("```console\n$ false\n```\n```console\n$ echo hi\nho\n```\n"
                       "```console\n$ bash -c 'exit 3'  # exit 3\n```\n")
    page = Page(page_md, tmp_path / "work", lambda d: None, {})
    blocks = parse_blocks(page_md)
    with pytest.raises(AssertionError, match="exited 1"):
        page.run_block(blocks[0])
    with pytest.raises(AssertionError, match="output differs"):
        page.run_block(blocks[1])
    page.run_block(blocks[2])
    page_md.write_text("<!-- docs-test: replace 41 => 42 -->\n```console\n$ echo 41\n42\n```\n"
                       "<!-- docs-test: replace 43 => 44 -->\n```console\n$ echo 41\n```\n")
    blocks = parse_blocks(page_md)
    page.run_block(blocks[0])
    with pytest.raises(ValueError, match="does not apply"):
        page.run_block(blocks[1])
    made = []
    page_md.write_text("<!-- docs-test: setup thing -->\n```bash\ntest -f thing.txt\n```\n"
                       "<!-- docs-test: setup nothing -->\n```bash\ntrue\n```\n")
    with_setup = Page(page_md, tmp_path / "work2", lambda d: None,
                      {"thing": lambda d: made.append((d / "thing.txt").write_text("x"))})
    with_setup.run_block(parse_blocks(page_md)[0])
    assert len(made) == 1
    with pytest.raises(ValueError, match="unknown setup"):
        with_setup.run_block(parse_blocks(page_md)[1])
    page_md.write_text("```python\nx = 40\n```\n```pycon\n>>> x + 2\n42\n```\n```pycon\n>>> x + 3\n42\n```\n")
    blocks = parse_blocks(page_md)
    page.run_block(blocks[0])
    page.run_block(blocks[1])  # one namespace per page: x is still there
    with pytest.raises(AssertionError, match="doctest example"):
        page.run_block(blocks[2])


def test_help_examples_name_paths_the_demo_writes(demo_dir):
    """``--source NAME=DIR`` in a command's --help must name a directory ``rsembed-store demo`` writes."""
    import re

    import click

    from rsembed_store.cli import main

    ctx = click.Context(main, info_name="rsembed-store")
    checked = 0
    for name, command in main.commands.items():
        text = command.get_help(click.Context(command, parent=ctx, info_name=name))
        for path in re.findall(r"--source\s+[\w.-]+=(\./\S+)", text):
            checked += 1
            assert (demo_dir / path).is_dir(), \
                f"`rsembed-store {name} --help` names {path}, which the demo does not write"
    assert checked >= 2  # ingest and serve show one at least
