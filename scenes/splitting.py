"""Making a split (what data_handling.py runs; its docstring says what a split is and guarantees):
scanning a dataset root, hashing and decoding every image, grouping copies and near-copies
(``scenes.near_copies``), the stratified seeded assignment, and the checks before anything is written.
A labelled folder can also be listed as a split CSV (``folder_listing``, for accuracy_eval.py --folder).
"""
import hashlib
import io
import math
import os
import random
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from scenes.cli import UserError
from scenes.corrections import correct
from scenes.files import ensure_folder, sub_folders
from scenes.images import to_rgb
from scenes.near_copies import NEAR_DISTANCE, connected_groups, near_pairs, perceptual_hash
from scenes.splits import (IMAGE_EXTENSIONS, SPLITS, check_class_list, check_disjoint, class_folders, is_image_name,
                           write_split, write_split_csv)

# The full Intel set (17,034 images) splits into exactly 12,034 / 3,000 / 2,000 with these.
DEFAULT_VAL_SIZE = 3000 / 17034
DEFAULT_TEST_SIZE = 2000 / 17034


def scan_dataset(root):
    """Return (class_names, [(relative_path, label)]) for a root of class folders, sorted."""
    if not os.path.exists(root):
        raise UserError(f"dataset root {root!r} does not exist; put one sub-folder of images per class there.")
    if not os.path.isdir(root):
        raise UserError(f"dataset root {root!r} is a file, not a folder of class sub-folders.")
    class_names = class_folders(root)
    if not class_names:
        raise UserError(f"dataset root {root!r} has no class sub-folders; put one sub-folder of images per class there.")
    samples, empty = [], []
    for label, name in enumerate(class_names):
        files = sorted(f for f in os.listdir(os.path.join(root, name)) if is_image_name(f)
                       and os.path.isfile(os.path.join(root, name, f)))
        if not files:
            empty.append(name)
        samples += [(f"{name}/{f}", label) for f in files]
    if len(empty) == len(class_names):
        point_to_class_folders(root)
    if empty:
        raise UserError(f"class folder(s) {', '.join(empty)} in {root!r} hold no images "
                        f"({', '.join(sorted(IMAGE_EXTENSIONS))}); add images or remove the folder.")
    check_class_list(class_names, f"dataset root {root!r}")
    check_distinct_folders(root, class_names)
    return class_names, samples


def check_distinct_folders(root, class_names):
    """Refuse two class folders that are one folder (a link to another class): its images would be filed
    under two labels."""
    first = {}
    for name in class_names:
        real = os.path.realpath(os.path.join(root, name))
        if real in first:
            raise UserError(f"class folders {first[real]} and {name} in {root!r} are the same folder ({real}), "
                            "so its images would have two labels; remove the link.")
        first[real] = name


def holds_images(folder):
    return any(is_image_name(e.name) and e.is_file() for e in os.scandir(folder))


def class_roots_below(root, depth=3):
    """Folders under ``root`` (at most ``depth`` levels down) whose sub-folders hold images, shallowest
    first: where the class folders of a nested download (Kaggle's seg_train/seg_train) are."""
    found, level = [], [root]
    for _ in range(depth):
        level = [sub for folder in level for sub in sub_folders(folder)]
        found += [folder for folder in level if sum(holds_images(sub) for sub in sub_folders(folder)) >= 2]
    return found


def point_to_class_folders(root):
    """Refuse a root whose class folders hold no images, naming the folders below that look like a
    dataset root (a Kaggle download nests them: seg_train/seg_train, seg_test/seg_test)."""
    below = class_roots_below(root)
    if not below:
        return
    training = [folder for folder in below if "train" in os.path.basename(folder).lower()] or below
    others = [folder for folder in below if folder not in training]
    hint = f"; evaluate a trained run on {others[0]} with python accuracy_eval.py CHECKPOINT --folder={others[0]}" \
        if others else ""
    raise UserError(f"{root!r} holds no images in its sub-folders, but {training[0]} holds class folders of images "
                    f"(the Kaggle download nests them); pass --data_root={training[0]}{hint}.")


def folder_listing(folder, out_dir):
    """A labelled folder (one sub-folder per class) listed as a split CSV ``folder-<name>.csv`` in
    ``out_dir``, so it is evaluated as a CSV is (against a checkpoint of the same classes); returns
    the CSV's path."""
    class_names, samples = scan_dataset(folder)
    path = os.path.join(out_dir, f"folder-{os.path.basename(os.path.normpath(folder))}.csv")
    write_split_csv(path, samples, class_names)
    return path


def inspect_image(path):
    """Return (sha256 of the file's bytes, perceptual hash, None) or (None, None, reason) when it
    cannot be decoded; the picture is hashed as every script sees it (``to_rgb``)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            picture = to_rgb(image)
        return hashlib.sha256(data).hexdigest(), perceptual_hash(picture), None
    except Exception as error:  # PIL raises many kinds for a bad file; each one means "unreadable"
        return None, None, f"{type(error).__name__}: {error}"


def inspect_all(root, samples, workers=8):
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda s: inspect_image(os.path.join(root, s[0])), samples))


def copy_groups(samples, digests, hashes):
    """Lists of samples kept together: byte-identical files and near-copies (``NEAR_DISTANCE``),
    joined transitively; most lists hold one sample."""
    first_of = {}
    links = [(first_of.setdefault(digest, i), i) for i, digest in enumerate(digests)]
    links += [(a, b) for a, b, _ in near_pairs(hashes)]
    return [[samples[i] for i in group] for group in connected_groups(len(samples), links)]


def resolve_size(size, total, what):
    """A size below 1 is a fraction of the total, otherwise a count of images."""
    if 0 <= size < math.inf:  # nan fails it too, as every comparison
        count = round(size * total) if size < 1 else int(size)
        if count <= total:
            return count
    raise UserError(f"{what} size {size} does not fit {total} images; give a fraction below 1 or a count.")


def class_quotas(class_counts, count):
    """Split ``count`` over classes in proportion to their sizes, summing exactly (largest remainder)."""
    total = sum(class_counts)
    exact = [n * count / total for n in class_counts]
    quotas = [int(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda c: (quotas[c] - exact[c], c))
    for c in by_remainder[:count - sum(quotas)]:
        quotas[c] += 1
    return quotas


def assign_splits(samples, groups, num_classes, val_size, test_size, seed):
    """Stratified assignment of every readable sample to a split, each group kept together.

    ``groups`` (see ``copy_groups``) are filed under the class of their first path; groups
    are shuffled per class with the seed and fill the test, then the validation quota. Quotas are
    per class of each image, so a copy filed under another class counts against that class's quota.
    Returns {split: [sample, ...]}.
    """
    per_class = defaultdict(list)
    for members in groups:
        per_class[members[0][1]].append(members)
    class_counts = [sum(1 for _, label in samples if label == c) for c in range(num_classes)]
    total = sum(class_counts)
    need = {"test": class_quotas(class_counts, resolve_size(test_size, total, "test")),
            "validation": class_quotas(class_counts, resolve_size(val_size, total, "validation"))}
    rng = random.Random(seed)
    splits = {name: [] for name in SPLITS}
    for c in range(num_classes):
        class_groups = sorted(per_class[c])
        rng.shuffle(class_groups)
        for members in class_groups:
            wanted = Counter(label for _, label in members)
            split = next((s for s in ("test", "validation")
                          if all(n <= need[s][label] for label, n in wanted.items())), "train")
            if split != "train":
                for label, n in wanted.items():
                    need[split][label] -= n
            splits[split] += members
    return {name: sorted(rows) for name, rows in splits.items()}


def check_names(root, samples):
    """Refuse file names that cannot be written to a UTF-8 CSV, before any image is decoded."""
    bad = []
    for rel, _ in samples:
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:  # a name of bytes that are not UTF-8, kept by Python as surrogates
            bad.append(os.fsencode(rel).decode("utf-8", "backslashreplace"))
    if bad:
        raise UserError(f"{len(bad)} file name(s) under {root!r} are not valid UTF-8, e.g. {', '.join(bad[:5])}; "
                        "rename them (convmv can) and make the split again.")


def check_place(root, splits_dir):
    """The splits folder must lie outside the dataset root, links resolved, and be a folder that can be made."""
    if os.path.realpath(splits_dir).startswith(os.path.realpath(root) + os.sep):
        raise UserError(f"splits_dir {splits_dir!r} is inside the dataset root, where every folder is a class; "
                        "choose a folder outside it.")
    ensure_folder(splits_dir, "splits_dir")


def check_split_sizes(splits, class_names, val_size, test_size, log):
    """An empty split is refused, naming the size settings; a class missing from a split is a warning."""
    empty = [name for name in SPLITS if not splits[name]]
    if empty:
        total = sum(len(rows) for rows in splits.values())
        raise UserError(f"with {total} images, --val_size={val_size} and --test_size={test_size} leave the "
                        f"{' and '.join(empty)} split empty; choose sizes that give every split an image.")
    short = []
    for label, name in enumerate(class_names):
        missing = [split for split in SPLITS if all(l != label for _, l in splits[split])]
        if missing:
            count = sum(l == label for rows in splits.values() for _, l in rows)
            short.append(f"{name} ({count} image(s), none in {' or '.join(missing)})")
    if short:
        log(f"warning: class(es) too small to reach every split: {', '.join(short)}; add images or change "
            "--val_size and --test_size.")


def readable_images(root, samples, log):
    """(samples, sha256s, perceptual hashes, unreadable paths): the images that decode, the others named."""
    results = inspect_all(root, samples)
    for (rel, _), (_, _, why) in zip(samples, results):
        if why:
            log(f"warning: leaving out {rel}: it cannot be decoded ({why})")
    kept = [(sample, digest, phash) for sample, (digest, phash, _) in zip(samples, results) if digest]
    unreadable = [rel for (rel, _), (digest, _, _) in zip(samples, results) if not digest]
    return [k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept], unreadable


def report_copies(groups, digest_of, class_names, log):
    """Name each group of copies; returns (duplicates, near-copies) as lists of path lists: a group
    is of near-copies when its files are not all byte-identical."""
    duplicates, near = [], []
    for members in sorted(g for g in groups if len(g) > 1):
        classes = {class_names[label] for _, label in members}
        where = "filed under two classes" if len(classes) > 1 else "within one class"
        paths = [rel for rel, _ in members]
        identical = len({digest_of[rel] for rel in paths}) == 1
        (duplicates if identical else near).append(paths)
        log(f"{'duplicate content' if identical else 'near-copies'} ({where}): "
            f"{(' = ' if identical else ' ~ ').join(paths)}")
    return duplicates, near


def make_splits(root, splits_dir, val_size=DEFAULT_VAL_SIZE, test_size=DEFAULT_TEST_SIZE, seed=0, log=print,
                corrections=""):
    """Scan, check, split and write the three CSVs plus split_info.json as one set. Returns the info dict."""
    class_names, samples = scan_dataset(root)
    check_names(root, samples)
    samples, corrected = correct(samples, class_names, corrections, log)
    check_place(root, splits_dir)
    log(f"scanning {len(samples)} images in {len(class_names)} classes under {root} ...")
    samples, digests, hashes, unreadable = readable_images(root, samples, log)
    groups = copy_groups(samples, digests, hashes)
    digest_of = {rel: d for (rel, _), d in zip(samples, digests)}
    duplicates, near = report_copies(groups, digest_of, class_names, log)
    splits = assign_splits(samples, groups, len(class_names), val_size, test_size, seed)
    check_split_sizes(splits, class_names, val_size, test_size, log)
    check_disjoint({k: [rel for rel, _ in v] for k, v in splits.items()}, digest_of)
    info = {"data_root": os.path.abspath(root), "class_names": class_names, "seed": seed,
            "counts": {name: len(rows) for name, rows in splits.items()},
            "duplicates": duplicates, "near_copies": near, "near_distance": NEAR_DISTANCE,
            "unreadable": unreadable, "sha256": dict(sorted(digest_of.items())), **corrected}
    write_split(splits_dir, splits, class_names, info)
    log(split_summary(splits, class_names))
    log(f"the three splits are disjoint by path and by content; {len(duplicates)} duplicate group(s) and "
        f"{len(near)} group(s) of near-copies kept in one split each, {len(unreadable)} unreadable image(s) "
        f"left out. CSVs written to {splits_dir}/")
    return info


def split_summary(splits, class_names):
    """A small table of images per class and split."""
    header = f"{'class':<12}" + "".join(f"{s:>12}" for s in SPLITS)
    rows = [header]
    for label, name in enumerate(class_names):
        rows.append(f"{name:<12}" + "".join(f"{sum(1 for _, l in splits[s] if l == label):>12}" for s in SPLITS))
    rows.append(f"{'total':<12}" + "".join(f"{len(splits[s]):>12}" for s in SPLITS))
    return "\n".join(rows)
