"""The split format every script reads: class folders, the three CSVs and ``split_info.json``.

A dataset root holds one sub-folder per class (sorted by name gives the class index). A splits
folder holds ``train.csv``, ``validation.csv`` and ``test.csv`` (columns ``path,label,class_name``,
paths relative to the dataset root) and ``split_info.json`` (the root's absolute path, the class
names, the counts, the copies kept together and every image's sha256). A split's digest covers
each row's path, label and content, so a run knows the images it was trained on. A split is written as one set: while its files are renamed into place the
folder holds ``split_incomplete``, and a reader that finds it refuses the folder.
"""
import csv
import hashlib
import io
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from scenes.cli import UserError
from scenes.files import sub_folders, write_atomically, write_together

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
SPLITS = ("train", "validation", "test")
CSV_COLUMNS = ("path", "label", "class_name")
SPLIT_INFO = "split_info.json"
INCOMPLETE = "split_incomplete"  # there while a split is being written
# The columns beside the class columns in the CSVs the project writes (score files, predict.py --out,
# mistakes.csv, Table 1): a class of one of these names would give a file two columns of one name.
COLUMN_NAMES = ("path", "label", "predicted", "score", "prediction", "confidence", "run", "mAP", "accuracy",
                "mean class accuracy")


def is_image_name(name):
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def class_folders(root):
    """The class names of a dataset root: its sub-folders that are not hidden, sorted; [] if no folder."""
    return [os.path.basename(path) for path in sub_folders(root)]


def check_class_list(class_names, where):
    """Refuse a class list that no classifier or table of the project can use: fewer than two classes,
    or a class named as a column of the project's CSVs."""
    if len(class_names) < 2:
        raise UserError(f"{where} has {len(class_names)} class ({', '.join(class_names)}); a classifier needs two "
                        "or more class folders.")
    clashes = [name for name in class_names if name in COLUMN_NAMES]
    if clashes:
        raise UserError(f"{where} has a class named {clashes[0]!r}, as a column of the score and prediction CSVs "
                        f"({', '.join(COLUMN_NAMES)}); rename that class folder.")


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


def write_split(splits_dir, splits, class_names, info):
    """The three CSVs of ``{split: [(relative_path, label)]}`` and split_info.json, written as one set."""
    contents = {split_csv(splits_dir, name): csv_text(rows, class_names).encode("utf-8")
                for name, rows in splits.items()}
    contents[os.path.join(splits_dir, SPLIT_INFO)] = (json.dumps(info, indent=1) + "\n").encode("utf-8")
    write_together(contents, os.path.join(splits_dir, INCOMPLETE))


def check_complete(splits_dir):
    """Refuse a splits folder whose last writing was interrupted: its files may be of two splits."""
    if os.path.exists(os.path.join(splits_dir, INCOMPLETE)):
        raise UserError(f"the split in {splits_dir!r} was interrupted while it was written ({INCOMPLETE} is "
                        "there); make the split again with python main.py --steps=split.")


def csv_rows(csv_file):
    """A split CSV's rows as [(line, relative_path, label, class_name)], each checked for its form."""
    if not os.path.isfile(csv_file):
        raise UserError(f"split file {csv_file!r} does not exist; run python main.py --steps=split first.")
    check_complete(os.path.dirname(csv_file))
    try:
        with open(csv_file, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = [(reader.line_num, row) for row in reader if row]  # a blank line holds no image
    except (UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"{csv_file} cannot be read as a split CSV ({error}); make the split again.") from None
    if header is None or tuple(header) != CSV_COLUMNS:
        raise UserError(f"{csv_file} is not a split CSV: its header should be {','.join(CSV_COLUMNS)}.")
    if not rows:
        raise UserError(f"{csv_file} lists no image; make the split again with python main.py --steps=split.")
    checked = []
    for line, row in rows:
        if len(row) != len(CSV_COLUMNS):
            raise UserError(f"{csv_file} line {line} has {len(row)} cell(s), not the {len(CSV_COLUMNS)} of "
                            f"{','.join(CSV_COLUMNS)}; fix that line or make the split again.")
        rel, label, name = row
        if os.path.isabs(rel) or os.path.normpath(rel).split(os.sep)[0] == os.pardir:
            raise UserError(f"{csv_file} line {line} lists {rel}, a path outside the data root; paths are relative "
                            "to it, so make the split again.")
        try:
            checked.append((line, rel, int(label), name))
        except ValueError:
            raise UserError(f"{csv_file} line {line} has the label {label!r}, not a whole number; fix that line "
                            "or make the split again.") from None
    return checked


def drop_repeats(csv_file, rows):
    """The rows with each path once: a path listed twice is named on stderr, twice with two classes refused."""
    first, kept = {}, []
    for row in rows:
        line, rel, label, name = row
        if rel not in first:
            first[rel] = row
            kept.append(row)
        elif label != first[rel][2]:
            raise UserError(f"{csv_file} lists {rel} as {first[rel][3]} (line {first[rel][0]}) and as {name} "
                            f"(line {line}); keep the line of its true class.")
    repeats = [f"{rel} (lines {first[rel][0]} and {line})" for line, rel, _, _ in rows if first[rel][0] != line]
    if repeats:
        print(f"warning: {csv_file} lists {len(repeats)} image(s) more than once, e.g. {', '.join(repeats[:5])}; "
              "each is counted once.", file=sys.stderr)
    return kept


def read_split_csv(csv_file, root, class_names=None):
    """Read a split CSV as [(relative_path, label)], checking it against the folder before any work.

    Raises UserError naming a malformed line, the missing files, or a class the folder (or
    ``class_names``) lacks; a path listed twice is counted once.
    """
    rows = drop_repeats(csv_file, csv_rows(csv_file))
    class_names = class_folders(root) if class_names is None else class_names
    unknown = sorted({(name, label) for _, _, label, name in rows
                      if name not in class_names or label != class_names.index(name)})
    if unknown:
        shown = ", ".join(f"{name} (index {label})" for name, label in unknown[:5])
        raise UserError(f"{csv_file} has classes that {root!r} does not have at those indices: {shown}; "
                        f"the classes there are {', '.join(class_names) or 'none'}.")
    missing = [rel for _, rel, _, _ in rows if not os.path.isfile(os.path.join(root, rel))]
    if missing:
        raise UserError(f"{len(missing)} image(s) listed in {csv_file} are missing under {root!r}, e.g. "
                        f"{', '.join(missing[:5])}; fix data_root or make the split again.")
    return [(rel, label) for _, rel, label, _ in rows]


def read_split_info(splits_dir):
    """split_info.json of a splits folder, checked to hold the data root and the class names."""
    if os.path.exists(splits_dir) and not os.path.isdir(splits_dir):
        raise UserError(f"splits_dir {splits_dir!r} is a file, not a folder; give the folder that holds "
                        f"{SPLIT_INFO} and the split CSVs.")
    path = os.path.join(splits_dir, SPLIT_INFO)
    if not os.path.exists(path):
        raise UserError(f"no split found in {splits_dir!r} ({SPLIT_INFO} is missing); "
                        "run python main.py --steps=split first.")
    check_complete(splits_dir)
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError) as error:  # ValueError: not JSON, or not UTF-8
        raise UserError(f"{path} is damaged ({error}); make the split again with python main.py "
                        "--steps=split.") from None
    fine = {"data_root": lambda v: isinstance(v, str),
            "class_names": lambda v: isinstance(v, list) and v and all(isinstance(n, str) for n in v),
            "sha256": lambda v: isinstance(v, dict)}
    bad = [key for key, ok in fine.items() if not (isinstance(info, dict) and ok(info.get(key)))]
    if bad == ["sha256"]:
        raise UserError(f"{path} was written by an older version that did not record its images' content; make "
                        "the split again with python main.py --steps=split.")
    if bad:
        raise UserError(f"{path} lacks a valid {' and '.join(bad)}; make the split again with python main.py "
                        "--steps=split.")
    check_class_list(info["class_names"], f"the split in {splits_dir!r}")
    return info


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


def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


_digests = {}  # (path, inode, size, mtime, ctime) -> sha256: each file is read once per process


def content_digests(root, rels):
    """``{relative path: sha256 of the file}``, read on threads; a file already read by this
    process and unchanged since (its inode, size and times, ctime included, which no tool sets
    back) is not read again."""
    def digest(rel):
        path = os.path.join(root, rel)
        stat = os.stat(path)
        key = (os.path.abspath(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        if key not in _digests:
            _digests[key] = file_sha256(path)
        return _digests[key]
    with ThreadPoolExecutor(8) as pool:
        return dict(zip(rels, pool.map(digest, rels)))


def split_digest(rows, contents):
    """The sha256 of a split: its rows (relative path and label) with each image's content
    (``contents[path]``, a sha256). The same split reached by another path (``./splits``, a copy)
    has the same digest; a split made again over other images, or other pictures under the same
    names, has another."""
    digest = hashlib.sha256()
    for rel, label in rows:
        digest.update(f"{rel}\t{label}\t{contents[rel]}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def check_unchanged(root, rels, recorded, where):
    """Refuse images under ``root`` whose content is not what ``recorded`` (``{path: sha256}``) says,
    naming them; returns their digests now."""
    now = content_digests(root, rels)
    changed = [rel for rel in rels if now[rel] != recorded.get(rel)]
    if changed:
        raise UserError(f"{len(changed)} image(s) under {root!r} are not the ones {where} was made from, e.g. "
                        f"{', '.join(changed[:3])}; restore them, or make the split again (python main.py "
                        "--steps=split) and train on it.")
    return now


@dataclass
class Split:
    """A split as read and checked: its rows per split, their digests, the info it was written with."""
    info: dict
    rows: dict
    digests: dict


def read_split(splits_dir, root, class_names, verify=SPLITS):
    """The split in ``splits_dir`` over the images under ``root``, checked before it is trusted:
    every CSV line and file (``read_split_csv``), and the content of the images of the splits named
    in ``verify`` against the sha256 the split recorded."""
    info = read_split_info(splits_dir)
    recorded = info["sha256"]
    rows = {split: read_split_csv(split_csv(splits_dir, split), root, class_names) for split in SPLITS}
    for split in verify:
        check_unchanged(root, [rel for rel, _ in rows[split]], recorded, f"the split in {splits_dir!r}")
    missing = [rel for split_rows in rows.values() for rel, _ in split_rows if rel not in recorded]
    if missing:
        raise UserError(f"{split_csv(splits_dir, SPLITS[0])} and its neighbours list images that {SPLIT_INFO} does "
                        f"not, e.g. {missing[0]}; make the split again (python main.py --steps=split).")
    return Split(info, rows, {split: split_digest(split_rows, recorded) for split, split_rows in rows.items()})
