"""Image arrays kept as their source pixels, turned into float32 model input batch by batch.

20,000 images at 96x96x3 are 553 MB as uint8 and 2.2 GB as float32 (x3 with the train / val
/ test splits' copies while loading). A :class:`LazyImages` holds the source array (8-bit
pixels as loaded, or any array) and computes ``x = source * scale`` (then an optional
per-batch ``transform``: :mod:`edgekit.adapt`'s preprocessing / resize / channels) only for
the rows read, so the consumers that read batches — ``x[s:s + 128]``, ``x[index]``,
:func:`batches` — never hold the whole set as float32. The values are bit-identical to the
eager float32 array (each row is computed the same way, whatever the batch).

It looks like a read-only float32 ndarray (``len``, ``shape``, ``dtype``, indexing,
``np.asarray``); whole-array operations materialise it (``np.asarray(x)``, ``x.mean()``).
Keras gets batches from :func:`keras_fit_args` / :func:`keras_predict_batches`.

:func:`edgekit.data.load_data` keeps 8-bit sources lazy when their float32 form would be
larger than :data:`LAZY_BYTES` (small data sets stay plain ndarrays, trained exactly as before).

Example::

    x = LazyImages(np.zeros((20000, 96, 96, 3), np.uint8), scale=1 / 255.0)
    x.shape, x.dtype, x[:128].dtype        # (20000, 96, 96, 3), float32, float32
    for start, batch in batches(x, 512): ...
"""
import numpy as np

LAZY_BYTES = 256 << 20          # float32 bytes of a data set above which 8-bit pixels stay 8-bit
CHUNK = 1024                    # rows materialised at once by np.asarray / fingerprints


class LazyImages(object):
    """Read-only float32 view ``transform(source[rows] * scale)`` of an image array."""

    dtype = np.dtype(np.float32)

    def __init__(self, source, scale=1.0, transform=None, image_shape=None):
        self.source = source
        self.scale = np.float32(scale)
        self.transform = transform
        self.image_shape = tuple(int(d) for d in (image_shape or source.shape[1:]))

    # -- ndarray look --------------------------------------------------------------------
    @property
    def shape(self):
        return (len(self.source),) + self.image_shape

    @property
    def ndim(self):
        return 1 + len(self.image_shape)

    @property
    def size(self):
        return int(np.prod(self.shape))

    @property
    def nbytes(self):
        """Bytes of the float32 array this stands for (not of what is held)."""
        return 4 * self.size

    @property
    def held_bytes(self):
        return int(self.source.nbytes)

    def __len__(self):
        return len(self.source)

    def __repr__(self):
        return "LazyImages({} of {} pixels, scale {:g}{})".format(
            "x".join(map(str, self.shape)), self.source.dtype, float(self.scale),
            ", transformed" if self.transform is not None else "")

    def rows(self, index):
        """float32 images of ``source[index]`` (a slice or an integer / boolean array)."""
        x = self.source[index]
        x = x.astype(np.float32) * self.scale if self.scale != 1 else x.astype(np.float32)
        return self.transform(x) if self.transform is not None else x

    def __getitem__(self, key):
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if first is Ellipsis or first is None:
            return np.asarray(self)[key]
        if isinstance(first, (int, np.integer)):
            out = self.rows(np.asarray([first]))[0]
            return out[rest] if rest else out
        out = self.rows(first if isinstance(first, slice) else np.asarray(first))
        return out[(slice(None),) + tuple(rest)] if rest else out

    def __iter__(self):
        for _, batch in batches(self, CHUNK):
            for image in batch:
                yield image

    def __array__(self, dtype=None, copy=None):
        out = np.empty(self.shape, np.float32)
        for s in range(0, len(self), CHUNK):
            out[s:s + CHUNK] = self.rows(slice(s, s + CHUNK))
        return out if dtype is None else out.astype(dtype, copy=False)

    def astype(self, dtype, copy=True):
        return np.asarray(self).astype(dtype, copy=False)

    def copy(self):
        return np.asarray(self)

    def min(self, *args, **kwargs):
        return np.asarray(self).min(*args, **kwargs)

    def max(self, *args, **kwargs):
        return np.asarray(self).max(*args, **kwargs)

    def mean(self, *args, **kwargs):
        return np.asarray(self).mean(*args, **kwargs)

    # -- lazy derivations ----------------------------------------------------------------
    def subset(self, index):
        """The images ``index`` (still lazy: a copy of their source pixels only)."""
        return LazyImages(self.source[index], self.scale, self.transform, self.image_shape)

    def then(self, transform, image_shape):
        """These images followed by ``transform`` (a float32 batch -> float32 batch)."""
        t = transform if self.transform is None else Chain(self.transform, transform)
        return LazyImages(self.source, self.scale, t, image_shape)


class Chain(object):
    """Two batch transforms one after the other (a plain class: picklable for Dask)."""

    def __init__(self, first, second):
        self.first, self.second = first, second

    def __call__(self, x):
        return self.second(self.first(x))


def is_lazy(x):
    return isinstance(x, LazyImages)


def as_float32(x):
    """``x`` as a float32 ndarray, or lazy images as they are (they give float32 batches)."""
    return x if is_lazy(x) else np.asarray(x, dtype=np.float32)


def take(x, index):
    """``x[index]``, kept lazy when ``x`` is (no float32 copy of the selection)."""
    return x.subset(index) if is_lazy(x) else x[index]


def batches(x, size):
    """Yield ``(start, float32 batch)`` over ``x`` (ndarray or :class:`LazyImages`)."""
    for s in range(0, len(x), size):
        yield s, x[s:s + size]


def sha256_update(h, x):
    """Feed ``x``'s float32 bytes to hashlib object ``h`` (chunked for lazy images: the same
    digest as hashing the whole array)."""
    if not is_lazy(x):
        h.update(np.ascontiguousarray(x).tobytes())
        return
    for _, batch in batches(x, CHUNK):
        h.update(np.ascontiguousarray(batch).tobytes())


PREDICT_CHUNK_BYTES = 64 << 20  # float32 input handed to one model.predict call (lazy images)


def keras_predict_batches(model, x, batch_size=256, chunk=None):
    """``model.predict(x, batch_size)`` for an ndarray or :class:`LazyImages` (then ``chunk``
    batches at a time, by default as many as fit :data:`PREDICT_CHUNK_BYTES`: the same outputs,
    never the whole set as float32 — Keras copies what it is given into a tf.data pipeline)."""
    if not is_lazy(x):
        return model.predict(x, batch_size=batch_size, verbose=0)
    if chunk is None:
        per_image = 4 * int(np.prod(x.image_shape))
        chunk = max(1, PREDICT_CHUNK_BYTES // (per_image * batch_size))
    step = batch_size * chunk
    outs = [model.predict(batch, batch_size=batch_size, verbose=0)
            for _, batch in batches(x, step)]
    return np.concatenate(outs) if outs else np.zeros((0,) + tuple(model.output_shape[1:]),
                                                      np.float32)


def keras_fit_args(x, y, batch_size, validation_data=None, seed=0):
    """Keyword arguments of ``model.fit`` for training on ``(x, y)``: the arrays themselves
    when ``x`` is an ndarray (Keras batches and shuffles them as always), a shuffling
    :func:`batch_sequence` when it is lazy (one batch of float32 at a time)."""
    if not is_lazy(x) and not (validation_data is not None and is_lazy(validation_data[0])):
        return dict(x=x, y=y, batch_size=batch_size, validation_data=validation_data)
    args = dict(x=batch_sequence(x, y, batch_size, shuffle=True, seed=seed))
    if validation_data is not None:
        args["validation_data"] = batch_sequence(validation_data[0], validation_data[1],
                                                 batch_size, shuffle=False)
    return args


def batch_sequence(x, y, batch_size, shuffle, seed=0):
    """A ``keras.utils.Sequence`` of ``(x batch, y batch)``, reshuffled (seeded) each epoch."""
    from edgekit._tf import keras

    class BatchSequence(keras().utils.Sequence):
        def __init__(self):
            super(BatchSequence, self).__init__()
            self.order = np.arange(len(x))
            self.epoch = 0
            self._shuffle()

        def _shuffle(self):
            if shuffle:
                self.order = np.random.RandomState(seed + self.epoch).permutation(len(x))

        def __len__(self):
            return int(np.ceil(len(x) / float(batch_size)))

        def __getitem__(self, i):
            idx = np.sort(self.order[i * batch_size:(i + 1) * batch_size])
            return x[idx], np.asarray(y)[idx]

        def on_epoch_end(self):
            self.epoch += 1
            self._shuffle()

    return BatchSequence()
