"""The CLI reference as Markdown, generated from the commands' own option declarations.

Every ``edgekit`` verb is a typer command whose options are declared once (in its
``edgekit/cli/*.py`` signature; ``compress``'s come from ``edgekit/compress/options.py``).
This walks the click commands typer builds from them -- the same objects ``edgekit VERB
--help`` prints -- so the reference cannot drift from the CLI. Run by the docs build
(``docs/hooks/cli_reference.py``) and checked against ``--help`` by ``tests/test_docs.py``.
"""
import inspect


def _cell(text):
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(param):
    d = param.default
    if getattr(param, "is_flag", False) and not getattr(param, "secondary_opts", None):
        return "off" if not d else "on"
    if d is None or callable(d) or "Sentinel" in repr(d) or d == () or d == []:
        return ""
    return "`{}`".format(d)


_TYPES = {"str": "text", "int": "integer", "float": "float", "Path": "path", "bool": "flag"}


def _type(param):
    """The value's type as --help names it (click's param.type, or typer's annotation)."""
    if getattr(param, "is_flag", False):
        return "flag"
    t = getattr(param, "type", None)
    if t is not None:
        choices = getattr(t, "choices", None)
        if choices:
            return " \\| ".join("`{}`".format(c) for c in choices)
        return (getattr(t, "name", "") or "").lower()
    ann = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    args = getattr(ann, "__args__", None)
    if args:  # List[Path] and the like
        return "list of " + _TYPES.get(getattr(args[0], "__name__", ""), str(args[0]))
    return _TYPES.get(getattr(ann, "__name__", ""), str(ann or ""))


def commands():
    """[(name, click command)] in the order of :data:`edgekit.cli.COMMANDS`."""
    import typer.main
    from edgekit.cli import COMMANDS, app
    group = typer.main.get_command(app)
    return [(name, group.commands[name]) for name in COMMANDS if name in group.commands]


def option_strings(cmd):
    """Every option string a command accepts (``--out``, ``-o``, ...)."""
    return {o for p in cmd.params if p.param_type_name == "option"
            for o in list(p.opts) + list(p.secondary_opts)}


def markdown():
    """The whole reference page."""
    lines = ["# CLI reference", "",
             "Generated from the option declarations of each command when the site is built "
             "(the same source as `edgekit VERB --help`). Exit codes: 0 ok; 1 a user error "
             "(one `error:` line on stderr, nothing written); 2 a missing optional dependency "
             "or hardware; 130 interrupted.", ""]
    for name, cmd in commands():
        lines += ["## edgekit {}".format(name), ""]
        args = [p for p in cmd.params if p.param_type_name == "argument"]
        usage = " ".join([(p.name.upper() + ("..." if p.nargs == -1 else "")) if p.required
                          else "[{}]".format(p.name.upper()) for p in args])
        lines += ["```", "edgekit {} [OPTIONS] {}".format(name, usage).rstrip(), "```", ""]
        doc = inspect.cleandoc(cmd.help or "")
        if doc:
            for para in doc.split("\n\n"):
                para = " ".join(para.split())
                if para.startswith("Example:"):
                    lines += ["```", para[len("Example:"):].strip(), "```", ""]
                else:
                    lines += [para, ""]
        lines += ["| option | type | default | help |", "|---|---|---|---|"]
        for p in args:
            lines.append("| `{}` (argument) | {} | {} | {} |".format(
                p.name.upper(), _type(p), "required" if p.required else _default(p),
                _cell(getattr(p, "help", "") or "")))
        for p in cmd.params:
            if p.param_type_name != "option":
                continue
            opts = ", ".join("`{}`".format(o) for o in list(p.opts) + list(p.secondary_opts))
            lines.append("| {} | {} | {} | {} |".format(
                opts, _type(p), "required" if p.required else _default(p), _cell(p.help or "")))
        lines.append("")
    return "\n".join(lines) + "\n"
