"""The ``edgekit`` command line: thin commands over the library (parse -> call -> print).

Each command lives in its own module under ``edgekit.cli`` and imports heavy libraries
(tensorflow, openvino) only inside its function, so ``edgekit --help`` stays fast.
An :class:`~edgekit.errors.EdgekitError` becomes one ``error: …`` line on stderr and its exit
code (1 user error, 2 missing dependency/hardware); bugs keep their tracebacks.
"""
import contextlib
import functools
import importlib
import inspect
import sys

import typer

from edgekit import __version__
from edgekit.errors import EdgekitError

# command name -> "module:function". A plain dict, the one registry of CLI verbs.
COMMANDS = {
    "doctor": "edgekit.cli.doctor:doctor",
    "train": "edgekit.cli.train:train",
    "eval": "edgekit.cli.eval:eval_cmd",
    "import": "edgekit.cli.import_:import_cmd",
    "compress": "edgekit.cli.compress:compress",
    "export": "edgekit.cli.export:export",
    "bench": "edgekit.cli.bench:bench",
    "deploy": "edgekit.cli.deploy:deploy",
    "report": "edgekit.cli.report:report",
    "optimize": "edgekit.cli.optimize:optimize",
    "demo": "edgekit.cli.demo:demo",
}

app = typer.Typer(
    name="edgekit",
    help="Shrink a trained CNN (prune, int8, distill, k-NN slicing), export it to "
         "ONNX/TFLite/OpenVINO, and benchmark it on laptop CPU, NCS2 and Jetson Nano.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool):
    if value:
        print("edgekit " + __version__)
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit."),
          verbose: bool = typer.Option(False, "--verbose", "-v",
                                       help="Show the libraries' own logs (TensorFlow, absl).")):
    """edgekit: compress, export, bench and deploy CNNs for edge targets."""
    if verbose:
        import os
        os.environ["EDGEKIT_VERBOSE"] = "1"
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"


# parameter name -> kind of output: checked (writable, not a dir / not existing without
# --force) before the command does any work, so no minutes of training end in an OSError.
OUTPUTS = {"out": "dir", "json_file": "file"}


def _checks_outputs(fn):
    """``fn`` preceded by :func:`edgekit.util.check_output` on each output it is given, and
    run holding :func:`edgekit.util.output_lock` on each: a second run on the same output is
    refused with one line instead of silently replacing the first one's result."""
    @functools.wraps(fn)
    def command(**kwargs):
        from edgekit.util import check_output, output_lock
        with contextlib.ExitStack() as locks:
            for param, kind in OUTPUTS.items():
                if kwargs.get(param) is not None:
                    option = "-o" if param == "out" else "--json"
                    locks.enter_context(output_lock(kwargs[param], option))
                    check_output(kwargs[param], kind, force=bool(kwargs.get("force")),
                                 option=option)
            try:
                return fn(**kwargs)
            except Exception as exc:  # a full disk: name the output if the library did not
                from edgekit.util import write_failure
                message = write_failure(exc, output=kwargs.get("out") or kwargs.get("json_file"))
                if message is None:
                    raise
                raise EdgekitError(message) from None
    return command


def _fits_data(fn):
    """``fn`` run under :func:`edgekit.adapt.allow_resize` when given ``--resize`` (one
    switch read by every data path of the command, however deep)."""
    @functools.wraps(fn)
    def command(**kwargs):
        if not kwargs.get("resize"):
            return fn(**kwargs)
        from edgekit.adapt import allow_resize
        with allow_resize():
            return fn(**kwargs)
    return command


def _register():
    for name, target in COMMANDS.items():
        module, func = target.split(":")
        try:
            fn = getattr(importlib.import_module(module), func)
        except ModuleNotFoundError as exc:
            if exc.name == module:  # a command module not written yet on this branch
                continue
            raise
        params = inspect.signature(fn).parameters
        if "resize" in params:
            fn = _fits_data(fn)
        if set(OUTPUTS) & set(params):
            fn = _checks_outputs(fn)
        app.command(name)(fn)


_register()


def fail(message, code=1):
    """Print one ``error:`` line and exit (for use inside commands)."""
    print("error: " + message, file=sys.stderr)
    raise SystemExit(code)


# typer >= 0.20 vendors click as typer._click (importing plain click too would cost ~0.2 s of
# `edgekit --help`); older typer raises plain click's exceptions.
try:
    from typer._click import exceptions as _clickexc
except ImportError:
    import click.exceptions as _clickexc


def _classes(*found):
    return tuple(c for c in found if isinstance(c, type))


_ABORTS = _classes(getattr(typer, "Abort", None), getattr(_clickexc, "Abort", None))
_NO_ARGS = _classes(getattr(_clickexc, "NoArgsIsHelpError", None))
_CLICK_ERRORS = _classes(_clickexc.ClickException)
_EXITS = _classes(getattr(typer, "Exit", None), getattr(_clickexc, "Exit", None))


INTERRUPTED = 130  # 128 + SIGINT, what shells report for a Ctrl-C'd command


def main(argv=None):
    """Console entry point.

    Ctrl-C (SIGINT) anywhere -- loading data, inside Keras's ``fit``, while saving -- is
    ``error: interrupted`` and exit 130, so ``edgekit train ... && edgekit deploy ...`` stops;
    staging dirs are removed on the way out (:func:`edgekit.artifact.staging`). A full disk
    (ENOSPC/EDQUOT/EROFS from any write path) is one ``error:`` line too
    (:func:`edgekit.util.write_failure`), its staging likewise removed. typer >= 0.16
    turns a KeyboardInterrupt into ``Exit(130)`` and, with ``standalone_mode=False``, *returns*
    that code instead of raising it: the return value is an exit code here, never ignored.
    """
    try:
        code = app(args=argv, standalone_mode=False, prog_name="edgekit")
    except EdgekitError as exc:
        print("error: {}".format(exc), file=sys.stderr)
        sys.exit(exc.exit_code)
    except _ABORTS:
        print("error: aborted", file=sys.stderr)
        sys.exit(1)
    except _NO_ARGS as exc:  # bare `edgekit` / `edgekit cmd` with required args: show help
        print(exc.ctx.get_help() if exc.ctx is not None else "usage: edgekit --help")
        sys.exit(0)
    except _CLICK_ERRORS as exc:  # usage errors (missing option, bad value, no such command)
        print("error: {}".format(exc.format_message()), file=sys.stderr)
        sys.exit(1)
    except _EXITS as exc:
        code = exc.exit_code
    except KeyboardInterrupt:
        code = INTERRUPTED
    except Exception as exc:  # the disk refusing a write, on any write path: one line
        from edgekit.util import write_failure
        message = write_failure(exc)
        if message is None:
            raise  # a bug: keep its traceback
        print("error: " + message, file=sys.stderr)
        sys.exit(1)
    if code == INTERRUPTED:
        print("error: interrupted", file=sys.stderr)
    sys.exit(code if isinstance(code, int) else 0)
