"""Labelling image files with a trained model: what predict.py and export.py's check share.

``find_images`` turns the command line's files, folders and globs into image files;
``FileLoader`` decodes them in parallel (``scenes.images.open_rgb``, as training and evaluation
do) through the run's evaluation transforms, skipping the files it cannot decode; ``scores_table``
is the result, one row per image.
"""
import math
import os
import pathlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import torch

from scenes.cli import UserError
from scenes.images import decoding_threads, open_rgb
from scenes.splits import IMAGE_EXTENSIONS, is_image_name

GLOB_CHARACTERS = "*?["
BATCHES_AHEAD = 2  # batches decoded ahead of the model: enough to keep it busy, bounded in memory


def images_in(folder):
    """The image files under ``folder``, recursively, sorted; hidden files and folders are left out."""
    found = []
    for parent, folders, files in os.walk(folder):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        found += [os.path.join(parent, name) for name in sorted(files) if is_image_name(name)]
    return found


def glob_matches(pattern):
    """The paths a glob matches, sorted; ``**`` never enters a linked folder, so a link to a parent
    folder cannot make it loop (Python's glob follows them, listing an image once per turn)."""
    parts = pattern.split(os.sep)
    fixed = next(i for i, part in enumerate(parts + ["*"]) if any(c in part for c in GLOB_CHARACTERS))
    base = os.sep.join(parts[:fixed]) or (os.sep if pattern.startswith(os.sep) else ".")
    rest = os.sep.join(parts[fixed:])
    matches = [path for path in pathlib.Path(base).glob(rest)  # hidden files and folders left out, as glob does
               if not any(part.startswith(".") for part in path.relative_to(base).parts)]
    return sorted(str(path) for path in matches)


def images_of(argument):
    """The image files one argument names: a file as given, a folder's images, a glob's matches
    (its folders searched); a UserError when it names none."""
    if os.path.isfile(argument):
        return [argument]
    kinds = f"images ({' '.join(sorted(IMAGE_EXTENSIONS))}, any letter case)"
    if os.path.isdir(argument):
        found = images_in(argument)
        if not found:
            raise UserError(f"the folder {argument!r} holds no {kinds}.")
        return found
    if not any(character in argument for character in GLOB_CHARACTERS):
        raise UserError(f"{argument!r} is neither a file nor a folder.")
    found = []
    for match in glob_matches(argument):
        if os.path.isdir(match):
            found += images_in(match)
        elif is_image_name(os.path.basename(match)):
            found.append(match)
    if not found:
        raise UserError(f"the pattern {argument!r} matches no {kinds}.")
    return found


def find_images(arguments):
    """The image files that ``arguments`` name, each once (by its real path, however many links lead
    to it), in the order first named.

    A folder is searched recursively for the extensions a split accepts, in any letter case.
    """
    paths, seen = [], set()
    for argument in arguments:
        for path in images_of(argument):
            if os.path.realpath(path) not in seen:
                seen.add(os.path.realpath(path))
                paths.append(path)
    return paths


def read_path_list(path):
    """The lines of a text file of paths (files, folders or globs), blank lines left out."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError as error:
        raise UserError(f"cannot read the list of paths {path!r} ({error.strerror or error}).") from None
    except UnicodeDecodeError:
        lines = None
    if lines is None or any("\0" in line for line in lines):
        raise UserError(f"the list of paths {path!r} is not a text file (UTF-8, one path a line); "
                        "name images directly or give a text file.")
    return lines


class FileLoader:
    """Batches of image files as a model takes them: ``(images, indices)``.

    ``images`` are normalised float32 NCHW on ``device`` in channels-last memory; ``indices`` say
    which of ``paths`` they are. Files are decoded and transformed on a pool of threads, a few
    batches ahead of the model. A file that cannot be decoded is left out of its batch and listed in
    ``skipped`` as (path, reason).
    """

    def __init__(self, paths, transform, batch_size, device, threads=0):
        self.paths, self.transform, self.batch_size, self.device = list(paths), transform, batch_size, device
        self.threads = decoding_threads(threads)
        self.skipped = []

    def __len__(self):
        return math.ceil(len(self.paths) / self.batch_size)

    def decode(self, index):
        """The transformed image of ``paths[index]``, or the exception that says why it cannot be read."""
        try:
            image = open_rgb(self.paths[index])
        except Exception as error:  # PIL raises many kinds for a bad file; each one means "unreadable"
            return error
        return self.transform(image)

    def decoded(self):
        """Every file's ``decode`` result, in order, from threads that run a bounded way ahead."""
        with ThreadPoolExecutor(self.threads) as pool:
            pending = deque()
            for index in range(len(self.paths)):
                pending.append(pool.submit(self.decode, index))
                if len(pending) > BATCHES_AHEAD * self.batch_size:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def __iter__(self):
        self.skipped = []
        results = self.decoded()
        for start in range(0, len(self.paths), self.batch_size):
            images, indices = [], []
            for index in range(start, min(start + self.batch_size, len(self.paths))):
                result = next(results)
                if isinstance(result, Exception):
                    self.skipped.append((self.paths[index], f"{type(result).__name__}: {result}"))
                else:
                    images.append(result)
                    indices.append(index)
            if images:
                batch = torch.stack(images).to(self.device, non_blocking=True)
                yield batch.contiguous(memory_format=torch.channels_last), torch.tensor(indices)


def scores_table(paths, scores, class_names):
    """One row per image: path, predicted class, its score, one softmax score per class."""
    scores = scores.float()
    top_scores, top_classes = scores.max(dim=1)
    table = pd.DataFrame(scores.numpy(), columns=list(class_names))
    table.insert(0, "path", list(paths))
    table.insert(1, "predicted", [class_names[c] for c in top_classes.tolist()])
    table.insert(2, "score", top_scores.numpy())
    return table


def topk_lines(table, class_names, k):
    """One line per image: its path and its ``k`` most likely classes with their scores, most likely first."""
    scores = torch.tensor(table[list(class_names)].to_numpy())
    top_scores, top_classes = scores.topk(k, dim=1)
    return [f"{path}  " + "  ".join(f"{class_names[c]} {s:.4f}" for c, s in zip(classes, values))
            for path, classes, values in zip(table["path"], top_classes.tolist(), top_scores.tolist())]
