"""The model layer's reading side: what a model file is, which Keras wrote it, how edgekit
reads it -- always as a tf_keras model for the rest of edgekit.

=================================  ==========================================================
file                               read as
=================================  ==========================================================
tf_keras ``.h5`` / ``.keras`` /    tf_keras' own ``load_model``
SavedModel with keras_metadata.pb
Keras 3 ``.keras`` / ``.h5``       Keras 3's ``load_model``, graph translated to tf_keras,
                                   weights copied, outputs checked (:mod:`.keras3`)
SavedModel without a Keras graph   a tf_keras model calling its serving function
(Keras 3 ``model.export()``)       (:mod:`.savedmodel`): eval / quantize only
=================================  ==========================================================

Example::

    model, info = read_keras("m.keras")
    info  # {"format": "keras", "keras_version": "3.15.1", "loaded_as": "tf_keras (translated from Keras 3)"}
"""
from pathlib import Path

from edgekit.errors import EdgekitError

LOADED_AS = {
    "tf_keras": "tf_keras",
    "translated": "tf_keras (translated from Keras 3)",
    "function": "tf_keras wrapper of the SavedModel's serving function (no Keras graph)",
    "artifact": "tf_keras (edgekit artifact)",
}


def describe(path):
    """How edgekit reads the Keras model at ``path`` (a file, SavedModel dir or artifact dir):
    ``{"format", "keras_version", "loaded_as", "keras3"}``; ``keras3`` is True when the user's
    model came from Keras 3 (then artifacts carry a Keras 3 copy). No TensorFlow import."""
    from edgekit.modelio.detect import detect
    path = Path(path)
    if path.is_dir() and (path / "manifest.json").exists():
        from edgekit.artifact import Artifact
        src = Artifact.open(path, verify=False).manifest.get("source") or {}
        version = src.get("keras_version")
        return {"format": "artifact", "keras_version": version, "loaded_as": LOADED_AS["artifact"],
                "keras3": bool(src.get("keras3"))}
    info = detect(path)
    if info["keras"] is None:
        how = "function"
    elif info["keras"] >= 3:
        how = "translated"
    else:
        how = "tf_keras"
    return {"format": info["format"], "keras_version": info["keras_version"],
            "loaded_as": LOADED_AS[how], "keras3": how in ("translated", "function")}


def source_fields(path):
    """The manifest ``source`` keys saying how the model at ``path`` was read (``{}`` for an
    in-memory model or a path that is not a Keras model)."""
    if path is None:
        return {}
    try:
        d = describe(path)
    except EdgekitError:
        return {}
    return {"keras_version": d["keras_version"], "loaded_as": d["loaded_as"],
            "keras3": d["keras3"]}


def read_keras(path, custom_objects=None):
    """``(tf_keras model, describe(path))`` of a Keras file or SavedModel dir (not an
    artifact: :func:`edgekit.models.load_model` opens those)."""
    path = Path(path)
    info = describe(path)
    how = next(k for k, v in LOADED_AS.items() if v == info["loaded_as"])
    if how == "translated":
        from edgekit.modelio.keras3 import load_keras3, to_tf_keras
        return to_tf_keras(load_keras3(path), what=str(path)), info
    if how == "function":
        from edgekit.modelio.savedmodel import load_function_model
        return load_function_model(path), info
    from edgekit._tf import keras
    try:
        return keras().models.load_model(str(path), compile=False,
                                         custom_objects=custom_objects or {}), info
    except Exception as exc:  # h5py/OSError/ValueError: a corrupt or foreign file
        msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise EdgekitError("cannot load model {}: {} (is it a Keras .h5 / .keras / "
                           "SavedModel?)".format(path, msg)) from None


KERAS3_SUFFIX = ".keras3.keras"


def keras3_file(model, directory, stem, **extra):
    """Write the tf_keras ``model`` as ``<stem>.keras3.keras`` (Keras 3's format, outputs
    checked equal) in ``directory``; returns its manifest ``files`` entry (format ``keras3``,
    not an inference file: edgekit runs ``model.h5``; the copy is for the user's
    ``keras.models.load_model``)."""
    from edgekit.artifact import describe_file
    from edgekit.modelio.keras3 import keras3, save_as_keras3
    name = stem + KERAS3_SUFFIX
    save_as_keras3(model, Path(directory) / name, what="{} (Keras 3 copy)".format(stem))
    return {name: describe_file(Path(directory) / name, "keras3", "fp32", inference=False,
                                keras_version=keras3().__version__, **extra)}
