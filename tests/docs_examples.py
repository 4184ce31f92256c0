"""Run the examples of README.md and docs/*.md: the parsing and running half of tests/test_docs.py.

A page's fenced blocks run in order, in one scratch directory per page that holds a copy
of a small demo store (``./rsembed-store``) and the demo's source (``./rsembed-demo``):

- ``console``: lines starting with ``$ `` are commands (continued by a trailing ``\\`` or an
  open quote), the lines after one are its expected output. Expected output, when given,
  must match the command's stdout, stderr or both, whitespace ignored, ``...`` or ``…``
  standing for any text. A command must exit 0 unless it ends with a comment ``# exit N``.
- ``bash`` / ``sh``: every command of the block, checked as above (no expected output).
- ``python``: exec'd in one namespace per page (``>>>`` blocks run as doctests there).
- ``sql``: each block runs through ``rsembed-store sql``.

Plain ``rsembed-store ...`` commands (no pipes, variables or redirections) run in this
process through click, which is the same code as the console script without 2 s of
imports per command; every other command runs under ``bash -c`` (all of them do with
``RSEMBED_DOCS_SUBPROCESS=1``, slower, to check the installed console script itself). A ``rsembed-store ...
serve`` without ``--request`` starts a real server (uvicorn on a free loopback port;
``localhost:8765`` and ``127.0.0.1:8765`` in the page's later blocks are rewritten to it).

HTML comments right before a block steer it; they are visible in the page's source:

- ``<!-- docs-test: skip (REASON) -->``: not run, reported as a skip with REASON;
- ``<!-- docs-test: replace OLD => NEW -->``: run with OLD replaced by NEW (e.g. a tiny size
  for a benchmark), repeatable;
- ``<!-- docs-test: setup NAME -->``: first make what the page assumes the reader has
  (NAME is one of ``SETUPS`` in tests/test_docs.py).
"""

from __future__ import annotations

import doctest
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
RUN_LANGS = ("console", "bash", "sh", "shell", "python", "pycon", "sql")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
DIRECTIVE = re.compile(r"^\s*<!--\s*docs-test:\s*(.*?)\s*-->\s*$")
EXIT_COMMENT = re.compile(r"#\s*exits?\s+(\d+)\b")
DEFAULT_PORT = "8765"
TOKEN = "docs-example-token"


def doc_files() -> List[Path]:
    """README.md and every page under docs/, in a stable order."""
    return [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))


@dataclass
class Block:
    """One fenced block of a page and the directives written right before it."""

    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    directives: List[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        path = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path.name
        return f"{path}:{self.line}"

    @property
    def skip_reason(self) -> Optional[str]:
        for d in self.directives:
            if d.split()[0] == "skip":
                m = re.match(r"skip\s*\((.+)\)\s*$", d, re.S)
                if not m:
                    raise ValueError(f"{self.id}: '<!-- docs-test: {d} -->' needs a reason: skip (REASON)")
                return m.group(1).strip()
        return None

    def code(self) -> str:
        """The block's text with its ``replace`` directives applied."""
        text = self.text
        for d in self.directives:
            if d.startswith("replace "):
                old, sep, new = d[len("replace "):].partition("=>")
                if not sep or old.strip() not in text:
                    raise ValueError(f"{self.id}: directive {d!r} does not apply (use 'replace OLD => NEW' "
                                     "with OLD found in the block)")
                text = text.replace(old.strip(), new.strip())
        return text

    def setups(self) -> List[str]:
        return [d.split(None, 1)[1].strip() for d in self.directives if d.startswith("setup ")]


def parse_blocks(path: Path) -> List[Block]:
    """Every fenced block of ``path`` whose language is run (see RUN_LANGS)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    blocks: List[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group(1), m.group(2), m.group(3).lower()
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        body = [ln[len(indent):] if ln.startswith(indent) else ln.lstrip() for ln in lines[i + 1:j]]
        directives: List[str] = []
        k = i - 1
        while k >= 0 and (not lines[k].strip() or DIRECTIVE.match(lines[k])):
            d = DIRECTIVE.match(lines[k])
            if d:
                directives.insert(0, d.group(1))
            k -= 1
        known = ("skip", "replace", "setup")
        for d in directives:
            if d.split()[0] not in known:
                raise ValueError(f"{path}:{i + 1}: unknown directive {d!r}; accepted: {', '.join(known)}")
        if lang in RUN_LANGS:
            blocks.append(Block(path, i + 1, lang, "\n".join(body), directives))
        elif directives:
            raise ValueError(f"{path}:{i + 1}: a docs-test directive before a ```{lang} block, which is never "
                             f"run; run languages: {', '.join(RUN_LANGS)}")
        i = j + 1
    return blocks


def _complete(command: str) -> bool:
    """Whether ``command`` is whole: no trailing backslash, no open quote."""
    if command.rstrip().endswith("\\"):
        return False
    try:
        shlex.split(command, comments=True)
    except ValueError:  # no closing quotation
        return False
    return True


def parse_console(text: str, prompts: bool = True) -> List[Tuple[str, str]]:
    """``[(command, expected output)]`` of a console block (``prompts``) or a bash block."""
    out: List[Tuple[str, List[str]]] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        is_cmd = line.startswith("$ ") if prompts else (line.strip() and not line.lstrip().startswith("#"))
        if is_cmd:
            cmd = line[2:] if prompts else line
            while not _complete(cmd) and i + 1 < len(lines):
                i += 1
                cmd += "\n" + lines[i]
            out.append((cmd, []))
        elif out and prompts:
            out[-1][1].append(line)
        i += 1
    return [(cmd, "\n".join(exp).strip()) for cmd, exp in out]


def output_matches(expected: str, actual: str) -> bool:
    """``expected`` equals ``actual`` ignoring whitespace, with ``...``/``…`` matching any text."""
    pattern = []
    for part in re.split(r"(\.\.\.|…)", expected):
        if part in ("...", "…"):
            pattern.append(".*?")
        else:
            pattern.append(re.escape("".join(part.split())))
    return re.fullmatch("".join(pattern), "".join(actual.split()), re.S) is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def matches(self, expected: str) -> bool:
        return any(output_matches(expected, text)
                   for text in (self.stdout, self.stderr, self.stdout + self.stderr, self.stderr + self.stdout))


class Page:
    """The state one page's blocks share: a scratch directory, a Python namespace, servers."""

    def __init__(self, path: Path, workdir: Path, prepare: Callable[[Path], None],
                 setups: Dict[str, Callable[[Path], None]]):
        self.path = path
        self.workdir = workdir
        self.namespace: Dict[str, object] = {"__name__": "__docs__"}
        self.servers: List[Tuple[subprocess.Popen, Path]] = []
        self.port: Optional[int] = None
        self.done: set = set()
        self.setups = setups
        self.setups_done: set = set()
        workdir.mkdir(parents=True)
        prepare(workdir)
        self.env = dict(os.environ)
        self.env.pop("RSEMBED_STORE_DB", None)
        self.env.pop("RSEMBED_STORE_TOKEN", None)
        self.env.update(TOKEN=TOKEN, PYTHONPATH=str(ROOT),
                        PATH=os.path.dirname(sys.executable) + os.pathsep + self.env.get("PATH", ""))

    # ------------------------------------------------------------------ running
    def run_block(self, block: Block) -> None:
        for name in block.setups():
            if name not in self.setups:
                raise ValueError(f"{block.id}: unknown setup {name!r}; known: {sorted(self.setups)}")
            if name not in self.setups_done:
                self.setups[name](self.workdir)
                self.setups_done.add(name)
        code = self._ports(block.code())
        if block.lang in ("python", "pycon"):
            self._python(block, code)
        elif block.lang == "sql":
            res = self.shell(["rsembed-store", "sql", code])
            assert res.code == 0, f"{block.id}: the SQL failed (exit {res.code}):\n{res.stdout}{res.stderr}"
        else:
            for cmd, expected in parse_console(code, prompts=block.lang == "console"):
                self._command(block, cmd, expected)

    def _ports(self, text: str) -> str:
        if self.port is None:
            return text
        for host in ("localhost", "127.0.0.1"):
            text = text.replace(f"{host}:{DEFAULT_PORT}", f"127.0.0.1:{self.port}")
        return text

    def _python(self, block: Block, code: str) -> None:
        cwd = os.getcwd()
        os.chdir(self.workdir)
        os.environ["TOKEN"] = TOKEN  # as in the shell: the page's "$TOKEN"
        try:
            if code.lstrip().startswith(">>>"):
                test = doctest.DocTestParser().get_doctest(code, self.namespace, block.id, str(block.path),
                                                           block.line)
                runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
                runner.run(test, clear_globs=False)
                assert runner.failures == 0, f"{block.id}: {runner.failures} doctest example(s) failed"
            else:
                exec(compile(code, block.id, "exec"), self.namespace)
        finally:
            os.environ.pop("TOKEN", None)
            os.chdir(cwd)

    def _command(self, block: Block, cmd: str, expected: str) -> None:
        cmd, expected = self._ports(cmd), self._ports(expected)  # a server may have started in this block
        m = EXIT_COMMENT.search(cmd.split("\n")[-1])
        want = int(m.group(1)) if m else 0
        argv = _plain_argv(cmd, self.env)
        if argv and argv[0] == "rsembed-store" and "serve" in argv and "--request" not in argv:
            self._serve(block, argv, expected)
            return
        in_process = argv and not os.environ.get("RSEMBED_DOCS_SUBPROCESS")
        res = self.shell(argv) if in_process else self._bash(cmd)
        where = f"{block.id}: `{cmd}`"
        assert res.code == want, (f"{where} exited {res.code}, the page expects {want}\n"
                                  f"stdout:\n{res.stdout}\nstderr:\n{res.stderr}")
        if expected:
            assert res.matches(expected), (f"{where}: the output differs from the page's\n--- page:\n{expected}\n"
                                           f"--- stdout:\n{res.stdout}\n--- stderr:\n{res.stderr}")

    def shell(self, argv: List[str]) -> Result:
        """An ``rsembed-store`` command, in this process (the console script's own entry point)."""
        from click.testing import CliRunner

        from rsembed_store.cli import main

        env = {k: self.env.get(k) for k in ("TOKEN", "RSEMBED_STORE_DB", "RSEMBED_STORE_TOKEN")}
        cwd = os.getcwd()
        os.chdir(self.workdir)
        try:
            res = CliRunner(env=env).invoke(main, argv[1:], prog_name="rsembed-store")
        finally:
            os.chdir(cwd)
        if res.exception is not None and not isinstance(res.exception, SystemExit):
            raise res.exception
        return Result(res.exit_code, res.stdout, res.stderr)

    def _bash(self, cmd: str) -> Result:
        proc = subprocess.run(["bash", "-c", cmd], cwd=self.workdir, env=self.env, capture_output=True,
                              text=True, timeout=300)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def _serve(self, block: Block, argv: List[str], expected: str) -> None:
        """Start ``rsembed-store ... serve`` for real on a free port; the page's later blocks reach it."""
        self.port = self.port or free_port()
        argv = list(argv)
        if "--port" in argv:
            argv[argv.index("--port") + 1] = str(self.port)
        else:
            argv += ["--port", str(self.port)]
        argv = [os.path.join(os.path.dirname(sys.executable), "rsembed-store")] + argv[1:]
        log = self.workdir / f"serve-{len(self.servers)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, cwd=self.workdir, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.servers.append((proc, log))
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"{block.id}: the server exited {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{block.id}: the server did not answer /health in 120 s:\n{log.read_text()}")
            time.sleep(0.2)
        if expected:
            text = log.read_text()
            first = self._ports(expected)
            assert any(output_matches(first, ln) for ln in text.splitlines()), \
                f"{block.id}: the server's first words differ from the page's\n--- page:\n{first}\n--- log:\n{text}"

    def close(self) -> None:
        """Stop this page's servers (each one this harness started, by its own process group)."""
        for proc, _ in self.servers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        self.servers.clear()


def _plain_argv(cmd: str, env: Dict[str, str]) -> Optional[List[str]]:
    """The argv of a plain ``rsembed-store`` command (``$NAME`` taken from ``env``), or None
    when it needs a shell."""
    cmd = re.sub(r"\$\{?([A-Za-z_]\w*)\}?", lambda m: shlex.quote(env.get(m.group(1), "")), cmd)
    if any(ch in cmd for ch in "$`~"):
        return None
    lex = shlex.shlex(cmd.replace("\\\n", " "), posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    try:
        argv = list(lex)
    except ValueError:
        return None
    if not argv or argv[0] != "rsembed-store" or any(set(a) <= set("();<>|&") for a in argv):
        return None
    return argv


def copy_store(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, symlinks=True)
