"""Shared fixtures: the digits data set and a small trained model, built once per session.

Tests use scikit-learn's bundled ``digits`` (or ../shared/datasets/mnist) — nothing is
downloaded. Heavy fixtures are session-scoped so TensorFlow trains each model once.
"""
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
MNIST_DIR = SHARED / "datasets" / "mnist"


@pytest.fixture(scope="session")
def digits():
    from edgekit.data import load_data
    return load_data("digits")


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory, digits):
    """A `tiny` CNN trained on digits (~90%+ test accuracy), as an artifact dir (read-only!)."""
    from edgekit.models import train
    out = tmp_path_factory.mktemp("tiny") / "tiny"
    return train("tiny", digits, out, epochs=25, batch_size=32, seed=0, progress=False)


@pytest.fixture(scope="session")
def seed_digits_artifact(tmp_path_factory, digits):
    """`seed-mnist-cnn` trained briefly on 8x8 digits, as an artifact dir (read-only!)."""
    from edgekit.models import train
    out = tmp_path_factory.mktemp("seed") / "seed"
    return train("seed-mnist-cnn", digits, out, epochs=15, batch_size=32, seed=0, progress=False)


@pytest.fixture
def artifact_copy(tmp_path):
    """Copy an artifact dir so a test may modify it: ``artifact_copy(art) -> Path``."""
    def _copy(art):
        dst = tmp_path / (Path(art.path).name + "-copy")
        n = 1
        while dst.exists():  # a second copy in the same test
            n += 1
            dst = tmp_path / "{}-copy{}".format(Path(art.path).name, n)
        shutil.copytree(art.path, dst)
        return dst
    return _copy


@pytest.fixture
def run_cli(capfd):
    """Run the edgekit CLI in-process: returns (exit_code, stdout, stderr)."""
    from edgekit.cli import main

    def _run(*args):
        capfd.readouterr()  # only this run's output (not e.g. tensorflow's import-time logs)
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capfd.readouterr()
        return code, out, err
    return _run


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, tiny_artifact):
    """`tiny_artifact` copied and exported to ONNX for laptop-cpu (read-only!)."""
    from edgekit.artifact import Artifact
    from edgekit.export import export
    dst = tmp_path_factory.mktemp("tiny-onnx") / "tiny"
    shutil.copytree(str(tiny_artifact.path), str(dst))
    export(dst, ["onnx"], target="laptop-cpu", parity_samples=100)
    return Artifact.open(dst)
