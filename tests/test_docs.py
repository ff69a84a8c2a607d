"""The docs site builds with no warning, its CLI reference is the CLI's, and every `edgekit`
command shown in the docs uses verbs and options that exist."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_readme import _cli_params, edgekit_commands

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"


def test_mkdocs_build_strict(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_MKDOCS_2_WARNING="1")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                       cwd=str(REPO), capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "WARNING" not in r.stderr, r.stderr[-3000:]
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert "edgekit compress" in cli and "--max-drop" in cli
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    assert 'id="edgekit.compress.compress"' in api


def test_cli_reference_matches_help(run_cli):
    from edgekit.cli.reference import commands, markdown, option_strings
    text = markdown()
    sections = {s.split("\n", 1)[0].strip(): s for s in text.split("\n## edgekit ")[1:]}
    names = [n for n, _ in commands()]
    assert sorted(sections) == sorted(names)
    for name, cmd in commands():
        code, out, _ = run_cli(name, "--help")
        assert code == 0
        documented = {o.strip("`") for line in sections[name].splitlines() if line.startswith("| `-")
                      for o in line.split(" | ")[0].lstrip("| ").split(", ")}
        assert documented == option_strings(cmd), name
        for opt in documented:
            if opt.startswith("--"):
                assert opt in out, "{}: {} documented but not in --help".format(name, opt)


@pytest.mark.parametrize("page", sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")))
def test_docs_commands_use_real_verbs_and_options(page):
    params = _cli_params()
    for argv in edgekit_commands((DOCS / page).read_text()):
        verb = argv[0]
        assert verb in params, "{}: `edgekit {}` is no command".format(page, verb)
        for tok in argv[1:]:
            if tok.startswith("--"):
                opt = tok.split("=", 1)[0]
                assert opt in params[verb], "{}: `edgekit {} {}` is no option".format(page, verb, opt)
