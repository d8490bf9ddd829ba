"""The command-line convention every script shares.

Each script keeps its settings as constants in one block at the top of the file, between the lines
``# --- settings ---`` and ``# --- end of settings ---``, one per line with a short comment. This
module reads that block, applies ``--key=value`` overrides with the type of the default, and
answers ``--help`` with every key, its default and its comment (as nanoGPT's configurator does,
without exec).

A user mistake is raised as ``UserError`` and printed as one sentence on stderr with a non-zero
exit; anything else is a bug and keeps its traceback.
"""
import ast
import sys

BLOCK_START = "# --- settings ---"
BLOCK_END = "# --- end of settings ---"
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}


class UserError(Exception):
    """A mistake the user can fix (bad path, bad value, bad file): shown without a traceback."""


def settings_block(script_path):
    """Return [(name, default, comment)] for the settings block of a script, in file order."""
    with open(script_path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    start, end = lines.index(BLOCK_START), lines.index(BLOCK_END)
    settings = []
    for line in lines[start + 1:end]:
        code, _, comment = line.partition("  # ")
        if not code.strip() or code.lstrip().startswith("#"):
            continue
        node = ast.parse(code).body[0]
        settings.append((node.targets[0].id, ast.literal_eval(node.value), comment.strip()))
    return settings


def convert(key, text, default):
    """Convert a command-line string to the type of the default, or refuse with a sentence."""
    if isinstance(default, bool):
        word = text.strip().lower()
        if word in TRUE_WORDS | FALSE_WORDS:
            return word in TRUE_WORDS
        raise UserError(f"--{key} takes true or false, not {text!r}.")
    if isinstance(default, (int, float)):
        try:
            return type(default)(text) if isinstance(default, float) else int(text)
        except ValueError:
            raise UserError(f"--{key} takes {type(default).__name__} values, not {text!r}.") from None
    return text


def help_text(script_doc, settings, help_values=None):
    """``--help``: the script's docstring and one row per setting; a comment's ``{NAME}`` is filled
    from ``help_values``, so a threshold in a help text comes from its constant."""
    width = max(len(name) for name, _, _ in settings) + 2
    rows = [f"  --{name + '=':<{width}} default {default!r:<14} {comment.format_map(help_values or {})}"
            for name, default, comment in settings]
    return f"{(script_doc or '').strip()}\n\nSettings (edit the top of the script or pass --key=value):\n" + "\n".join(rows)


def defaults(script_path):
    """The settings block of a script as {name: default}."""
    return {name: value for name, value, _ in settings_block(script_path)}


def parse(script_path, script_doc, argv=None, positional=False, help_values=None):
    """Read the script's settings block and apply ``--key=value`` overrides.

    Returns ``(config, overrides)`` (plus the positional arguments when ``positional`` is true):
    ``config`` holds every setting as a plain value, ``overrides`` only those given on the command
    line, so a caller can tell what the user asked for from what is a default.
    """
    argv = sys.argv[1:] if argv is None else argv
    settings = settings_block(script_path)
    defaults = {name: default for name, default, _ in settings}
    if "-h" in argv or "--help" in argv:
        print(help_text(script_doc, settings, help_values))
        sys.exit(0)
    overrides, positionals = {}, []
    for arg in argv:
        if not arg.startswith("--"):
            if not positional:
                raise UserError(f"unexpected argument {arg!r}: settings are given as --key=value (see --help).")
            positionals.append(arg)
            continue
        key, eq, text = arg[2:].partition("=")
        if key not in defaults:
            raise UserError(f"unknown setting --{key}; --help lists the {len(defaults)} settings.")
        if not eq:
            if not isinstance(defaults[key], bool):
                raise UserError(f"--{key} needs a value, as --{key}=VALUE.")
            text = "true"
        overrides[key] = convert(key, text, defaults[key])
    config = {**defaults, **overrides}
    return (config, overrides, positionals) if positional else (config, overrides)


def run(main):
    """Call ``main()``; a UserError becomes one sentence on stderr and exit status 2."""
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted.", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # output piped into e.g. head, which stopped reading
        sys.stderr.close()
        sys.exit(0)
