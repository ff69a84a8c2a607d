"""Which Keras wrote a model file, told from the file itself (no TensorFlow import).

- ``.keras`` zip: ``metadata.json``'s ``keras_version`` (Keras 3 and tf_keras >= 2.13 both
  write one; Keras 3's starts with ``3.``).
- ``.h5`` / ``.hdf5``: the root attributes ``keras_version`` and ``backend`` that both
  Kerases write (tf_keras: ``2.x`` / ``tensorflow``; Keras 3: ``3.x``).
- SavedModel directory: tf_keras' ``model.save(..., save_format="tf")`` writes
  ``keras_metadata.pb`` beside ``saved_model.pb`` (the Keras graph); Keras 3 cannot write that
  format, its ``model.export()`` (like ``tf.saved_model.save``) writes only TF functions and
  variables -- no ``keras_metadata.pb``.

Example::

    detect("m.keras")   # {"format": "keras", "keras_version": "3.15.1", "keras": 3}
"""
import json
import zipfile
from pathlib import Path

from edgekit.errors import EdgekitError

H5_SUFFIXES = (".h5", ".hdf5")


def detect(path):
    """``{"format": "keras"|"h5"|"savedmodel", "keras_version": str|None, "keras": 2|3|None,
    "backend": str|None}`` for a Keras file or SavedModel dir (``keras`` None: a SavedModel
    with no Keras graph -- Keras 3's ``export()`` or ``tf.saved_model.save``)."""
    path = Path(path)
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise EdgekitError("{} is not a SavedModel directory (no saved_model.pb)".format(path))
        if (path / "keras_metadata.pb").is_file():
            return _info("savedmodel", None, 2)
        return _info("savedmodel", None, None)
    suffix = path.suffix.lower()
    if suffix == ".keras" or (suffix not in H5_SUFFIXES and zipfile.is_zipfile(str(path))):
        return _keras_zip(path)
    return _h5(path)


def _info(fmt, version, major, backend=None):
    return {"format": fmt, "keras_version": version, "keras": major, "backend": backend}


def _major(version, default=2):
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return default


def _keras_zip(path):
    try:
        with zipfile.ZipFile(str(path)) as z:
            names = set(z.namelist())
            meta = json.loads(z.read("metadata.json")) if "metadata.json" in names else {}
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise EdgekitError("cannot load model {}: not a readable .keras file ({})".format(
            path, str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__)) from None
    version = meta.get("keras_version") if isinstance(meta, dict) else None
    return _info("keras", version, _major(version) if version else 3)


def _h5(path):
    try:
        import h5py
    except ImportError:       # h5py comes with tensorflow/keras: without it nothing loads .h5
        return _info("h5", None, 2)
    try:
        with h5py.File(str(path), "r") as f:
            version = _text(f.attrs.get("keras_version"))
            backend = _text(f.attrs.get("backend"))
    except (OSError, ValueError):  # not HDF5: the loader says so in its own words
        return _info("h5", None, 2)
    return _info("h5", version, _major(version) if version else 2, backend)


def _text(value):
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def raw_config(path):
    """The model config JSON stored in a ``.keras`` zip (``config.json``) or ``.h5``
    (``model_config`` attribute), or None -- read without Keras, to name layers before a
    loader fails on them."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(str(path)):
            with zipfile.ZipFile(str(path)) as z:
                return json.loads(z.read("config.json"))
        import h5py
        with h5py.File(str(path), "r") as f:
            text = _text(f.attrs.get("model_config"))
            return json.loads(text) if text else None
    except Exception:  # unreadable here: the loader reports it
        return None
