"""The typed target (edgekit.targets.Target): every shipped TOML parses into it unchanged,
every key is declared and read by some code (or listed as informational), and a descriptor
with an unknown or mistyped key is one `error:` line at the command boundary."""
import re
import shutil
from pathlib import Path

import pytest

import edgekit.targets as targets
from edgekit.errors import EdgekitError
from edgekit.targets import INFORMATIONAL, TARGET_SCHEMA, Target, as_target, load_target

ROOT = Path(__file__).resolve().parent.parent


def test_every_shipped_target_is_a_typed_target():
    for name in targets.target_names():
        t = load_target(name)
        assert isinstance(t, Target) and t.name == t["name"] == name
        assert t.max_opset == t["max_opset"] and t.default_opset <= t.max_opset
        assert set(t) <= set(TARGET_SCHEMA)
        assert as_target(t) is t                     # passed down: never parsed again
        assert as_target(dict(t)) == t               # a dict is checked the same way


def _sources():
    """Every edgekit and test source, the target schema and Target's fields left out."""
    texts = []
    for p in sorted((ROOT / "edgekit").rglob("*.py")) + sorted((ROOT / "tests").glob("*.py")):
        if p.name == Path(__file__).name:
            continue
        text = p.read_text()
        if p.name == "targets.py" and p.parent.name == "edgekit":
            text = re.sub(r"TARGET_SCHEMA = \{.*?\n\}\n", "", text, flags=re.S)
            text = re.sub(r"class Target\(.*?\n    def __post_init__", "", text, flags=re.S)
        texts.append(text)
    return "\n".join(texts)


def _read(key, text):
    return re.search(r"""["']{0}["']|\.{0}\b|\{{{0}\}}""".format(key), text) is not None


def test_every_key_is_read_by_some_code_or_listed_as_informational():
    text = _sources()
    unread = [k for k in TARGET_SCHEMA if k not in INFORMATIONAL and not _read(k, text)]
    assert unread == [], "keys no code reads: read them, or list them in INFORMATIONAL"
    for key in INFORMATIONAL:
        hits = [t for t in re.findall(r"""\w*\[["']{0}["']\]|\w+\.get\(["']{0}["']""".format(key),
                                      text)]
        assert not any(h.startswith(("t[", "t.get", "target")) for h in hits), key


@pytest.mark.parametrize("extra, message", [
    ('colour = "red"\n', "unknown key colour"),
    ('max_opset = "13"\n', None),
    ('[hardware]\nwat = 1\n', "unknown key hardware.wat"),
    ('static_batch = 0\n', "static_batch must be a whole number >= 1"),
])
def test_a_bad_descriptor_is_one_error_line(monkeypatch, tmp_path, run_cli, extra, message):
    src = targets._targets_dir()
    for p in src.iterdir():
        if p.name.endswith(".toml"):
            shutil.copy(str(p), str(tmp_path / p.name))
    text = (src / "laptop-cpu.toml").read_text().replace("default = true", "")
    if extra.startswith("max_opset"):
        text, message = re.sub(r"(?m)^max_opset = \d+", extra.strip(), text), "max_opset must be"
    else:
        text = extra + text if not extra.startswith("[") else text + "\n" + extra
    (tmp_path / "bad.toml").write_text(text.replace('name = "laptop-cpu"', 'name = "bad"'))
    monkeypatch.setattr(targets, "_targets_dir", lambda: tmp_path)
    with pytest.raises(EdgekitError, match=re.escape(message)):
        load_target("bad")
    code, out, err = run_cli("doctor", "--target", "bad")
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: ") and message in err
    assert "Traceback" not in err
    assert load_target("laptop-cpu").name == "laptop-cpu"      # the others still load
