"""The docs stay true: every relative link in README.md and docs/ names a file or folder that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "results").glob("README.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    missing = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a web address or an anchor of the same page
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.exists():
            missing.append(target)
    assert not missing, f"{page.name} links files that do not exist: {missing}"


COMMAND = re.compile(r"^(?:\$ )?ifprune ([a-z][a-z-]*)(.*)$")  # a line of a fenced block, or an inline code span
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
SPAN = re.compile(r"`([^`\n]+)`")


def _shown_commands(text: str) -> list[tuple[str, str]]:
    lines = [ln.strip() for block in FENCE.findall(text) for ln in block.splitlines()[1:-1]]
    lines += SPAN.findall(FENCE.sub("", text))
    return [m.groups() for ln in lines if (m := COMMAND.match(ln.strip()))]
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
IMPORT = re.compile(r"^\s*(from ifprune[\w.]* import [\w, ()]+|import ifprune[\w.]*)\s*$", re.M)


def _subparsers():
    import argparse

    from ifprune.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def _flags(parser) -> set[str]:
    import argparse

    flags = {s for a in parser._actions for s in a.option_strings}
    for a in parser._actions:  # nested sub-commands (e.g. eval's suites, cache's actions)
        if isinstance(a, argparse._SubParsersAction):
            for p in a.choices.values():
                flags |= _flags(p)
    return flags


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_commands_name_real_subcommands_and_flags(page):
    """Every `ifprune CMD ... --flag` a page shows names a sub-command the CLI has and flags it takes."""
    subs = _subparsers()
    bad = []
    for cmd, rest in _shown_commands(page.read_text(encoding="utf-8")):
        if cmd not in subs:
            bad.append(f"ifprune {cmd}")
            continue
        known = _flags(subs[cmd])
        bad += [f"ifprune {cmd} {f}" for f in FLAG.findall(rest.split("#", 1)[0]) if f not in known]
    assert not bad, f"{page.name} shows commands or flags the CLI does not have: {bad}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_shown_import(page):
    import importlib

    bad = []
    for stmt in IMPORT.findall(page.read_text(encoding="utf-8")):
        stmt = stmt.replace("(", "").replace(")", "")
        if stmt.startswith("import "):
            mods, names = [stmt.split()[1]], []
        else:
            mod, names = stmt[5:].split(" import ")
            mods, names = [mod], [n.strip() for n in names.split(",") if n.strip()]
        try:
            m = importlib.import_module(mods[0])
            bad += [f"{mods[0]}.{n}" for n in names if not hasattr(m, n)]
        except ImportError:
            bad.append(mods[0])
    assert not bad, f"{page.name} shows imports that fail: {bad}"


def test_the_command_check_catches_a_misspelt_flag():
    shown = _shown_commands("Run `ifprune generate hi --kep 0.5`, then\n```\n$ ifprune serve --port 8000\n```\n")
    assert sorted(shown) == [("generate", " hi --kep 0.5"), ("serve", " --port 8000")]
    subs = _subparsers()
    assert "--kep" not in _flags(subs["generate"]) and "--port" in _flags(subs["serve"])
