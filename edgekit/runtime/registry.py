"""The runtime/format registry: one row per inference runtime, the facts every layer reads.

A row says which runner class runs the runtime (:func:`edgekit.runtime.runner_class`), the
file format it reads, the Python modules that provide it (first importable wins), the
distributions that carry it (``edgekit doctor``'s versions) and what to install when it is
missing. A new runtime is one runner module plus one row here; a new target is one TOML file
(``targets/*.toml``: which of these runtimes, formats, precisions and opsets it takes).

Python 3.6 syntax and the standard library only: the device bundle ships this file.

Example::

    RUNTIMES["litert"]["format"]          # 'tflite'
    FORMAT_RUNTIME["openvino"]            # 'openvino': the host runtime that measures IR files
    installed("onnxruntime")              # True when onnxruntime imports here
"""
import importlib.util

RUNTIMES = {
    "onnxruntime": {
        "runner": ("edgekit.runtime.ort", "OrtRunner"),
        "format": "onnx",
        "modules": ["onnxruntime"],
        "dists": ["onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"],
        "install": "pip install onnxruntime",
    },
    "openvino": {
        "runner": ("edgekit.runtime.openvino", "OvRunner"),
        "format": "openvino",
        "modules": ["openvino"],
        "dists": ["openvino"],
        "install": "pip install 'edgekit[openvino]'",
    },
    "litert": {
        "runner": ("edgekit.runtime.litert", "LiteRTRunner"),
        "format": "tflite",
        "modules": ["ai_edge_litert", "tflite_runtime"],
        "dists": ["ai-edge-litert"],
        "install": "pip install 'edgekit[tflite]'",
    },
    "tensorrt": {
        "runner": ("edgekit.runtime.tensorrt", "TrtRunner"),
        "format": "onnx",
        "modules": ["tensorrt"],
        "dists": ["tensorrt"],
        "install": "on the Jetson: flash JetPack 4.6.x (4.6 has TensorRT 8.0.1, 4.6.1+ TensorRT "
                   "8.2.1), then sudo apt-get install python3-libnvinfer",
    },
}

# the formats `edgekit export` writes, in its order
FORMATS = ("onnx", "tflite", "openvino")

# format -> the host runtime that measures a file of it (parity, quantize's accuracy)
FORMAT_RUNTIME = {"onnx": "onnxruntime", "tflite": "litert", "openvino": "openvino"}

# the ONNX opset edgekit writes when nothing asks for another: TensorRT 8.2's parser (the
# Jetson Nano's last) reads <= 13, OpenVINO 2022.3 (the NCS2's last) reads it too
ONNX_OPSET = 13


def runtime_format(runtime):
    """The file format ``runtime`` reads (``KeyError`` for an unknown runtime)."""
    return RUNTIMES[runtime]["format"]


def installed(runtime):
    """True when ``runtime``'s Python package imports here (without loading a model)."""
    mods = RUNTIMES[runtime]["modules"] if runtime in RUNTIMES else [runtime]
    return any(importlib.util.find_spec(m) is not None for m in mods)


__all__ = ["RUNTIMES", "FORMATS", "FORMAT_RUNTIME", "ONNX_OPSET", "runtime_format", "installed"]
