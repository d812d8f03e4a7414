"""Every code block of README.md and docs/*.md is checked, by its language tag.

* ``python``: a page's blocks run in order in one namespace (slow lane, except the pages listed in
  ``FAST_PYTHON``, whose blocks are cheap);
* ``toml``: parsed with tomllib; a run configuration (its tables are sections of
  ``implicit_rec.config``) is validated by ``config.from_dict``. A block whose first line is a comment
  naming a file (``# small.toml``) is that file for the page's ``--config small.toml`` commands;
* ``bash`` / ``console`` / ``sh``: every ``implicit-rec ...`` command parses with the CLI's parser
  and its ``--config`` / ``--set`` load; every ``python -m experiments.X`` / ``benchmarks.X`` command
  imports its module and its arguments parse (the job is never run); every ``make TARGET`` names a
  target of the Makefile; a command the checker does not know fails the test;
* ``text``: output samples and listings, not checked.

Relative links and images must resolve to files, and their ``#anchors`` to headings. A new page in
``docs/`` is picked up by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import importlib.util
import inspect
import io
import os
import re
import shlex
import tomllib
from pathlib import Path
from unittest import mock

import pytest

from implicit_rec import cli, config
from implicit_rec.domains import cli as domain_cli

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"bash", "console", "sh"}
LANGUAGES = {"python", "toml", "text"} | SHELL
FAST_PYTHON = {"README.md"}  # pages whose python blocks run in a few seconds: checked in the fast lane
SEPARATORS = {";", "&&", "||", "|", "&"}
PUNCTUATION = "();<>|&"


@dataclasses.dataclass(frozen=True)
class Block:
    page: Path
    line: int  # line of the opening fence, 1-based
    language: str
    code: str

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a markdown page, in order."""
    found, opening, body = [], None, []
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        if opening is None:
            if stripped.startswith("```"):
                opening = (number, stripped[3:].strip())
                body = []
        elif stripped == "```":
            found.append(Block(page, opening[0], opening[1], "\n".join(body) + "\n"))
            opening = None
        else:
            body.append(line)
    assert opening is None, f"{page.relative_to(ROOT)}:{opening[0]}: code block never closed"
    return found


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _of(language: str) -> list[Path]:
    return [page for page in PAGES if any(b.language == language for b in blocks(page))]


def test_pages_found():
    names = {page.name for page in PAGES}
    assert {"README.md", "run.md", "solvers.md", "development.md"} <= names, names


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_block_has_a_language_the_checker_knows(page):
    for block in blocks(page):
        assert block.language in LANGUAGES, (
            f"{block.where()}: code block tagged {block.language!r}; tag it with one of "
            f"{', '.join(sorted(LANGUAGES))} (text for output samples)"
        )


# --- links -----------------------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    slugs = set()
    in_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            slugs.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return slugs


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_relative_links_resolve(page):
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page_id(page)}: link {target!r} points to {linked}, which does not exist"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), (
                f"{page_id(page)}: link {target!r}: {linked.name} has no heading with anchor #{anchor}"
            )


# --- toml --------------------------------------------------------------------------------------------


def toml_file_name(block: Block) -> str | None:
    """``small.toml`` for a block whose first line is ``# small.toml``."""
    first = block.code.splitlines()[0].strip() if block.code.strip() else ""
    match = re.fullmatch(r"#\s*([\w.\-]+\.toml)", first)
    return match[1] if match else None


@pytest.mark.parametrize("page", _of("toml"), ids=page_id)
def test_toml_blocks_parse_and_run_configurations_validate(page):
    for block in blocks(page):
        if block.language != "toml":
            continue
        try:
            raw = tomllib.loads(block.code)
        except tomllib.TOMLDecodeError as err:
            pytest.fail(f"{block.where()}: not valid TOML: {err}")
        if raw and set(raw) <= set(config.SECTIONS):
            try:
                config.from_dict(raw, origin=block.where())
            except config.ConfigError as err:
                pytest.fail(str(err))


# --- shell ---------------------------------------------------------------------------------------------


def commands(block: Block) -> list[list[str]]:
    """The commands of a shell block as argument lists: comments, redirections and pipes dropped."""
    lines = block.code.splitlines()
    if block.language == "console":  # only prompt lines are commands; the rest is output
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    text = "\n".join(lines).replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=PUNCTUATION)
        lexer.whitespace_split = True
        current, redirected = [], False
        for token in lexer:
            if token in SEPARATORS:
                found.append(current)
                current, redirected = [], False
            elif set(token) <= set(PUNCTUATION):  # > file, < file, 2>&1: not an argument
                redirected = True
            elif not redirected:
                current.append(token)
        found.append(current)
    return [c for c in found if c]


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {m[1] for m in re.finditer(r"^([A-Za-z0-9_.\-/]+)\s*:(?!=)", text, flags=re.M)}


@contextlib.contextmanager
def captured():
    """Collect what argparse prints (help, errors) so a failure can show it."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        yield out


def last_line(out: io.StringIO) -> str:
    """argparse's error line (the usage block above it says nothing more)."""
    lines = out.getvalue().strip().splitlines()
    return lines[-1] if lines else "(no message)"


def _help_asked(args: list[str]) -> bool:
    return "-h" in args or "--help" in args


def check_cli(args: list[str], where: str, config_files: dict[str, Path]) -> None:
    with captured() as out:
        try:
            parsed = cli.build_parser().parse_args(args)
        except SystemExit as exit_:
            if exit_.code == 0 and _help_asked(args):
                return
            pytest.fail(f"{where}: `implicit-rec {shlex.join(args)}` does not parse: {last_line(out)}")
    if parsed.command == "domain":  # a domain study's own configuration (--preset, --set, --seed)
        with captured() as out:
            try:
                domain_cli.configure(parsed)
            except SystemExit:
                pytest.fail(f"{where}: `implicit-rec {shlex.join(args)}`: {last_line(out)}")
        return
    overrides = tuple(getattr(parsed, "overrides", None) or ())
    config_file = getattr(parsed, "config", None)
    if config_file is None and not overrides:
        return
    try:  # the configuration the command would load (--dataset and the other flags left out)
        config.load_config(config_files.get(config_file), overrides)
    except config.ConfigError as err:
        pytest.fail(f"{where}: `implicit-rec {shlex.join(args)}`: {err}")


class _Parsed(BaseException):
    """Raised in place of returning from parse_args: the arguments parsed, the job must not run."""


def check_module(module: str, args: list[str], where: str) -> None:
    if not module.startswith(("experiments.", "benchmarks.")):
        assert importlib.util.find_spec(module) is not None, f"{where}: no module {module!r}"
        return
    mod = importlib.import_module(module)
    command = f"python -m {module} {shlex.join(args)}"
    if hasattr(mod, "build_parser"):
        run = lambda: mod.build_parser().parse_args(args)  # noqa: E731
    elif hasattr(mod, "main") and "parse_args" in inspect.getsource(mod):
        original = argparse.ArgumentParser.parse_args

        def parse_then_stop(self, argv=None, namespace=None):
            raise _Parsed(original(self, argv, namespace))

        def run():
            with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop):
                mod.main(args)
            pytest.fail(f"{where}: `{command}`: main() returned without parsing its arguments")
    else:
        return  # a script without options: importing it is the check
    with captured() as out:
        try:
            run()
        except _Parsed:
            pass
        except SystemExit as exit_:
            if not (exit_.code == 0 and _help_asked(args)):
                pytest.fail(f"{where}: `{command}` does not parse: {last_line(out)}")


def check_command(argv: list[str], where: str, config_files: dict[str, Path]) -> None:
    while argv and (re.match(r"[A-Za-z_][A-Za-z0-9_]*=", argv[0]) or argv[0] == "time"):
        argv = argv[1:]  # VAR=value make ..., time make ...
    word, args = Path(argv[0]).name, argv[1:]
    if word == "implicit-rec":
        check_cli(args, where, config_files)
    elif word in ("python", "python3"):
        assert args[:1] == ["-m"] and len(args) >= 2, f"{where}: expected `python -m MODULE ...`, got {argv}"
        check_module(args[1], args[2:], where)
    elif word == "make":
        targets = [a for a in args if not a.startswith("-") and "=" not in a]
        unknown = sorted(set(targets) - make_targets())
        assert not unknown, f"{where}: `make {' '.join(args)}`: no Makefile target {', '.join(unknown)}"
    elif argv[0].startswith((".ci/", "./")):
        script = ROOT / argv[0]
        assert script.is_file() and os.access(script, os.X_OK), f"{where}: {argv[0]} is not an executable file"
    else:
        pytest.fail(f"{where}: the doc test does not know how to check `{shlex.join(argv)}`; teach check_command")


@pytest.mark.parametrize("page", [p for p in PAGES if any(b.language in SHELL for b in blocks(p))], ids=page_id)
def test_shell_commands_parse(page, tmp_path, monkeypatch):
    config_files = {}
    for block in blocks(page):
        name = toml_file_name(block) if block.language == "toml" else None
        if name:
            config_files[name] = tmp_path / "files" / name
            config_files[name].parent.mkdir(exist_ok=True)
            config_files[name].write_text(block.code, encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # relative --out paths resolve to nothing that exists
    checked = 0
    for block in blocks(page):
        if block.language in SHELL:
            for argv in commands(block):
                check_command(argv, block.where(), config_files)
                checked += 1
    assert checked, f"{page_id(page)}: shell blocks without a command"


def test_commands_are_split_as_the_shell_would():
    block = Block(
        ROOT / "README.md",
        1,
        "bash",
        "A=1 make test   # comment\n"
        "implicit-rec config > my.toml; implicit-rec --help\n"
        'implicit-rec run --set \'vm.archs=["mlp","din"]\' \\\n    --out runs/x | tee log\n',
    )
    assert commands(block) == [
        ["A=1", "make", "test"],
        ["implicit-rec", "config"],
        ["implicit-rec", "--help"],
        ["implicit-rec", "run", "--set", 'vm.archs=["mlp","din"]', "--out", "runs/x"],
        ["tee", "log"],
    ]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["implicit-rec", "run", "--no-such-flag"], "does not parse: .*--no-such-flag"),
        (["implicit-rec", "run", "--set", "vm.epoch=3"], "did you mean 'vm.epochs'"),
        (["implicit-rec", "run", "--config", "small.toml"], "unknown key 'vm.epoch'"),
        (["python", "-m", "experiments.loopfm_transfer", "--no-such-flag"], "does not parse: .*--no-such-flag"),
        (["python", "-m", "benchmarks.layers", "--repeats", "x"], "does not parse"),
        (["python", "-m", "no_such_module"], "no module"),
        (["make", "no-such-target"], "no Makefile target no-such-target"),
        (["rm", "-rf", "runs"], "does not know how to check"),
    ],
)
def test_a_bad_command_is_caught(argv, message, tmp_path, monkeypatch):
    bad = tmp_path / "small.toml"
    bad.write_text("[vm]\nepoch = 3\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises((pytest.fail.Exception, AssertionError), match=message):
        check_command(argv, "test", {"small.toml": bad})


def test_good_commands_pass(tmp_path, monkeypatch):
    good = tmp_path / "small.toml"
    good.write_text('[vm]\nepochs = 3\narchs = ["mlp"]\n')
    monkeypatch.chdir(tmp_path)
    files = {"small.toml": good}
    check_command(["implicit-rec", "run", "--config", "small.toml", "--set", "vm.seeds=2"], "test", files)
    check_command(["python", "-m", "experiments.loopfm_transfer", "--preset", "tiny"], "test", {})
    check_command(["implicit-rec", "run", "--help"], "test", {})
    check_command(["PYTHON_NEWEST=/x", "make", "test-newest"], "test", {})


# --- python --------------------------------------------------------------------------------------------


def _python_pages() -> list:
    return [
        pytest.param(page, marks=() if page_id(page) in FAST_PYTHON else (pytest.mark.slow,), id=page_id(page))
        for page in _of("python")
    ]


@pytest.mark.parametrize("page", _python_pages())
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything a block writes lands here
    namespace = {"__name__": "__docs__"}
    for block in blocks(page):
        if block.language == "python":
            code = "\n" * block.line + block.code  # tracebacks name the page's own line numbers
            exec(compile(code, str(block.page), "exec"), namespace)
