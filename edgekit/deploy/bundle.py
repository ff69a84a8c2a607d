"""What goes to the device: a deterministic tar (sorted entries, mtime 0, uid/gid 0) of the
model file the target runs, manifest.json, the device-side package, deploy/edgekit_remote.py,
a test subset and bundle.json + SHA256SUMS. Same inputs -> same bytes -> same sha256.

Example::

    b = build_bundle("out/seed", target_name); b.sha256, b.meta["model"]   # a targets/*.toml name
"""
import hashlib
import io
import json
import posixpath
import tarfile

from edgekit import __version__
from edgekit.errors import EdgekitError
from edgekit.resources import data_file


REMOTE_SCRIPT = data_file("deploy", "edgekit_remote.py")   # packaged: found in any install
SETUP_SCRIPT = data_file("deploy", "setup_device.sh")
OV2022_WRAPPER = data_file("deploy", "openvino2022_python.sh")



def _docker(target):
    """The target's ``[docker]`` table (targets/T.toml); refuses a target without an image."""
    from edgekit.targets import as_target, target_names
    t = as_target(target)
    if not t.get("docker"):
        have = [n for n in target_names() if as_target(n).get("docker")]
        raise EdgekitError("--docker has no image for target {} (images: {})".format(
            t["name"], ", ".join(have)))
    return t["docker"]


class Bundle:
    """A deterministic tar of what runs on the device, plus its listing."""

    def __init__(self, data, entries, meta, files=None):
        self.data = data                  # the tar bytes
        self.files = files or {}          # {member name: bytes} (what the tar holds)
        self.entries = entries            # [(name, size)] sorted
        self.meta = meta
        self.sha256 = hashlib.sha256(data).hexdigest()

    @property
    def size(self):
        return len(self.data)

    @property
    def short(self):
        return self.sha256[:16]


def _tar_add(tf, name, data, mode=0o644):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = mode
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    tf.addfile(info, io.BytesIO(data))


def _test_npz(spec, samples, art=None):
    """The test subset shipped with a bundle: prepared as the model was built for it
    (edgekit.adapt.data_for: preprocessing, size, channels), in the model's input layout."""
    import numpy as np
    from edgekit.adapt import data_for
    from edgekit.data import load_data
    from edgekit.onnx_model import check_artifact_data, manifest_layout, to_model_layout
    ds = load_data(spec)
    if art is not None:
        ds = data_for(ds, art.manifest.get("input"))
        check_artifact_data(art, ds)  # an imported ONNX: names the user's file
        art.check_data_fits(ds)
    n = min(int(samples), len(ds.x_test))
    x = ds.x_test[:n].astype(np.float32)
    if art is not None:
        x = to_model_layout(x, manifest_layout(art.manifest))
    buf = io.BytesIO()
    np.savez_compressed(buf, x=x, y=ds.y_test[:n].astype(np.int64))
    return buf.getvalue(), n


def build_bundle(artifact, target, runtime=None, test_samples=1000, data=None, docker=False,
                 model_file=None):
    """Build the bundle for ``target`` (deterministic: same inputs -> same bytes/sha256)."""
    from edgekit.artifact import Artifact
    from edgekit.targets import as_target, pick_file, remote_facts
    t = as_target(target)
    runtime = runtime or t["runtimes"][0]
    if runtime not in t["runtimes"]:
        raise EdgekitError("target {} has no runtime {!r} (it has: {})".format(
            t["name"], runtime, ", ".join(t["runtimes"])))
    if int(test_samples) < 0:
        raise EdgekitError("--test-samples must be >= 0")
    art = Artifact.open(artifact)
    name, entry = pick_file(art, t, runtime, model_file)
    files = {}
    src = art.file(name)
    if src.is_dir():
        for p in sorted(src.rglob("*")):
            if p.is_file():
                files["model/" + name + "/" + p.relative_to(src).as_posix()] = p.read_bytes()
        model_rel = "model/" + name + ("/" + entry["entry"] if entry.get("entry") else "")
    else:
        files["model/" + name] = src.read_bytes()
        model_rel = "model/" + name
    if entry.get("format") == "openvino" and src.suffix == ".xml":
        bin_name = entry.get("weights") or name[:-4] + ".bin"
        if bin_name in art.files and art.file(bin_name).is_file():
            files["model/" + bin_name] = art.file(bin_name).read_bytes()
    files["manifest.json"] = (art.path / "manifest.json").read_bytes()
    from edgekit.resources import runtime_sources
    files.update(runtime_sources())
    files["deploy/edgekit_remote.py"] = REMOTE_SCRIPT.read_bytes()
    files["deploy/setup_device.sh"] = SETUP_SCRIPT.read_bytes()
    if "openvino" in t["runtimes"]:  # --remote-python for a host with the 2022.3 archive
        files["deploy/openvino2022_python.sh"] = OV2022_WRAPPER.read_bytes()
    if docker:
        dockerfile = _docker(t)["dockerfile"]
        files[dockerfile] = data_file("docker", dockerfile).read_bytes()
    n = 0
    spec = data or art.manifest.get("source", {}).get("data")
    if int(test_samples) > 0 and spec:
        files["data/test.npz"], n = _test_npz(spec, test_samples, art)
    meta = {"edgekit_version": __version__, "target": t["name"], "runtime": runtime,
            "model": model_rel, "format": entry.get("format"), "precision": entry.get("precision"),
            "device": t.get("device"),  # the target's device (targets/T.toml)
            "bytes": art.run_bytes(name), "model_sha256": entry.get("sha256"),  # IR: +.bin
            "artifact": art.path.name, "method": art.method,
            "npz": "data/test.npz" if n else None, "test_samples": n, "data": spec if n else None,
            "facts": remote_facts(t)}  # for `deploy/edgekit_remote.py doctor` on the device
    files["bundle.json"] = (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()
    sums = "".join("{}  {}\n".format(hashlib.sha256(files[k]).hexdigest(), k) for k in sorted(files))
    files["SHA256SUMS"] = sums.encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        dirs = sorted({posixpath.dirname(k) for k in files} - {""})
        all_dirs = sorted({"/".join(d.split("/")[:i + 1]) for d in dirs for i in range(d.count("/") + 1)})
        for d in all_dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            info.uname = info.gname = "root"
            tf.addfile(info)
        for k in sorted(files):
            _tar_add(tf, k, files[k], 0o755 if k.endswith((".sh", "edgekit_remote.py")) else 0o644)
    b = Bundle(buf.getvalue(), [(k, len(files[k])) for k in sorted(files)], meta, files)
    b.meta["sha256"] = b.sha256
    return b
