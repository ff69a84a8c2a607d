"""``edgekit.<verb>`` stays callable: Python binds a submodule to its package on import, so a
verb named like its module (``edgekit.export`` and the package ``edgekit/export/``) used to
turn into a module ("'module' object is not callable") once anything imported it.

Each verb is called twice, after every verb module was imported, with input that reaches the
verb's own checks (its one-line EdgekitError proves the verb ran, not a TypeError); doctor and
load_data run for real."""
import importlib
import subprocess
import sys

import pytest

import edgekit
from edgekit.errors import EdgekitError

MODULES = ["edgekit.export", "edgekit.export.onnx", "edgekit.bench", "edgekit.report",
           "edgekit.deploy", "edgekit.compress", "edgekit.optimize", "edgekit.optimize.front",
           "edgekit.doctor", "edgekit.demo", "edgekit.models", "edgekit.data"]


def _calls(tmp):
    none = str(tmp / "no-such-artifact")
    return {
        "train": (lambda f: f("tiny", "nosuch:zz", str(tmp / "t")), "unknown data spec"),
        "evaluate": (lambda f: f(none, "digits"), "does not exist"),
        "eval": (lambda f: f(none, "digits"), "does not exist"),
        "bench": (lambda f: f(none), "does not exist"),
        "report": (lambda f: f([none + ".json"], str(tmp / "r")), "does not exist"),
        "export": (lambda f: f(none, formats=["onnx"]), "does not exist"),
        "deploy": (lambda f: f(none, hosts=["nano"]), "does not exist"),
        "compress": (lambda f: f(none, "prune", "digits", str(tmp / "c")), "does not exist"),
        "optimize": (lambda f: f(none, "digits", str(tmp / "o")), "does not exist"),
        "demo": (lambda f: f(data="nosuch:zz", out=str(tmp / "d")), "unknown data spec"),
    }


def test_every_verb_is_callable_twice_after_its_module_was_imported(tmp_path):
    for m in MODULES:
        importlib.import_module(m)
    for verb, (call, message) in _calls(tmp_path).items():
        for _ in range(2):
            f = getattr(edgekit, verb)
            assert callable(f), verb
            with pytest.raises(EdgekitError, match=message):
                call(f)
    assert not any(tmp_path.iterdir()), "a refused call wrote something"
    for _ in range(2):
        assert edgekit.doctor()["packages"]["numpy"]
        assert len(edgekit.load_data("digits").y_test) > 0
    assert edgekit.Artifact.__name__ == "Artifact"


def test_the_modules_stay_modules():
    """The callable module is still the module: submodules and names resolve as before."""
    import edgekit.export.onnx as eo
    from edgekit import doctor
    assert eo.__name__ == "edgekit.export.onnx"
    assert callable(edgekit.export.export) and edgekit.export.onnx is eo
    assert "numpy" in doctor.PACKAGES and doctor is sys.modules["edgekit.doctor"]


def test_a_verb_is_callable_on_first_access_in_a_fresh_interpreter():
    """Before and after the submodule import, in one fresh process (no test imported it)."""
    code = ("import edgekit, importlib; a = edgekit.doctor; importlib.import_module("
            "'edgekit.doctor'); b = edgekit.doctor; import edgekit.report; "
            "print(callable(a), callable(b), a is b, callable(edgekit.report))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "True", "True"]
