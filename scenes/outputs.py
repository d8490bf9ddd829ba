"""Where an output may go: never over an input of the command or a file the project keeps.

Every script checks the files and folders its settings name for output before any work:
``check_output_file`` refuses a file that is an input of the command (by its real path, so a
symbolic or hard link to it counts), a checkpoint, a file of a split, a run's own files or a
cache; ``check_output_folder`` refuses a folder at or inside the data root (every folder there is
a class, every image a sample); ``check_run_name`` refuses a run name that is not one plain folder
name, so a run never lands on the checkpoints folder itself or inside another run.
"""
import os

from scenes.cli import UserError
from scenes.splits import INCOMPLETE, SPLIT_INFO, SPLITS

RUN_MARKS = ("best.pth", "last.pth", "metrics.csv", "config.json")  # a folder with one of them is a run
RUN_FILES = (*RUN_MARKS, "curves.png", "test_loss.png", ".lock")
SPLIT_FILES = (*(f"{split}.csv" for split in SPLITS), SPLIT_INFO, INCOMPLETE)


def is_run_folder(folder):
    return any(os.path.exists(os.path.join(folder, name)) for name in RUN_MARKS)


def kept_file(path):
    """What the project keeps at ``path`` ("a checkpoint", ...), or None for a free name."""
    folder, name = os.path.split(os.path.abspath(path))
    if name.lower().endswith(".pth"):
        return "a checkpoint (.pth)"
    if name.lower().endswith(".u8"):
        return "a cache file (.u8)"
    if name in SPLIT_FILES and os.path.exists(os.path.join(folder, SPLIT_INFO)):
        return f"a file of the split in {folder}"
    if is_run_folder(folder) and (name in RUN_FILES or name.endswith("_scores.csv")):
        return f"a file of the run {folder}"
    return None


def same_file(path, other):
    """Whether two paths name one existing file (through links, hard links included)."""
    try:
        return os.path.samefile(path, other)
    except OSError:  # either one missing or unreadable: not the same existing file
        return False


def check_output_file(path, setting, inputs=()):
    """Refuse, before any work, an output file that would overwrite an input of the command
    (``inputs``: ``(what, path)`` pairs) or a file the project keeps."""
    kept = kept_file(path)
    if kept:
        raise UserError(f"--{setting}={path} names {kept}, which an output never replaces; name another file.")
    if os.path.exists(path):
        clash = next((what for what, other in inputs if other and same_file(path, other)), None)
        if clash:
            raise UserError(f"--{setting}={path} is {clash}, an input of this command; name another file.")
    return path


def inside(path, folder):
    """Whether ``path`` is ``folder`` or lies under it, links resolved."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_output_folder(path, setting, data_root):
    """Refuse an output folder at or inside the data root: its sub-folders would become classes and its
    images samples of the next split."""
    if data_root and os.path.isdir(data_root) and inside(path, data_root):
        raise UserError(f"--{setting}={path} lies in the data root {data_root}, where every folder is a class; "
                        "choose a folder outside it.")
    return path


def check_run_name(name):
    """A run is one folder of the checkpoints folder: refuse ``.``, ``..``, a path or a hidden name."""
    if not name or name in (".", "..") or name.startswith(".") or "/" in name or os.sep in name \
            or (os.altsep and os.altsep in name):
        raise UserError(f"--run={name} is not a plain folder name; a run is one folder of --checkpoints_dir, "
                        "so name it without / (e.g. --run=sgd_long).")
    return name
