"""The bad-input catalogue: every verb x every class of hostile or clumsy input (issue 12).

Each case runs the CLI in-process and checks the promise of CONTRACT.md: the expected exit
code, exactly one ``error:`` line and it comes first on stderr, no traceback, the message
names the problem (a regex), and nothing new or changed on disk (a listing of the test's
directory, sizes and mtimes, before and after).

A case is ``(id, args, code, pattern)``; ``{name}`` in args is a path built on first use by
``BUILDERS[name]`` in the test's tmp dir (copies of the session's tiny artifacts, hostile
manifests, malformed data files), so a case that needs no model never trains one.
"""
import gzip
import hashlib
import json
import os
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

# -- building blocks ------------------------------------------------------------------------


class World(dict):
    """``{placeholder}`` -> path, each built on first use by ``BUILDERS``."""

    def __init__(self, tmp, request):
        super().__init__()
        self.tmp, self.request = Path(tmp), request

    def __missing__(self, key):
        value = str(BUILDERS[key](self))
        self[key] = value
        return value

    def fixture(self, name):
        return self.request.getfixturevalue(name)

    def copy(self, fixture, name):
        dst = self.tmp / name
        if not dst.exists():
            shutil.copytree(str(self.fixture(fixture).path), str(dst))
        return dst


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def _rewrite(art, mutate):
    path = art / "manifest.json"
    m = json.loads(path.read_text())
    out = mutate(m, art)
    path.write_text(out if isinstance(out, str) else json.dumps(m))
    return art


def onnx(m):
    """Name of the manifest's ONNX file."""
    return next(n for n, e in m["files"].items() if e["format"] == "onnx")


def _move_out(m, art, name=None, new=None, where=None):
    """Move a listed file outside the artifact and list it as ``new`` (matching sha256)."""
    name = name or onnx(m)
    outside = where or art.parent / "outside.onnx"
    shutil.move(str(art / name), str(outside))
    m["files"][new if new is not None else str(outside)] = m["files"].pop(name)
    return m


def _symlink_out(m, art):
    outside = art.parent / "outside.onnx"
    shutil.move(str(art / onnx(m)), str(outside))
    (art / "link.onnx").symlink_to(outside)
    m["files"]["link.onnx"] = m["files"].pop(onnx(m))
    return m


def _victim(m, art):
    victim = art.parent / "victim.txt"
    victim.write_bytes(b"precious data\n")
    m["files"]["../victim.txt"] = {"format": "onnx", "precision": "fp32", "bytes": 14,
                                   "sha256": _sha(b"precious data\n")}
    return m


def _onnx_hostile(mutate):
    return lambda w: _rewrite(w.copy("tiny_onnx", "art"), mutate)


def _keras_hostile(mutate):
    return lambda w: _rewrite(w.copy("tiny_artifact", "art"), mutate)


MANIFEST_NAMES = {  # class 1: names that leave the artifact
    "dotdot": _onnx_hostile(lambda m, a: _move_out(m, a, new="../outside.onnx")),
    "nested_dotdot": _onnx_hostile(lambda m, a: _move_out(m, a, new="sub/../../outside.onnx")),
    "absolute": _onnx_hostile(lambda m, a: _move_out(m, a)),
    "symlink_out": _onnx_hostile(_symlink_out),
    "victim": _onnx_hostile(_victim),
    "home": _onnx_hostile(lambda m, a: m["files"].update({"~/x.onnx": m["files"][onnx(m)]})),
    "manifest_itself": _onnx_hostile(
        lambda m, a: m["files"].update({"manifest.json": m["files"][onnx(m)]})),
    "weights_out": _onnx_hostile(
        lambda m, a: m["files"][onnx(m)].update({"format": "openvino", "weights": "../x.bin"})),
    "keras_dotdot": _keras_hostile(lambda m, a: _move_out(m, a, "model.h5", "../outside.h5",
                                                          a.parent / "outside.h5")),
}

MANIFEST_SCHEMA = {  # class 1: a manifest whose fields are not what CONTRACT.md says
    "files_list": lambda m, a: m.update({"files": [onnx(m)]}),
    "entry_not_object": lambda m, a: m["files"].update({onnx(m): "model.onnx"}),
    "sha_not_hex": lambda m, a: m["files"][onnx(m)].update({"sha256": "../../etc"}),
    "bytes_string": lambda m, a: m["metrics"].update({"bytes": "12"}),
    "accuracy_nan": lambda m, a: json.dumps(m).replace('"accuracy": 0.', '"accuracy": NaN, "x": 0.', 1),
    "accuracy_2": lambda m, a: m["metrics"].update({"accuracy": 2.0}),
    "kind_bogus": lambda m, a: m.update({"kind": "rootkit"}),
    "method_missing": lambda m, a: m.pop("method"),
    "input_shape_str": lambda m, a: m["input"].update({"shape": "28x28"}),
    "input_std_zero": lambda m, a: m["input"].update({"std": [0.0]}),
    "classes_dict": lambda m, a: m.update({"classes": {"0": "a"}}),
    "truncated": lambda m, a: json.dumps(m)[:40],
    "not_utf8": lambda m, a: "\udcff",
    "top_list": lambda m, a: "[]",
    "deep": lambda m, a: "[" * 100000 + "]" * 100000,
    "huge_number": lambda m, a: json.dumps(m).replace('"bytes": ', '"bytes": 1e999, "b": ', 1),
}


def _write_manifest_text(w, mutate):
    art = w.copy("tiny_onnx", "art")
    path = art / "manifest.json"
    m = json.loads(path.read_text())
    out = mutate(m, art)
    if out == "\udcff":
        path.write_bytes(b"\xff\xfe{}")
    else:
        path.write_text(out if isinstance(out, str) else json.dumps(m))
    return art


BUILDERS = {"tmp": lambda w: w.tmp}
BUILDERS.update({"evil_" + k: v for k, v in MANIFEST_NAMES.items()})
BUILDERS.update({"schema_" + k: (lambda mut: lambda w: _write_manifest_text(w, mut))(v)
                 for k, v in MANIFEST_SCHEMA.items()})

# Every verb that opens an artifact, with a placeholder for it.
ARTIFACT_VERBS = {
    "eval": ["eval", "{A}", "--data", "digits"],
    "bench": ["bench", "{A}", "--target", "laptop-cpu", "--iterations", "1", "--warmup", "0"],
    "doctor": ["doctor", "{A}", "--target", "laptop-cpu"],
    "export": ["export", "{A}", "--format", "onnx", "--parity-samples", "5"],
    "export_o": ["export", "{A}", "--format", "onnx", "--parity-samples", "5", "-o", "{tmp}/out"],
    "deploy": ["deploy", "{A}", "--target", "laptop-cpu", "--host", "nobody@127.0.0.1", "--dry-run"],
    "compress": ["compress", "{A}", "--method", "prune", "--data", "digits", "--epochs", "1",
                 "-o", "{tmp}/c"],
    "demo": ["demo", "--model", "{A}", "-o", "{tmp}/d", "--iterations", "2"],
}

CASES = []


def case(cid, args, code=1, pattern=""):
    CASES.append(pytest.param(args, code, pattern, id=cid))


for verb, args in ARTIFACT_VERBS.items():
    for name in MANIFEST_NAMES:
        case("names-{}-{}".format(verb, name),
             [a.replace("{A}", "{evil_%s}" % name) for a in args], 1,
             r"must stay inside the artifact|is not a file of the artifact")
for verb in ("eval", "bench", "doctor", "export", "deploy"):
    for name in MANIFEST_SCHEMA:
        case("manifest-{}-{}".format(verb, name),
             [a.replace("{A}", "{schema_%s}" % name) for a in ARTIFACT_VERBS[verb]], 1,
             r"manifest")


# -- the check ------------------------------------------------------------------------------

def listing(root):
    """Every path under ``root`` with (size, mtime_ns, symlink target): what 'nothing new or
    changed on disk' compares."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(str(root)):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            out[os.path.relpath(p, str(root))] = (
                st.st_size if not os.path.isdir(p) else 0, st.st_mtime_ns,
                os.readlink(p) if os.path.islink(p) else None)
    return out


def assert_one_error_line(code, err, want_code, pattern):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == want_code, "exit {} (want {}); stderr:\n{}".format(code, want_code, err)
    assert "Traceback" not in err, err
    assert lines and lines[0].startswith("error: "), "first stderr line is not error::\n" + err
    assert sum(ln.startswith("error:") for ln in lines) == 1, err
    assert re.search(pattern, lines[0]), "{!r} not in {!r}".format(pattern, lines[0])


@pytest.mark.parametrize("args, code, pattern", CASES)
def test_bad_input(args, code, pattern, tmp_path, request, run_cli, monkeypatch):
    world = World(tmp_path / "w", request)
    world.tmp.mkdir()
    argv = [a.format_map(world) for a in args]
    monkeypatch.chdir(world.tmp)
    before = listing(world.tmp)
    got, out, err = run_cli(*argv)
    assert_one_error_line(got, err, code, pattern)
    assert listing(world.tmp) == before, "files were created, changed or removed"
