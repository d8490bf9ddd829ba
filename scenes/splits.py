"""The split format every script reads: class folders, the three CSVs and ``split_info.json``.

A dataset root holds one sub-folder per class (sorted by name gives the class index). A splits
folder holds ``train.csv``, ``validation.csv`` and ``test.csv`` (columns ``path,label,class_name``,
paths relative to the dataset root) and ``split_info.json`` (the root's absolute path, the class
names, the counts).
"""
import csv
import io
import json
import os

from scenes.cli import UserError
from scenes.files import sub_folders, write_atomically

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
SPLITS = ("train", "validation", "test")
CSV_COLUMNS = ("path", "label", "class_name")
SPLIT_INFO = "split_info.json"


def is_image_name(name):
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def class_folders(root):
    """The class names of a dataset root: its sub-folders that are not hidden, sorted; [] if no folder."""
    return [os.path.basename(path) for path in sub_folders(root)]


def split_csv(splits_dir, split):
    """The CSV of one split in a splits folder."""
    return os.path.join(splits_dir, f"{split}.csv")


def split_csvs(splits_dir):
    """``{"train_csv": ..., "validation_csv": ..., "test_csv": ...}`` of a splits folder, as configs keep them."""
    return {f"{split}_csv": split_csv(splits_dir, split) for split in SPLITS}


def csv_text(rows, class_names):
    """A split CSV's content for ``[(relative_path, label)]``."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows((rel, label, class_names[label]) for rel, label in rows)
    return text.getvalue()


def write_split_csv(path, rows, class_names):
    write_atomically(path, lambda f: f.write(csv_text(rows, class_names).encode("utf-8")))


def read_split_csv(csv_file, root, class_names=None):
    """Read a split CSV as [(relative_path, label)], checking it against the folder before any work.

    Raises UserError naming the missing files, or a class the folder (or ``class_names``) lacks.
    """
    if not os.path.isfile(csv_file):
        raise UserError(f"split file {csv_file!r} does not exist; run python main.py --steps=split first.")
    with open(csv_file, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header) != CSV_COLUMNS:
            raise UserError(f"{csv_file} is not a split CSV: its header should be {','.join(CSV_COLUMNS)}.")
        rows = list(reader)
    class_names = class_folders(root) if class_names is None else class_names
    unknown = sorted({(name, label) for _, label, name in rows
                      if name not in class_names or int(label) != class_names.index(name)})
    if unknown:
        shown = ", ".join(f"{name} (index {label})" for name, label in unknown[:5])
        raise UserError(f"{csv_file} has classes that {root!r} does not have at those indices: {shown}; "
                        f"the classes there are {', '.join(class_names) or 'none'}.")
    missing = [rel for rel, _, _ in rows if not os.path.isfile(os.path.join(root, rel))]
    if missing:
        raise UserError(f"{len(missing)} image(s) listed in {csv_file} are missing under {root!r}, e.g. "
                        f"{', '.join(missing[:5])}; fix data_root or make the split again.")
    return [(rel, int(label)) for rel, label, _ in rows]


def read_split_info(splits_dir):
    path = os.path.join(splits_dir, SPLIT_INFO)
    if not os.path.exists(path):
        raise UserError(f"no split found in {splits_dir!r} ({SPLIT_INFO} is missing); "
                        "run python main.py --steps=split first.")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def check_disjoint(split_paths, digest_of=None):
    """Raise UserError if any path (or, given ``digest_of``, any file content) is in two splits."""
    seen = {}
    for split, paths in split_paths.items():
        for path in paths:
            for key in [("path", path)] + ([("content", digest_of[path])] if digest_of else []):
                if key in seen and seen[key][0] != split:
                    raise UserError(f"splits overlap: {path} ({split}) and {seen[key][1]} ({seen[key][0]}) "
                                    f"have the same {key[0]}; make the split again with main.py --steps=split.")
                seen.setdefault(key, (split, path))
