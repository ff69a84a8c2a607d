"""A Keras 3 user's MNIST CNN, for issue 33's done-when check (docs/your-model.md).

``train``: keras.io's "Simple MNIST convnet" built and trained with Keras 3 itself (plain
``model.fit``, 2 epochs, batch 128, validation_split 0.1) and saved with
``model.save("m.keras")``; prints Keras 3's own test accuracy. ``check FILE``: loads a
``.keras`` file (e.g. an artifact's ``model.keras3.keras``) with plain Keras 3 and prints its
MNIST test accuracy and share of zero weights.

    python benchmarks/keras3_user_mnist.py train /work/shared/datasets/mnist m.keras
    edgekit compress m.keras --method prune --data mnist:/work/shared/datasets/mnist -o pruned
    python benchmarks/keras3_user_mnist.py check /work/shared/datasets/mnist pruned/model.keras3.keras
"""
import gzip
import sys

import numpy as np


def idx(path):
    with gzip.open(path) as f:
        data = f.read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def split(root, name):
    x = idx("{}/{}-images-idx3-ubyte.gz".format(root, name)).astype("float32")[..., None] / 255.0
    return x, idx("{}/{}-labels-idx1-ubyte.gz".format(root, name)).astype("int64")


def main(argv):
    import keras
    what, root, path = argv[:3]
    xt, yt = split(root, "t10k")
    if what == "train":
        x, y = split(root, "train")
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input(shape=(28, 28, 1)),
            keras.layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            keras.layers.MaxPooling2D(pool_size=(2, 2)),
            keras.layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            keras.layers.MaxPooling2D(pool_size=(2, 2)),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(10, activation="softmax"),
        ])
        model.compile(loss="sparse_categorical_crossentropy", optimizer="adam",
                      metrics=["accuracy"])
        model.fit(x, y, batch_size=128, epochs=2, validation_split=0.1, verbose=2)
        print("keras {} test accuracy {:.4f}".format(keras.__version__,
                                                     model.evaluate(xt, yt, verbose=0)[1]))
        model.save(path)
        return
    m = keras.models.load_model(path)
    w = np.concatenate([np.ravel(v) for v in m.get_weights()])
    acc = np.mean(np.argmax(m.predict(xt, verbose=0), 1) == yt)
    print("{} ({}) in keras {}: test accuracy {:.4f}, zero weights {:.1%}".format(
        path, type(m).__name__, keras.__version__, acc, np.mean(w == 0)))


if __name__ == "__main__":
    main(sys.argv[1:])
