"""A user's model file made an edgekit artifact: ``edgekit import FILE -o ART``.

Why one verb (and not every verb making artifacts on the fly): an artifact records what a
model file alone does not say -- the data it is scored on, its classes, its input
preprocessing (``--preprocess``/``--scale/--mean/--std``, said once here instead of on every
later command), its accuracy -- next to the file's sha256. ``export``, ``bench``, ``deploy``
and ``doctor`` then read those facts from the manifest as they do for any artifact, and a
Keras file is loaded (tensorflow, Keras 3 translation) once, not on each command. Every
"not an artifact" error points here. A bare ``.onnx`` file is still taken as it is by those
verbs (wrapped in a throw-away artifact, :func:`edgekit.onnx_model.artifact_for`): it needs
no tensorflow, and importing it first is optional.

* ``.onnx`` (any framework; external data beside it, local functions): :func:`edgekit.
  onnx_model.import_onnx` -- ``model.onnx`` self-contained, layout / output convention /
  preprocessing in the manifest; ``data`` optional (then accuracy is not recorded).
* ``.h5`` / ``.hdf5`` / ``.keras`` / SavedModel dir: loaded by :func:`edgekit.models.
  load_model`, fitted to ``data`` (required: accuracy and input are recorded), saved as
  the artifact's Keras model (kind ``model``, method ``import``).

Example::

    art = import_model("lenet.onnx", "out/lenet", data="mnist:DIR",
                       preprocess={"scale": 1 / 255, "mean": 0.1307, "std": 0.3081})
    art.manifest["source"]["model_sha256"], art.manifest["input"]["layout"]   # ..., 'NCHW'
"""
from pathlib import Path

from edgekit.errors import EdgekitError

from edgekit.artifact import KERAS_SUFFIXES, import_hint, model_file_kind  # noqa: F401 (API)


def import_model(model, out, data=None, preprocess=None, force=False, say=None):
    """Write the model file ``model`` as the artifact ``out`` (atomic; nothing written on an
    error) and return it. ``data``: a spec or Dataset (required for a Keras model);
    ``preprocess``: what :func:`edgekit.adapt.fit_data` takes (a name, a
    ``{"scale","mean","std"}`` dict or a parsed tuple); ``say``: progress / note lines."""
    path = Path(str(model))
    if not path.exists():
        raise EdgekitError("model {} does not exist".format(path))
    if path.is_dir() and (path / "manifest.json").is_file():
        raise EdgekitError("{} is already an edgekit artifact: pass it to export / bench / "
                           "deploy as it is".format(path))
    if out is not None and Path(str(out)).exists() and not force:
        raise EdgekitError("output {} already exists: choose another -o or pass --force".format(out))
    if isinstance(preprocess, dict):
        from edgekit.adapt import parse_preprocess
        preprocess = parse_preprocess(preprocess)
    kind = model_file_kind(path)
    if kind == "onnx":
        from edgekit.onnx_model import import_onnx
        return import_onnx(path, out, data=data, force=force, preprocess=preprocess, say=say)
    if kind == "keras":
        return _import_keras(path, out, data, preprocess, force, say)
    raise EdgekitError("{} is not a model file edgekit reads: give a .onnx, .h5/.keras file or "
                       "a SavedModel directory".format(path))


def _import_keras(path, out, data, preprocess, force, say):
    from edgekit.adapt import fit_data
    from edgekit.data import load_data
    from edgekit.models import check_model_fits, load_model, model_sha256, save_keras_artifact
    if data is None:
        raise EdgekitError("{} is a Keras model: pass --data SPEC (the import records its "
                           "accuracy on the test split and the input it expects)".format(path))
    net = load_model(path)
    ds = data if hasattr(data, "x_train") else load_data(data)
    ds = fit_data(ds, net, preprocess=preprocess, say=say)
    check_model_fits(net, ds)
    source = {"model_sha256": model_sha256(path), "model": str(path), "data": ds.spec,
              "data_sha256": ds.fingerprint()}
    return save_keras_artifact(net, out, ds, "import", {"format": "keras", "file": path.name},
                               source, force=force)


__all__ = ["import_model", "import_hint", "model_file_kind"]
