"""Files shipped inside the edgekit package: target descriptors, the device-side scripts and
the Dockerfiles (``edgekit/_data/``; the checkout's top-level ``targets/``, ``deploy/`` and
``Dockerfile.*`` are symlinks to them).

Found with :mod:`importlib.resources`, so they are there in an editable install, a checkout
(PYTHONPATH) and a plain ``pip install .`` / wheel alike.

Example::

    data_file("targets", "NAME.toml").read_text()  # targets/NAME.toml
    data_file("deploy", "edgekit_remote.py").read_bytes()     # piped to the device's Python
"""
import importlib.util
from importlib import resources


def data_file(*parts):
    """The packaged file (or directory) ``edgekit/_data/<parts...>`` as a Traversable
    (a ``pathlib.Path`` for every normal install)."""
    node = resources.files("edgekit") / "_data"
    for part in parts:
        node = node / part
    return node


def remote_module():
    """``deploy/edgekit_remote.py`` loaded as a module (the device-side helpers, Python 3.6,
    standard library only): the host runs the same machine checks and L4T parser the device
    runs, from the same file."""
    path = data_file("deploy", "edgekit_remote.py")
    spec = importlib.util.spec_from_file_location("edgekit_remote", str(path))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def runtime_sources():
    """``{relative path: bytes}`` of the device-side package: edgekit/__init__.py and
    edgekit/runtime/* (Python 3.6 syntax, numpy + one runtime). Shipped in every deploy bundle
    and run by the OpenVINO 2022.3 interpreter for the NCS2 export check."""
    pkg = resources.files("edgekit")
    files = {"edgekit/__init__.py": (pkg / "__init__.py").read_bytes()}
    for p in sorted((pkg / "runtime").iterdir(), key=lambda p: p.name):
        if p.is_file() and p.name.endswith((".py", ".onnx", ".tflite")):
            files["edgekit/runtime/" + p.name] = p.read_bytes()
    return files
