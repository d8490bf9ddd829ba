"""The command-line convention every script shares.

Each script keeps its settings as constants in one block at the top of the file, between the lines
``# --- settings ---`` and ``# --- end of settings ---``, one per line with a short comment. This
module reads that block, applies ``--key=value`` overrides with the type of the default, and
answers ``--help`` with every key, its default and its comment (as nanoGPT's configurator does,
without exec).

A comment may end with the setting's range in square brackets, checked for every value before any
work starts: ``[>= 1]``, ``[> 0 and <= 1]``, ``[16 to 1024]``, alternatives joined by ``or`` (``[0 or 16
to 1024]``), or ``[one of cached, plain]`` for words. One declared range per setting replaces an
``if`` per script.

A user mistake is raised as ``UserError`` and printed as one sentence on stderr with a non-zero
exit; anything else is a bug and keeps its traceback.
"""
import ast
import io
import math
import operator
import os
import re
import sys
import tokenize

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # where the scripts are
BLOCK_START = "# --- settings ---"
BLOCK_END = "# --- end of settings ---"
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}
RANGE_MARK = re.compile(r"\[([^\[\]]+)\]$")
COMPARISONS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


class UserError(Exception):
    """A mistake the user can fix (bad path, bad value, bad file): shown without a traceback."""


def settings_block(script_path):
    """Return [(name, default, comment)] for the settings block of a script, in file order."""
    with open(script_path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    start, end = lines.index(BLOCK_START), lines.index(BLOCK_END)
    settings = []
    for line in lines[start + 1:end]:
        code, comment = split_comment(line)
        if not code.strip():
            continue
        node = ast.parse(code).body[0]
        settings.append((node.targets[0].id, ast.literal_eval(node.value), comment))
    return settings


def split_comment(line):
    """(code, comment) of one line of Python; the tokenizer finds the comment, so a ``#`` inside a
    string stays code."""
    for token in tokenize.generate_tokens(io.StringIO(line).readline):
        if token.type == tokenize.COMMENT:
            return line[:token.start[1]], token.string[1:].strip()
    return line, ""


def convert(key, text, default):
    """Convert a command-line string to the type of the default, or refuse with a sentence."""
    if isinstance(default, bool):
        word = text.strip().lower()
        if word in TRUE_WORDS | FALSE_WORDS:
            return word in TRUE_WORDS
        raise UserError(f"--{key} takes true or false, not {text!r}.")
    if isinstance(default, (int, float)):
        try:
            value = float(text) if isinstance(default, float) else int(text)
        except ValueError:
            raise UserError(f"--{key} takes {type(default).__name__} values, not {text!r}.") from None
        if not math.isfinite(value):
            raise UserError(f"--{key} takes a finite number, not {text!r}.")
        return value
    return text


def declared_range(comment):
    """The range a setting's comment ends with (``"> 0 and <= 1"``), or None."""
    mark = RANGE_MARK.search(comment.strip())
    return mark.group(1).strip() if mark else None


def satisfies(value, condition):
    """Whether a number meets one condition of a range: ``>= 16``, ``0 to 1`` or ``0``."""
    for symbol, compare in COMPARISONS.items():
        if condition.startswith(symbol):
            return compare(value, float(condition[len(symbol):]))
    low, to, high = condition.partition(" to ")
    return float(low) <= value <= float(high) if to else value == float(condition)


def in_range(value, spec):
    """Whether a value lies in a declared range (see the module docstring)."""
    if spec.startswith("one of "):
        return str(value) in [word.strip() for word in spec[len("one of "):].split(",")]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"the range [{spec}] is declared for a setting that is not a number")
    return any(all(satisfies(value, c.strip()) for c in alternative.split(" and "))
               for alternative in spec.split(" or "))


def check_ranges(settings, config):
    """Refuse the first setting whose value lies outside the range its comment declares."""
    for name, _, comment in settings:
        spec = declared_range(comment)
        if spec and not in_range(config[name], spec):
            if spec.startswith("one of "):
                raise UserError(f"--{name} takes {spec}, not {config[name]!r}.")
            raise UserError(f"--{name}={config[name]} is outside its range [{spec}] (see --help).")


def help_text(script_doc, settings, help_values=None):
    """``--help``: the script's docstring and one row per setting; a comment's ``{NAME}`` is filled
    from ``help_values``, so a threshold in a help text comes from its constant."""
    width = max(len(name) for name, _, _ in settings) + 2
    rows = [f"  --{name + '=':<{width}} default {default!r:<14} {fill(comment, help_values or {})}"
            for name, default, comment in settings]
    return f"{(script_doc or '').strip()}\n\nSettings (edit the top of the script or pass --key=value):\n" + "\n".join(rows)


def fill(comment, values):
    """A comment with each ``{NAME}`` of ``values`` replaced; any other brace is text."""
    return re.sub(r"\{(\w+)\}", lambda m: str(values.get(m.group(1), m.group(0))), comment)


def defaults(script_path):
    """The settings block of a script as {name: default}."""
    return {name: value for name, value, _ in settings_block(script_path)}


def script_defaults(script):
    """The settings of one of the project's scripts (``"train.py"``) as {name: default}, read from
    its file: the package never imports a script."""
    return defaults(os.path.join(PROJECT_ROOT, script))


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
    check_ranges(settings, config)
    return (config, overrides, positionals) if positional else (config, overrides)


def run(main):
    """Call ``main()``; a UserError becomes one sentence on stderr and exit status 2."""
    try:
        main()
        sys.stdout.flush()  # a reader that is gone (a pipe into head) shows here, not at exit
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted.", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # output piped into e.g. head, which read what it wanted: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python exits
        sys.exit(0)
