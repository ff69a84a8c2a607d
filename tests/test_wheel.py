"""The wheel works anywhere: built from this checkout, installed (not editable) into a fresh
venv, and run from outside the checkout. Targets, deploy scripts and Dockerfiles must come
from the installed package (importlib.resources), not from the checkout's top-level dirs.

The fresh venv sees the project venv's site-packages through a .pth line (after its own
site-packages), so tensorflow & co. are not installed again; edgekit itself is the wheel's."""
import json
import os
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(bin dir, env) of a fresh venv with the edgekit wheel installed non-editable."""
    import shutil
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"  # a copy: setuptools writes build/ and *.egg-info next to the sources
    shutil.copytree(str(REPO / "edgekit"), str(src / "edgekit"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(str(REPO / name), str(src / name))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(root / "dist"), str(src)], capture_output=True, text=True,
                       timeout=300, cwd=str(root))
    assert r.returncode == 0, r.stderr
    wheel = next((root / "dist").glob("edgekit-*.whl"))
    names = zipfile.ZipFile(str(wheel)).namelist()
    for must in ("edgekit/_data/targets/raspberry-pi.toml", "edgekit/_data/deploy/edgekit_remote.py",
                 "edgekit/_data/deploy/setup_device.sh", "edgekit/_data/docker/Dockerfile.ncs2",
                 "edgekit/runtime/tiny.onnx"):
        assert must in names, must
    env_dir = root / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False, symlinks=True).create(str(env_dir))
    py = env_dir / "bin" / "python"
    own = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
                        "--no-index", "-q", str(wheel)], capture_output=True, text=True, timeout=300,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert r.returncode == 0, r.stderr
    assert list(Path(own).glob("edgekit-*.dist-info"))  # installed here, not "already satisfied"
    project = [p for p in site.getsitepackages() if p.endswith("site-packages")][0]
    with open(os.path.join(own, "_edgekit_project_deps.pth"), "w") as fh:
        fh.write(project + "\n")  # a plain path: the project's editable finder is NOT loaded
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = "{}:{}".format(env_dir / "bin", env.get("PATH", "/usr/bin:/bin"))
    return env_dir / "bin", env, root


def run(installed, *argv, cwd=None):
    bindir, env, root = installed
    return subprocess.run([str(bindir / "edgekit")] + [str(a) for a in argv], capture_output=True,
                          text=True, timeout=300, cwd=str(cwd or root), env=env)


def test_the_installed_package_is_imported_not_the_checkout(installed):
    bindir, env, root = installed
    r = subprocess.run([str(bindir / "python"), "-c",
                        "import edgekit, edgekit.resources as r; print(edgekit.__file__); "
                        "print(r.data_file('targets'))"], capture_output=True, text=True,
                       cwd=str(root), env=env)
    assert r.returncode == 0, r.stderr
    mod, data = r.stdout.split()
    assert mod.startswith(str(root / "venv")) and data.startswith(str(root / "venv"))
    assert not mod.startswith(str(REPO))


def test_every_verb_from_outside_the_checkout(installed, tiny_artifact, tmp_path):
    import shutil
    from edgekit.targets import target_names
    names = target_names()
    for t in names:  # every target's descriptor is found; exit 0 ready, 2 hardware missing
        r = run(installed, "doctor", "--json", "--target", t)
        assert r.returncode in (0, 2), (t, r.stderr)
        assert json.loads(r.stdout)["target"]["name"] == t
    art = tmp_path / "tiny"
    shutil.copytree(str(tiny_artifact.path), str(art))
    r = run(installed, "export", art, "--format", "onnx", "--target", "laptop-cpu",
            "--parity-samples", "50", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run(installed, "bench", art, "--iterations", "5", "--warmup", "1", "--eval-samples", "50",
            "--json", tmp_path / "r.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "r.json").read_text())["runtime"] == "onnxruntime"
    r = run(installed, "deploy", art, "--dry-run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run(installed, "deploy", art, "--target", "laptop-cpu", "--dry-run", "--docker", cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.startswith("error: --docker has no image for target")

