"""The README's commands are the CLI's: every ``edgekit VERB --opt`` it shows exists. The
quickstart and every other README command are run for real by tests/test_guides.py (README.md
is its first page), which checks that the quickstart prints what the README says it prints.
"""
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
MAX_LINES = 250
BOX = set("┏┓┗┛┡┩┃│┳┻╇━─┴┬└┘┌┐╋├┤ ")


def code_blocks(text):
    """(language, body) of every fenced code block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)


def edgekit_commands(text):
    """Each `edgekit ...` command line shown in a code block (continuations joined, comments
    and a leading `$ ` dropped), as an argv list without the leading `edgekit`. A ```text
    block is output, not commands."""
    cmds = []
    for lang, body in code_blocks(text):
        if lang == "text":
            continue
        joined = re.sub(r"\\\n\s*", " ", body)
        for line in joined.splitlines():
            line = line.strip()
            if line.startswith("$ "):
                line = line[2:]
            if not line.startswith("edgekit "):
                continue
            argv = shlex.split(line, comments=True)
            cmds.append(argv[1:])
    return cmds


def _cli_params():
    """verb -> every option string it accepts, from the click command behind `edgekit --help`."""
    import typer.main
    from edgekit.cli import app
    group = typer.main.get_command(app)
    return {name: {o for p in cmd.params for o in list(p.opts) + list(p.secondary_opts)}
            for name, cmd in group.commands.items()}


def test_readme_is_short_and_starts_with_the_user_path():
    text = README.read_text()
    assert len(text.splitlines()) <= MAX_LINES
    heads = [h for h in re.findall(r"^#{2,3} (.+)$", text, flags=re.M)]
    # install, the quickstart and the three journeys come first
    for want in ("Install", "Quickstart", "Three journeys"):
        assert want in heads[:6], heads
    assert "make demo" in text and "make test" in text
    assert 'pip install "edgekit[all]"' in text
    assert "no Jetson Nano and no Neural Compute Stick 2" in text.replace("No Jetson", "no Jetson")


def test_every_readme_command_and_option_exists(run_cli):
    params = _cli_params()
    cmds = edgekit_commands(README.read_text())
    assert len(cmds) >= 15
    helps = {}
    for argv in cmds:
        verb = argv[0]
        assert verb in params, "README shows `edgekit {}`, which is no command".format(verb)
        if verb not in helps:
            code, out, _ = run_cli(verb, "--help")
            assert code == 0
            helps[verb] = out
        for tok in argv[1:]:
            if tok.startswith("-") and not re.match(r"^-\d", tok):
                opt = tok.split("=", 1)[0]
                assert opt in params[verb], "README: `edgekit {} {}` is not an option".format(verb, opt)
                assert opt in helps[verb], "`edgekit {} --help` does not show {}".format(verb, opt)


def _shape(line):
    """A line with numbers wildcarded, box padding collapsed and the `(fastest)` mark dropped,
    so timings and accuracies may differ while words, columns and units must match."""
    line = line.replace(" (fastest)", "")
    line = re.sub(r"\s+", " ", line).strip()
    line = re.sub(r"[+-]?\d[\d,]*(\.\d+)?(e[+-]\d+)?", "#", line)
    return line


@pytest.mark.parametrize("link", sorted(set(re.findall(r"\]\(((?:docs/|BENCHMARKS)[^)#]*)",
                                                        README.read_text()))))
def test_readme_links_point_at_files_or_pages_owned_elsewhere(link):
    # docs/your-model.md, onnx-models.md, hardware.md and contract.md are written by other
    # branches; every other link must resolve here.
    owned_elsewhere = {"docs/your-model.md", "docs/onnx-models.md", "docs/hardware.md",
                       "docs/contract.md"}
    assert (REPO / link).exists() or link in owned_elsewhere, link
