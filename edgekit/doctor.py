"""``doctor``: which packages are installed, and can this machine run a target?

Versions come from ``importlib.metadata`` (package metadata only), so the report is fast
and never imports tensorflow. A target check (:func:`edgekit.targets.machine_check`) looks
for what the target's descriptor (targets/T.toml) says it needs: the host architecture, a
hardware marker (a file such as a board's release file, a USB vendor id), the L4T release,
the packages (at pinned versions) and OpenVINO's device list. Each missing piece comes with
the target's own install hint. With an artifact, the target's rules (formats, precisions,
opset, ops) are checked too (:func:`edgekit.targets.check_artifact`).

Example::

    rep = doctor(target=default_target())       # edgekit.targets.default_target
    rep["target"]["ready"], [m["install"] for m in rep["target"]["missing"]]
"""
import platform
import sys
from pathlib import Path

from edgekit.packages import INSTALL, PACKAGES, package_version  # noqa: F401 (doctor API)


def versions():
    """``{name: version or None}`` for Python and every package edgekit can use."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        out[name] = package_version(name)
    return out


def check_target(target, v=None):
    """``{"name", "ready", "runtimes", "missing", "notes"}`` for running ``target`` here
    (:func:`edgekit.targets.machine_check`; ``v``: versions already read)."""
    from edgekit.targets import machine_check
    return machine_check(target, versions=dict(v) if v is not None else None)


def doctor(target=None, artifact=None):
    """The doctor report: versions, plus the target check and artifact problems if asked.

    With ``artifact`` but no ``target`` the artifact is checked against the default target.
    """
    v = versions()
    report = {"python": {"version": v["python"], "executable": sys.executable,
                         "platform": platform.platform()},
              "packages": {k: val for k, val in v.items() if k != "python"}}
    if artifact is not None and target is None:
        from edgekit.targets import default_target
        target = default_target()
    if target is not None:
        report["target"] = check_target(target, v)
    if artifact is not None:
        report["artifact"] = {"path": str(artifact), "problems": artifact_problems(artifact, target)}
    return report


def artifact_problems(artifact, target):
    """What stops ``artifact`` (an artifact dir or a bare ``.onnx`` file) from running on
    ``target`` (:func:`edgekit.targets.check_artifact`)."""
    from edgekit.onnx_model import artifact_for, is_onnx_file
    if is_onnx_file(artifact):
        with artifact_for(artifact) as art_dir:
            from edgekit.onnx_model import MODEL_FILE
            name = Path(str(artifact)).name
            return [p.replace(str(art_dir), str(artifact)).replace(MODEL_FILE + ":", name + ":")
                    for p in artifact_problems(art_dir, target)]
    from edgekit.artifact import Artifact
    from edgekit.targets import check_artifact
    return list(check_artifact(Artifact.open(artifact), target))
