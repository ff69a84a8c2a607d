"""Artifact directories: atomic staging, tamper detection, the manifest fields of
docs/contract.md."""
import hashlib
import json

import pytest

from edgekit.artifact import Artifact, describe_file, new_manifest, staging, write_manifest
from edgekit.errors import EdgekitError


def _leftovers(parent):
    return sorted(p.name for p in parent.iterdir())


def test_staging_failure_leaves_nothing(tmp_path):
    out = tmp_path / "art"
    with pytest.raises(ValueError):
        with staging(out) as tmp:
            (tmp / "model.h5").write_bytes(b"x" * 1000)
            raise ValueError("boom half-way")
    assert _leftovers(tmp_path) == []


def test_staging_without_manifest_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="manifest"):
        with staging(tmp_path / "art") as tmp:
            (tmp / "model.h5").write_bytes(b"x")
    assert _leftovers(tmp_path) == []


def test_staging_refuses_existing_and_force_replaces_only_on_success(tmp_path):
    out = tmp_path / "art"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(EdgekitError, match="already exists"):
        with staging(out):
            pass
    with pytest.raises(KeyError):
        with staging(out, force=True) as tmp:
            write_manifest(tmp, new_manifest("model", "train", {}, {}, {}, []))
            raise KeyError("fails before the rename")
    assert _leftovers(out) == ["old.txt"] and _leftovers(tmp_path) == ["art"]
    with staging(out, force=True) as tmp:
        write_manifest(tmp, new_manifest("model", "train", {}, {}, {}, []))
    assert _leftovers(out) == ["manifest.json"] and _leftovers(tmp_path) == ["art"]


def test_manifest_fields_per_contract(tiny_artifact):
    m = json.loads((tiny_artifact.path / "manifest.json").read_text())
    assert m["edgekit_version"] == __import__("edgekit").__version__
    assert m["kind"] == "model"
    assert m["method"]["name"] == "train" and m["method"]["params"]["arch"] == "tiny"
    assert m["source"]["data"] == "digits" and len(m["source"]["data_sha256"]) == 64
    assert "model_sha256" in m["source"]
    inp = m["input"]
    assert inp["shape"] == [None, 8, 8, 1] and inp["dtype"] == "float32" and inp["layout"] == "NHWC"
    assert inp["scale"] == pytest.approx(1 / 16.0) and inp["mean"] == [0.0] and inp["std"] == [1.0]
    assert m["classes"] == [str(i) for i in range(10)]
    met = m["metrics"]
    assert 0.0 <= met["accuracy"] <= 1.0 and met["params"] > 0 and met["macs"] > 0
    h5 = tiny_artifact.path / "model.h5"
    assert met["bytes"] == h5.stat().st_size
    entry = m["files"]["model.h5"]
    assert entry["format"] == "keras" and entry["precision"] == "fp32"
    assert entry["bytes"] == h5.stat().st_size
    assert entry["sha256"] == hashlib.sha256(h5.read_bytes()).hexdigest()


def test_modified_or_missing_file_detected(tiny_artifact, artifact_copy):
    path = artifact_copy(tiny_artifact)
    Artifact.open(path)  # intact copy opens
    with open(path / "model.h5", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(EdgekitError, match="artifact modified since it was written"):
        Artifact.open(path)
    (path / "model.h5").unlink()
    with pytest.raises(EdgekitError, match="is missing"):
        Artifact.open(path)


def test_bad_manifests(tmp_path):
    with pytest.raises(EdgekitError, match="does not exist"):
        Artifact.open(tmp_path / "nope")
    (tmp_path / "a").mkdir()
    with pytest.raises(EdgekitError, match="no manifest.json"):
        Artifact.open(tmp_path / "a")
    (tmp_path / "a" / "manifest.json").write_text("{not json")
    with pytest.raises(EdgekitError, match="not valid JSON"):
        Artifact.open(tmp_path / "a")
    (tmp_path / "a" / "manifest.json").write_text("[1, 2]")
    with pytest.raises(EdgekitError, match="top level: .* is not of type .object."):
        Artifact.open(tmp_path / "a")
    (tmp_path / "f").write_text("x")
    with pytest.raises(EdgekitError, match="not an artifact directory"):
        Artifact.open(tmp_path / "f")


def test_add_files_records_and_verifies(tiny_artifact, artifact_copy):
    art = Artifact.open(artifact_copy(tiny_artifact))
    stage = art.staging_dir()
    (stage / "extra.npz").write_bytes(b"123456")
    art.add_files(stage, {"extra.npz": describe_file(stage / "extra.npz", "npz", "fp32")},
                  {"metrics": {"note": 1}})
    again = Artifact.open(art.path)
    assert again.files["extra.npz"]["bytes"] == 6
    assert again.manifest["metrics"]["note"] == 1
    assert again.manifest["metrics"]["accuracy"] == tiny_artifact.manifest["metrics"]["accuracy"]
    assert again.find("npz") == ["extra.npz"] and again.find("keras") == ["model.h5"]


def test_published_artifact_has_the_users_modes_not_mkdtemps_0700(tmp_path):
    import os
    import stat
    old = os.umask(0o022)
    try:
        import importlib
        import edgekit.util as util
        importlib.reload(util)  # re-read the umask set above
        import edgekit.artifact as artifact
        importlib.reload(artifact)
        with artifact.staging(tmp_path / "art") as tmp:
            artifact.write_manifest(tmp, new_manifest("model", "train", {}, {}, {}, []))
    finally:
        os.umask(old)
        importlib.reload(util)
        importlib.reload(artifact)
    mode = stat.S_IMODE((tmp_path / "art").stat().st_mode)
    assert mode == 0o755, oct(mode)
    fmode = stat.S_IMODE((tmp_path / "art" / "manifest.json").stat().st_mode)
    assert fmode == 0o644, oct(fmode)
