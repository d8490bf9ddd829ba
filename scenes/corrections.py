"""Corrections of the data's labels: a CSV the user edits, applied when the split is made.

One row per image: ``path`` (relative to the data root, as in the split CSVs and audit.py's
label_issues.csv), ``action`` (``relabel`` or ``drop``) and ``class`` (the class a relabelled image
belongs to; empty for a drop). Columns after these three are notes for the reader (audit.py writes
the given class and its score there) and are ignored. The image files stay where they are: a split
CSV keeps an image's path and gives it the corrected class, and the split records the file's sha256
(``corrections_sha256`` in split_info.json), so the split's digest and every run trained on it
change with the corrections.
"""
import csv
import hashlib
import io
import os
from dataclasses import dataclass

from scenes.cli import UserError
from scenes.files import write_atomically

COLUMNS = ("path", "action", "class")
ACTIONS = ("relabel", "drop")


@dataclass
class Corrections:
    """A read corrections file: its path, its bytes' sha256 and ``{path: class index, or None to drop}``."""
    file: str
    sha256: str
    actions: dict


def read_corrections(file, class_names):
    """A corrections file, every row checked before any work; UserError names the file and line."""
    if not os.path.isfile(file):
        raise UserError(f"corrections file {file!r} does not exist; audit.py writes one to start from "
                        "(corrections_suggested.csv).")
    with open(file, "rb") as f:
        data = f.read()
    try:
        reader = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""))
        header = next(reader, None)
        rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except (UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"{file} cannot be read as a CSV ({error}).") from None
    if header is None or tuple(cell.strip() for cell in header[:3]) != COLUMNS:
        raise UserError(f"{file} is not a corrections file: its header should begin with {','.join(COLUMNS)}.")
    actions, lines = {}, {}
    for line, row in rows:
        rel, action, label = check_row(file, line, row, class_names)
        if rel in lines:
            raise UserError(f"{file} lists {rel} twice (lines {lines[rel]} and {line}); keep one row per image.")
        actions[rel], lines[rel] = label, line
    return Corrections(file, hashlib.sha256(data).hexdigest(), actions)


def check_row(file, line, row, class_names):
    """One row as (path, action, class index or None), or a UserError naming the line."""
    if len(row) < len(COLUMNS):
        raise UserError(f"{file} line {line} has {len(row)} cell(s), not the {len(COLUMNS)} of "
                        f"{','.join(COLUMNS)}.")
    rel, action, name = (cell.strip() for cell in row[:3])
    if not rel or os.path.isabs(rel) or os.path.normpath(rel).split(os.sep)[0] == os.pardir:
        raise UserError(f"{file} line {line} names {rel!r}, not a path relative to the data root.")
    if action not in ACTIONS:
        raise UserError(f"{file} line {line} has the action {action!r}; write relabel or drop.")
    if action == "drop":
        return os.path.normpath(rel), action, None
    if name not in class_names:
        raise UserError(f"{file} line {line} relabels {rel} to {name!r}, which is no class of the data "
                        f"({', '.join(class_names)}).")
    return os.path.normpath(rel), action, class_names.index(name)


def apply_corrections(samples, corrections):
    """``[(relative_path, label)]`` with the corrections applied (dropped images left out); a
    correction of an image that is not in ``samples`` is refused, as it is likely a typo."""
    known = {rel for rel, _ in samples}
    unknown = [rel for rel in corrections.actions if rel not in known]
    if unknown:
        raise UserError(f"{corrections.file} names {len(unknown)} image(s) that are not in the data root, e.g. "
                        f"{', '.join(unknown[:5])}; fix those paths (relative to the data root).")
    corrected = []
    for rel, label in samples:
        new = corrections.actions.get(rel, label)
        if new is not None:
            corrected.append((rel, new))
    return corrected


def correct(samples, class_names, file, log=print):
    """The split's view of the images: ``(samples, info)`` with ``file``'s corrections applied
    (none for ""), ``info`` what split_info.json records of them."""
    if not file:
        return samples, {"corrections_sha256": None}
    corrections = read_corrections(file, class_names)
    corrected = apply_corrections(samples, corrections)
    old = dict(samples)
    relabelled = sum(1 for rel, label in corrected if old[rel] != label)
    dropped = len(samples) - len(corrected)
    log(f"corrections from {file}: {relabelled} image(s) relabelled, {dropped} dropped")
    return corrected, {"corrections_sha256": corrections.sha256,
                       "corrections": {"file": os.path.abspath(file), "relabelled": relabelled, "dropped": dropped}}


def write_corrections(path, rows, notes=()):
    """A corrections file of ``[(path, action, class, *notes)]``, headed by ``COLUMNS`` and the notes' names."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([*COLUMNS, *notes])
    writer.writerows(rows)
    write_atomically(path, lambda f: f.write(text.getvalue().encode("utf-8")))
