"""The runtime/format registry (edgekit.runtime.registry) is the one table of runtimes:
the runner map, formats, module and distribution names and install hints all come from it."""
from pathlib import Path

from edgekit.runtime import RUNNERS, RUNTIME_FORMATS, runner_class
from edgekit.runtime.registry import FORMAT_RUNTIME, FORMATS, ONNX_OPSET, RUNTIMES, installed


def test_every_row_names_a_runner_module_and_a_format():
    for name, row in RUNTIMES.items():
        module, cls = row["runner"]
        path = Path(__file__).resolve().parent.parent / (module.replace(".", "/") + ".py")
        assert path.is_file() and "class {}(".format(cls) in path.read_text(), name
        assert row["format"] in FORMATS and row["modules"] and row["dists"] and row["install"]
    assert RUNNERS == {n: r["runner"] for n, r in RUNTIMES.items()}
    assert RUNTIME_FORMATS == {n: r["format"] for n, r in RUNTIMES.items()}
    # the host runtime measuring each format reads that format
    assert all(RUNTIMES[rt]["format"] == f for f, rt in FORMAT_RUNTIME.items())
    assert set(FORMAT_RUNTIME) == set(FORMATS)


def test_installed_and_runner_class_agree_here():
    assert installed("onnxruntime")
    assert runner_class("onnxruntime").__name__ == RUNTIMES["onnxruntime"]["runner"][1]


def test_the_other_tables_are_views_of_it():
    from edgekit.compress.int8.common import FORMATS as QUANTIZE_FORMATS, RUNTIME
    from edgekit.compress.knn.onnx import OPSET
    from edgekit.export import FORMAT_RUNTIME as EXPORT_RUNTIME, FORMATS as EXPORT_FORMATS
    from edgekit.export.onnx import DEFAULT_OPSET
    from edgekit.packages import INSTALL, PACKAGES
    assert EXPORT_FORMATS == FORMATS and set(QUANTIZE_FORMATS) == set(FORMATS)
    assert QUANTIZE_FORMATS[0] == "tflite"          # a Keras model's primary int8 file
    assert EXPORT_RUNTIME == RUNTIME == FORMAT_RUNTIME
    assert DEFAULT_OPSET == OPSET == ONNX_OPSET == 13
    for name, row in RUNTIMES.items():
        assert PACKAGES[name] == row["dists"] and INSTALL[name] == row["install"]


def test_the_device_scripts_copy_of_the_module_map_matches():
    """deploy/edgekit_remote.py runs on the device before any edgekit is there (piped to its
    Python), so it keeps its own copy of runtime -> modules: held equal here."""
    from edgekit.resources import remote_module
    assert remote_module().RUNTIME_MODULES == {n: r["modules"] for n, r in RUNTIMES.items()}
