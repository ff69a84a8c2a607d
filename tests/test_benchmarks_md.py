"""BENCHMARKS.md is a table of figures that stand, each traceable: every script it names
exists, every raw JSON it cites is in benchmarks/results/ and parses, no machine paths."""
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEXT = (REPO / "BENCHMARKS.md").read_text()
RESULTS = REPO / "benchmarks" / "results"


def _sections():
    parts = re.split(r"^## ", TEXT, flags=re.M)[1:]
    return {p.splitlines()[0].strip(): p for p in parts}


def test_short():
    assert len(TEXT.splitlines()) <= 300


def test_no_paths_of_the_machine():
    for bad in ("/work/", "/tmp/", "/root/", "/home/", "/opt/", "../shared"):
        assert bad not in TEXT, bad


def test_every_script_named_exists():
    scripts = set(re.findall(r"benchmarks/[\w./-]+?\.py", TEXT))
    assert len(scripts) >= 8
    for s in scripts:
        assert (REPO / s).is_file(), s


def test_every_json_cited_is_present_and_parses():
    cited = set(re.findall(r"\[`?([\w.-]+\.json)`?\]\(benchmarks/results/([\w.-]+\.json)\)", TEXT))
    assert len(cited) >= 10
    for shown, target in cited:
        assert shown == target, (shown, target)
        with open(RESULTS / target) as fh:
            data = json.load(fh)
        assert data, target
    # a bare results name in the text is linked too
    for name in set(re.findall(r"`([\w.-]+\.json)`", TEXT)) - {"out.json", "knn.json"}:
        assert (RESULTS / name).is_file(), name


def test_each_area_has_command_date_machine_and_raw_json():
    for title, body in _sections().items():
        if title.startswith(("Machine", "Areas without")):
            continue
        assert re.search(r"benchmarks/\w+\.py", body), title
        assert "](benchmarks/results/" in body, title
        assert re.search(r"20\d\d-\d\d-\d\d", body), title
        assert re.search(r"\bidle\b|other jobs?|shared", body), title  # the load it ran under


def test_edgekit_commands_shown_are_the_clis():
    from test_readme import _cli_params, edgekit_commands
    params = _cli_params()
    cmds = edgekit_commands(TEXT)
    assert cmds
    for argv in cmds:
        assert argv[0] in params, argv
        for tok in argv[1:]:
            if tok.startswith("--"):
                assert tok.split("=", 1)[0] in params[argv[0]], (argv[0], tok)
