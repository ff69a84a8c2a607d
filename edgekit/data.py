"""Dataset loaders for every ``--data`` spec, all returning one :class:`Dataset`.

Specs (docs/contract.md): ``digits`` (scikit-learn's bundled 8x8 digits), ``mnist:DIR`` (the four
IDX files, gzipped or not; Fashion-MNIST too), ``folder:DIR`` (one sub-folder per class),
``npz:FILE`` (arrays ``x``, ``y``, optional ``x_test``, ``y_test``, ``classes``).

Images come back as float32 NHWC normalised as ``x = (raw * scale - mean) / std``; that
normalisation is recorded (:attr:`Dataset.norm`) in every manifest so every runner
preprocesses identically. A data set of 8-bit pixels whose float32 form would exceed
:data:`edgekit.images.LAZY_BYTES` keeps its pixels as uint8 (:class:`edgekit.images.LazyImages`:
same values, normalised per batch as they are read); smaller ones are plain float32 arrays. The validation split is carved from training data with a fixed
seed (stratified), sized to the data (:func:`validation_fraction`: 10%, but at least 1,000
images where 25% of the training images allows it -- digits holds out 359, not 144, so the
accuracy guard and the calibration / k-NN searches can tell a ~1 pt drop from noise); the
test split is the data set's own (MNIST's 10,000) or a fixed, seeded 20% otherwise. Tuning
uses validation, accuracy is reported on test.

Example::

    ds = load_data("mnist:../shared/datasets/mnist")
    ds.x_train.shape   # (54000, 28, 28, 1)
"""
import gzip
import hashlib
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError

SPLIT_SEED = 20240601
VAL_FRACTION = 0.1          # of the training images held out for validation...
VAL_MIN_IMAGES = 1000       # ... but at least this many (one accuracy to about +-0.5 pt at 97%)
VAL_MAX_FRACTION = 0.25     # ... where this fraction of the training images allows it
TEST_FRACTION = 0.2
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".tif", ".tiff"}


class Dataset:
    """Train / validation / test arrays plus class names and the normalisation used."""

    def __init__(self, spec, x_train, y_train, x_val, y_val, x_test, y_test, classes, norm):
        self.spec = spec
        self.x_train, self.y_train = x_train, y_train
        self.x_val, self.y_val = x_val, y_val
        self.x_test, self.y_test = x_test, y_test
        self.classes = [str(c) for c in classes]
        self.norm = norm
        self.unit_scale = float(norm["scale"])  # raw pixels -> [0, 1] (see edgekit.adapt)
        self.adapt = None                       # what edgekit.adapt.fit_data changed

    @property
    def input_shape(self):
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_classes(self):
        return len(self.classes)

    def input_spec(self):
        """The manifest's ``input`` entry for models trained on this data."""
        spec = {"shape": [None, *self.input_shape], "dtype": "float32", "layout": "NHWC",
                "scale": self.norm["scale"], "mean": self.norm["mean"], "std": self.norm["std"]}
        spec.update(self.adapt or {})
        return spec

    @property
    def split(self):
        """How the validation split was drawn (manifests' ``source.split``): its images, the
        fraction of the training images it took, the seed."""
        n_val, n_train = len(self.y_val), len(self.y_train)
        return {"validation_images": int(n_val), "validation_fraction": round(
            n_val / float(max(1, n_val + n_train)), 4), "seed": SPLIT_SEED}

    def fingerprint(self):
        """sha256 over the test and train arrays (as float32, lazy or not): what
        ``source.data_sha256`` records."""
        from edgekit.images import sha256_update
        h = hashlib.sha256()
        for a in (self.x_train, self.y_train, self.x_test, self.y_test):
            sha256_update(h, a)
        return h.hexdigest()

    @property
    def lazy(self):
        """True when the images are kept as source pixels (:mod:`edgekit.images`)."""
        from edgekit.images import is_lazy
        return is_lazy(self.x_train)

    def __repr__(self):
        return "Dataset({!r}: train {}, val {}, test {}, {} classes, input {})".format(
            self.spec, len(self.x_train), len(self.x_val), len(self.x_test),
            self.num_classes, self.input_shape)


def validation_fraction(n_train):
    """The fraction of ``n_train`` training images held out for validation: 10%
    (:data:`VAL_FRACTION`), raised to reach :data:`VAL_MIN_IMAGES` images, at most
    :data:`VAL_MAX_FRACTION`.

    Why: every choice edgekit makes on validation -- the accuracy guard's paired bound, the
    int8 calibration and k-NN searches -- is only as sharp as the split. 10% of digits' 1,437
    training images is 144 images: one image is 0.7 pt, one accuracy is known to +-0.7..1.4 pt
    and a prune that changed 9 predictions has a paired standard error of 2 pt, so the guard
    refused results it could not resolve and the searches tied. A quarter (359 images) halves
    that; MNIST (54,000 + 6,000) is unchanged. A fixed rule of the data's size, so
    ``edgekit train`` and ``edgekit compress`` on the same ``--data`` draw the same split.
    """
    n = int(n_train)
    if n <= 0:
        return VAL_FRACTION
    return max(VAL_FRACTION, min(VAL_MIN_IMAGES / float(n), VAL_MAX_FRACTION))


def load_data(spec, val_fraction=None, lazy=None):
    """Load a dataset from a ``--data`` spec string.

    ``val_fraction``: of the training images held out for validation (default: sized to the
    data, :func:`validation_fraction`).

    ``lazy``: keep 8-bit pixels as uint8, normalised per batch (:mod:`edgekit.images`);
    None: when the float32 images would take more than :data:`edgekit.images.LAZY_BYTES`."""
    spec = str(spec)
    kind, _, arg = spec.partition(":")
    if kind == "digits" and not arg:
        raw = _digits()
    elif kind in LOADERS and arg:
        raw = LOADERS[kind](Path(arg).expanduser())
    else:
        raise EdgekitError(
            "unknown data spec {!r}: use digits, mnist:DIR, folder:DIR or npz:FILE".format(spec))
    x_tr, y_tr, x_te, y_te, classes, scale = raw
    x_tr, x_te = _nhwc(x_tr, "training"), _nhwc(x_te, "test")
    for what, x, y in (("training", x_tr, y_tr), ("test", x_te, y_te)):
        check_images(x, "{}: {} images".format(spec, what))
        check_labels(y, len(x), "{}: {} labels".format(spec, what))
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise EdgekitError("train images {} and test images {} differ in shape".format(
            x_tr.shape[1:], x_te.shape[1:]))
    y_tr, y_te = np.asarray(y_tr).astype(np.int64).ravel(), np.asarray(y_te).astype(np.int64).ravel()
    if len(y_tr) != len(x_tr) or len(y_te) != len(x_te):
        raise EdgekitError("{}: number of labels does not match number of images".format(spec))
    n_cls = len(classes)
    if n_cls < 2:
        raise EdgekitError("{}: need at least 2 classes, found {}".format(spec, n_cls))
    for name, y in (("training", y_tr), ("test", y_te)):
        if y.size and (y.min() < 0 or y.max() >= n_cls):
            raise EdgekitError("{}: {} labels must be in 0..{}".format(spec, name, n_cls - 1))
    if val_fraction is None:
        val_fraction = validation_fraction(len(y_tr))
    tr_idx, va_idx = _stratified_split(y_tr, val_fraction, SPLIT_SEED)
    if val_fraction > 0 and (len(va_idx) == 0 or len(tr_idx) == 0):
        raise EdgekitError("{}: too few training images ({:,} for {} classes) to carve a "
                           "validation split: give at least 2 images of some class".format(
                               spec, len(y_tr), n_cls))
    norm = {"scale": float(scale), "mean": [0.0], "std": [1.0]}
    f = np.float32(scale)
    if lazy is None:
        from edgekit.images import LAZY_BYTES
        lazy = 4 * (x_tr.size + x_te.size) > LAZY_BYTES
    lazy = bool(lazy) and x_tr.dtype == np.uint8 and x_te.dtype == np.uint8
    if lazy:
        from edgekit.images import LazyImages

        def pixels(x):
            return LazyImages(np.ascontiguousarray(x), f)
    else:
        def pixels(x):
            return x.astype(np.float32) * f
    return Dataset(spec, pixels(x_tr[tr_idx]), y_tr[tr_idx], pixels(x_tr[va_idx]), y_tr[va_idx],
                   pixels(x_te), y_te, classes, norm)


MAX_ARRAY_BYTES = 4 << 30  # one array of a data set; more is a bomb or a mistake, not MNIST
MAX_CLASSES = 100000


def check_images(x, what):
    """Refuse image arrays edgekit cannot train on: empty, non-numeric (strings, objects),
    a zero-sized image dimension, NaN or infinite pixels."""
    x = np.asarray(x) if not isinstance(x, np.ndarray) else x
    if x.dtype.kind not in "biuf":
        raise EdgekitError("{} are {} values, not numbers (pixels must be numeric)".format(
            what, x.dtype))
    if x.ndim < 1 or len(x) == 0:
        raise EdgekitError("{}: the set is empty (0 images)".format(what))
    if 0 in x.shape[1:]:
        raise EdgekitError("{} have an empty dimension (shape {})".format(what, x.shape))
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise EdgekitError("{} hold {:,} NaN or infinite pixel values: fix or drop those "
                           "images".format(what, bad))
    if x.dtype.kind in "fiu" and x.dtype.itemsize > 4:  # float64/int64: must fit float32
        top = float(np.max(np.abs(x)))
        if top > float(np.finfo(np.float32).max):
            raise EdgekitError("{} hold values up to {:.3g}, beyond float32 (max {:.3g}): the "
                               "models compute in float32, where they become infinite; scale "
                               "the images first".format(what, top,
                                                         float(np.finfo(np.float32).max)))


def check_labels(y, n, what):
    """Refuse labels that are not whole non-negative numbers, one per image."""
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise EdgekitError("{} are {} values, not class numbers (use 0..C-1, names go in "
                           "`classes`)".format(what, y.dtype))
    if y.ndim != 1 and not (y.ndim == 2 and y.shape[1] == 1):
        raise EdgekitError("{} must be one number per image, got shape {}".format(what, y.shape))
    y = y.ravel()
    if len(y) != n:
        raise EdgekitError("{}: {:,} labels for {:,} images (need one per image)".format(
            what, len(y), n))
    if y.dtype.kind == "f" and (not np.isfinite(y).all() or (y != np.round(y)).any()):
        raise EdgekitError("{} must be whole class numbers 0..C-1 (found fractions or NaN)"
                           .format(what))
    if y.size and (y.min() < 0 or y.max() >= MAX_CLASSES):
        raise EdgekitError("{} must be in 0..C-1 (found {:g}..{:g})".format(
            what, float(y.min()), float(y.max())))


def normalize(raw, norm):
    """Apply a manifest's normalisation to raw pixel values (what runners do on device)."""
    x = np.asarray(raw, dtype=np.float32) * np.float32(norm.get("scale", 1.0))
    mean = np.asarray(norm.get("mean", [0.0]), dtype=np.float32)
    std = np.asarray(norm.get("std", [1.0]), dtype=np.float32)
    return (x - mean) / std


# -- loaders: each returns (x_train, y_train, x_test, y_test, classes, scale) -------------

def _digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = d.images.astype(np.uint8)  # whole values 0..16: 8-bit pixels, scaled by 1/16
    y = d.target
    tr, te = _stratified_split(y, TEST_FRACTION, SPLIT_SEED + 1)
    return x[tr], y[tr], x[te], y[te], [str(c) for c in range(10)], 1.0 / 16.0


def _mnist(folder):
    if not folder.is_dir():
        raise EdgekitError("mnist data folder {} does not exist".format(folder))
    found = {}
    for role, pattern in (("x_train", "train-images"), ("y_train", "train-labels"),
                          ("x_test", "t10k-images"), ("y_test", "t10k-labels")):
        matches = sorted(p for p in folder.iterdir() if p.name.startswith(pattern)
                         and "idx" in p.name)
        if not matches:
            raise EdgekitError("{}: missing the {}-idx… file (expected the four MNIST IDX files)"
                               .format(folder, pattern))
        found[role] = read_idx(matches[0])
    for role in ("y_train", "y_test"):
        if found[role].ndim != 1:
            raise EdgekitError("{}: {} IDX file must hold labels (1 dim), got {} dims".format(
                folder, role, found[role].ndim))
    for role in ("x_train", "x_test"):
        if found[role].ndim != 3:
            raise EdgekitError("{}: {} IDX file must hold images (3 dims), got {} dims".format(
                folder, role, found[role].ndim))
    return (found["x_train"], found["y_train"], found["x_test"], found["y_test"],
            [str(c) for c in range(10)], 1.0 / 255.0)


def read_idx(path):
    """Read an IDX file (optionally gzipped); bad magic, a header whose dims overflow or
    exceed the size limit, or a short payload -> EdgekitError. Reads only the bytes the
    header announces (a gzip bomb is not inflated past them)."""
    import math
    path = Path(path)
    from edgekit.util import check_regular_file
    check_regular_file(path, "IDX file")
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            head = fh.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08:
                raise EdgekitError("{}: not an IDX file of unsigned bytes (bad magic number)"
                                   .format(path))
            ndim = head[3]
            raw_dims = fh.read(4 * ndim) if 1 <= ndim <= 4 else b""
            if ndim < 1 or ndim > 4 or len(raw_dims) < 4 * ndim:
                raise EdgekitError("{}: bad IDX header".format(path))
            dims = struct.unpack(">" + "I" * ndim, raw_dims)
            need = math.prod(dims)  # Python ints: no overflow
            if need > MAX_ARRAY_BYTES:
                raise EdgekitError("{}: IDX header announces {} = {:,} bytes (over the {:,} "
                                   "limit): a corrupt header".format(
                                       path, "x".join(map(str, dims)), need, MAX_ARRAY_BYTES))
            payload = fh.read(need)
    except (OSError, EOFError, zlib.error) as exc:
        raise EdgekitError("{}: cannot read IDX file ({})".format(path, exc)) from None
    if len(payload) < need:
        raise EdgekitError("{}: truncated IDX file ({} of {} bytes of payload)".format(
            path, len(payload), need))
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims)


def _folder(folder):
    if not folder.is_dir():
        raise EdgekitError("image folder {} does not exist".format(folder))
    from PIL import Image, UnidentifiedImageError
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir())
    if len(class_dirs) < 2:
        raise EdgekitError("{}: need one sub-folder per class and at least 2 classes, found {}"
                           .format(folder, len(class_dirs)))
    xs, ys = [], []
    for label, d in enumerate(class_dirs):
        files = sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith("."))
        bad = [p.name for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
        if bad:
            raise EdgekitError("{}: not an image file: {} (only PNG/JPEG/BMP images allowed)"
                               .format(d, bad[0]))
        if not files:
            raise EdgekitError("{}: class folder has no images".format(d))
        for p in files:
            try:
                with warnings.catch_warnings():
                    # over PIL's MAX_IMAGE_PIXELS: a decompression bomb, refused not warned
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    with Image.open(p) as im:
                        if im.mode.startswith("I"):  # 16-bit (or 32-bit int) grey
                            a = _eight_bit(np.asarray(im), im.mode)
                        else:
                            im = im.convert("L") if im.mode in ("L", "1", "P", "LA") \
                                else im.convert("RGB")
                            a = np.asarray(im)
            except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
                raise EdgekitError("{}: refused, too many pixels ({})".format(p, exc)) from None
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
                    struct.error, zlib.error) as exc:  # PIL's decoders raise all of these
                raise EdgekitError("{}: cannot read image ({})".format(p, exc)) from None
            xs.append(a)
            ys.append(label)
    x, y = np.stack(_same_size(xs, folder)), np.asarray(ys)
    tr, te = _stratified_split(y, TEST_FRACTION, SPLIT_SEED + 1)
    return x[tr], y[tr], x[te], y[te], [d.name for d in class_dirs], 1.0 / 255.0


def _eight_bit(a, mode):
    """A 16-bit grey image as 8-bit pixels, scaled (65535 -> 255), not clipped: Pillow's
    ``convert("L")`` would clip every value above 255 to white. A 32-bit integer image whose
    values fit 8 bits is taken as it is."""
    a = np.asarray(a, dtype=np.float64)
    top = 255.0 if mode == "I" and a.size and a.max() <= 255 and a.min() >= 0 else 65535.0
    return np.clip(np.round(a * (255.0 / top)), 0, 255).astype(np.uint8)


def _same_size(images, folder):
    """A folder of assorted images made one size: the most common height x width (bilinear
    resize), three channels if any image has colour; said once on stderr."""
    import collections
    import sys
    from PIL import Image
    sizes = collections.Counter(a.shape[:2] for a in images)
    (h, w), _ = sizes.most_common(1)[0]
    rgb = any(a.ndim == 3 for a in images)
    out, resized, widened = [], 0, 0
    for a in images:
        if a.shape[:2] != (h, w):
            a = np.asarray(Image.fromarray(a).resize((w, h), Image.BILINEAR))
            resized += 1
        if rgb and a.ndim == 2:
            a = np.repeat(a[:, :, None], 3, axis=2)
            widened += 1
        out.append(a)
    if resized or widened:
        print("note: folder:{}: {}{}{}".format(
            folder, "{:,} of {:,} images resized to {}x{} (the most common size)".format(
                resized, len(images), h, w) if resized else "",
            "; " if resized and widened else "",
            "{:,} grayscale images given 3 channels".format(widened) if widened else ""),
            file=sys.stderr)
    return out


def _npz_headers(path):
    """{array name: (shape, dtype)} from an npz's .npy headers, without loading any data."""
    import zipfile
    if not zipfile.is_zipfile(str(path)):
        raise EdgekitError("{}: not a readable .npz file (not a zip of .npy arrays, as np.savez "
                           "writes)"
                           .format(path))
    out = {}
    with zipfile.ZipFile(str(path)) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read(fh)
            out[info.filename[:-4]] = (shape, dtype)
    return out


def _npz(path):
    import math
    from edgekit.util import check_regular_file
    check_regular_file(path, "npz file")
    try:
        headers = _npz_headers(path)
    except EdgekitError:
        raise
    except Exception as exc:  # BadZipFile / ValueError from a corrupt member or header
        raise EdgekitError("{}: not a readable .npz file ({})".format(path, exc)) from None
    for key, (shape, dtype) in headers.items():
        if dtype.hasobject:
            raise EdgekitError("{}: array {!r} holds Python objects: only numeric arrays are "
                               "read (save x and y as numbers)".format(path, key))
        if math.prod(shape) * dtype.itemsize > MAX_ARRAY_BYTES:
            raise EdgekitError("{}: array {!r} of shape {} is over the {:,}-byte limit".format(
                path, key, shape, MAX_ARRAY_BYTES))
    for key in ("x", "y"):
        if key not in headers:
            raise EdgekitError("{}: the npz has no array {!r} (needs x (N,H,W[,C]) and y (N,))"
                               .format(path, key))
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k in ("x", "y", "x_test", "y_test", "classes")}
    except Exception as exc:  # zipfile/ValueError/OSError: a corrupt member
        raise EdgekitError("{}: not a readable .npz file ({})".format(
            path, str(exc).split(";")[0])) from None
    x = arrays["x"]
    if x.ndim not in (3, 4):
        raise EdgekitError("{}: x must be (N,H,W) or (N,H,W,C), got shape {}".format(path, x.shape))
    check_images(x, "{}: x".format(path))
    check_labels(arrays["y"], len(x), "{}: y".format(path))
    y = arrays["y"].astype(np.int64).ravel()
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise EdgekitError("{}: the npz has {} but not {}: give both x_test and y_test, or neither"
                           .format(path, *(("x_test", "y_test") if "x_test" in arrays
                                           else ("y_test", "x_test"))))
    if "x_test" in arrays and "y_test" in arrays:
        check_images(arrays["x_test"], "{}: x_test".format(path))
        check_labels(arrays["y_test"], len(arrays["x_test"]), "{}: y_test".format(path))
        x_tr, y_tr, x_te, y_te = x, y, arrays["x_test"], arrays["y_test"].astype(np.int64).ravel()
    else:
        tr, te = _stratified_split(y, TEST_FRACTION, SPLIT_SEED + 1)
        x_tr, y_tr, x_te, y_te = x[tr], y[tr], x[te], y[te]
    if "classes" in arrays:
        if arrays["classes"].ndim != 1:
            raise EdgekitError("{}: classes must be a 1-D array of names".format(path))
        classes = [str(c) for c in arrays["classes"]]
    else:
        classes = [str(c) for c in range(int(max(y_tr.max(initial=0), y_te.max(initial=0))) + 1)]
    scale = 1.0 / 255.0 if x.dtype == np.uint8 or x.max() > 1.5 else 1.0
    return x_tr, y_tr, x_te, y_te, classes, scale


LOADERS = {"mnist": _mnist, "folder": _folder, "npz": _npz}


def _nhwc(x, what):
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise EdgekitError("{} images must be (N,H,W) or (N,H,W,C), got shape {}".format(
            what, x.shape))
    return x


def _stratified_split(y, fraction, seed):
    """Indices (keep, held_out) with ``fraction`` of each class held out, seeded."""
    rng = np.random.RandomState(seed)
    keep, held = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        k = int(round(len(idx) * fraction))
        if len(idx) > 1:
            k = min(max(k, 1), len(idx) - 1)
        else:
            k = 0
        held.extend(idx[:k])
        keep.extend(idx[k:])
    return np.sort(np.asarray(keep, dtype=np.int64)), np.sort(np.asarray(held, dtype=np.int64))


def file_sha256(path, chunk=1 << 20):
    """sha256 of a file's bytes (hex); a FIFO / device in its place is refused, not read."""
    from edgekit.util import check_regular_file
    check_regular_file(path)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def dir_sha256(path):
    """sha256 over a directory's files (relative names + contents), for SavedModel dirs."""
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            p = os.path.join(root, name)
            h.update(os.path.relpath(p, path).encode())
            h.update(file_sha256(p).encode())
    return h.hexdigest()
