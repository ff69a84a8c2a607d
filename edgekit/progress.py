"""edgekit's one voice for training progress: a rich bar on stderr instead of Keras' lines.

Keras' ``verbose=1`` writes a line per step (hundreds of ``\\b`` characters per epoch) into
edgekit's output. :func:`epoch_progress` is a Keras callback that shows one bar per run
(epoch i/N, loss, validation accuracy) on stderr and leaves one summary line per epoch when
stderr is not a terminal (CI logs stay readable).

Example::

    model.fit(x, y, epochs=5, verbose=0, callbacks=[epoch_progress(5, "fine-tuning")])
"""
import sys
import time


def epoch_progress(epochs, label="training", stream=None):
    """A Keras callback reporting each epoch (loss, accuracy, val accuracy) on stderr."""
    from edgekit._tf import keras
    base = keras().callbacks.Callback

    class EpochProgress(base):
        def __init__(self):
            super(EpochProgress, self).__init__()
            self.stream = stream or sys.stderr
            self.total = int(epochs)
            self.bar = None
            self.task = None
            self.t0 = None

        def on_train_begin(self, logs=None):
            self.t0 = time.time()
            if getattr(self.stream, "isatty", lambda: False)():
                from rich.console import Console
                from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
                self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                    TextColumn("{task.completed}/{task.total} {task.fields[info]}"),
                                    TimeElapsedColumn(),
                                    console=Console(file=self.stream), transient=True)
                self.bar.start()
                self.task = self.bar.add_task(label, total=self.total, info="")

        def on_epoch_end(self, epoch, logs=None):
            info = describe(logs or {})
            if self.bar is not None:
                self.bar.update(self.task, completed=epoch + 1, info=info)
            line = "{} epoch {}/{}: {} ({:.0f} s)".format(label, epoch + 1, self.total, info,
                                                         time.time() - self.t0)
            if self.bar is not None:
                self.bar.console.print(line, highlight=False, markup=False)
            else:
                print(line, file=self.stream, flush=True)

        def on_train_end(self, logs=None):
            if self.bar is not None:
                self.bar.stop()
                self.bar = None

    return EpochProgress()


def describe(logs):
    """``loss 0.123, accuracy 97.10%, val 96.50%`` from Keras epoch logs."""
    parts = []
    if "loss" in logs:
        parts.append("loss {:.4f}".format(float(logs["loss"])))
    for key, name in (("accuracy", "accuracy"), ("acc", "accuracy"), ("val_accuracy", "val"),
                      ("val_acc", "val")):
        if key in logs:
            parts.append("{} {:.2%}".format(name, float(logs[key])))
    return ", ".join(parts)


class TrialProgress(object):
    """Progress of a search (``edgekit optimize``): a rich bar on a terminal with the best so
    far, else one line per finished trial on stderr.

    Example::

        with TrialProgress(20, "optimize") as bar:
            bar.advance("003 prune macs 0.5 -> onnx-fp32: 97.9% 41,220 B", best="97.9% 41,220 B")
    """

    def __init__(self, total, label="optimize", stream=None, done=0):
        self.stream = stream or sys.stderr
        self.total = total
        self.label = label
        self.done = done
        self.bar = None
        self.task = None

    def __enter__(self):
        if getattr(self.stream, "isatty", lambda: False)():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                TextColumn("{task.completed}/{task.total} best: {task.fields[best]}"),
                                TimeElapsedColumn(), console=Console(file=self.stream),
                                transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=self.total, completed=self.done,
                                          best="-")
        return self

    def advance(self, line, best=None):
        self.done += 1
        text = "{} trial {}{}: {}{}".format(
            self.label, self.done, "" if self.total is None else "/{}".format(self.total), line,
            "" if best is None else " | best so far: " + best)
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, best=best or "-")
            self.bar.console.print(text, highlight=False, markup=False)
        else:
            print(text, file=self.stream, flush=True)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
