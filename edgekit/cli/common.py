"""Small helpers shared by CLI commands: the console, tables, JSON output."""
import json
import sys

from rich.console import Console
from rich.table import Table

import typer

# A table piped into a file, a log or CI keeps every cell whole: a console whose own stream is
# not a terminal lays tables out at their natural width instead of the 80 columns rich assumes
# (which cut cells to `openvi…`). On a terminal, the terminal's width as usual.
LOG_WIDTH = 10000


class LogSafeConsole(Console):
    """A rich Console that never cuts or wraps its output when its stream is not a terminal
    (``COLUMNS`` included: a CI runner's COLUMNS=80 must not cut a log either)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._asked_width = kwargs.get("width")

    @property
    def size(self):
        dims = Console.size.fget(self)
        if self.is_terminal or self._asked_width is not None:
            return dims
        return dims._replace(width=LOG_WIDTH)

    @size.setter
    def size(self, new_size):
        Console.size.fset(self, new_size)


console = LogSafeConsole(stderr=False, highlight=False)
err_console = LogSafeConsole(stderr=True, highlight=False)

# options several commands take, declared once (typer reads a shared OptionInfo as it is)
def _target_name(value):
    """``--target ''`` is a mistake, not the default (omit the option for that)."""
    if value is not None and not str(value).strip():
        raise typer.BadParameter("an empty target name: omit --target for the default one, or "
                                 "give a name (`edgekit doctor` lists them)")
    return value


TARGET = typer.Option(None, "--target", callback=_target_name, help="Target: a name from targets/*.toml (`edgekit doctor "
                      "--target NAME`; default: the one marked default = true).")
IDENTITY = typer.Option(None, "--identity", help="SSH private key file (else ssh config/agent).")
KNOWN_HOSTS = typer.Option(None, "--known-hosts", help="known_hosts file (default "
                           "~/.ssh/known_hosts).")
ACCEPT_NEW_HOST_KEY = typer.Option(False, "--accept-new-host-key", help="Trust and record an "
                                   "unknown host key (never a changed one).")
REMOTE_PYTHON = typer.Option("python3", "--remote-python", help="Python on the device.")
RESIZE = typer.Option(False, "--resize", help="Fit data to the model even when that changes the "
                      "picture (shrinking over 2x, another aspect ratio, colour to grey); fits "
                      "that keep it (enlarging, grey to RGB) are made without it, and said.")
REMOTE_DIR = typer.Option("~/edgekit", "--remote-dir", help="Where bundles go on the device.")



def _declared(name):
    """A typer option from a compression option's declaration (edgekit.compress.options):
    same flag, same help, for verbs that take it too (eval, import)."""
    from edgekit.compress.options import COMMON
    o = COMMON[name]
    return typer.Option(None, o.flag_name, help=o.help, metavar="<{}>".format(o.kind.name))


# the model's input preprocessing, as compress declares it
PREPROCESS = _declared("preprocess")
SCALE = _declared("scale")
MEAN = _declared("mean")
STD = _declared("std")


def say_stderr(message):
    """Print a progress / note line on stderr, unwrapped (stdout stays parseable, --json)."""
    print(message, file=sys.stderr, flush=True)


def table(title, columns, rows):
    """Build a rich table from column names and row tuples (values str()-ed)."""
    t = Table(title=title, show_lines=False)
    for c in columns:
        t.add_column(str(c))
    for row in rows:
        t.add_row(*["" if v is None else str(v) for v in row])
    return t


def print_json(obj, path=None):
    """Write ``obj`` as JSON to ``path`` (atomic) or stdout."""
    text = json.dumps(obj, indent=2, default=str)
    if path is None or str(path) == "-":
        sys.stdout.write(text + "\n")
    else:
        from edgekit.util import atomic_write_text
        atomic_write_text(path, text + "\n")


def pct(x):
    return "-" if x is None else "{:.2f}%".format(100.0 * x)


def kib(n):
    return "-" if n is None else "{:,.1f} KiB".format(n / 1024.0)
