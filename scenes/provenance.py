"""Which data a checkpoint may be scored on: a number the project prints is about data the model
was not trained on, or it says why not.

A checkpoint (format 2) keeps its split's digests (paths, labels and content of every image) and
the content ids of its training and validation images. It is scored on a split only when the
split's digests are its own, and on any other CSV or folder only when none of its images (by
content) was among them. A run of another split is skipped, with a sentence naming it and why.
"""
import numpy as np

from scenes.checkpoints import content_ids, verifiable


def unverified_note(path):
    return (f"note: {path} was saved by an older version that did not record its images' content; what it is "
            "scored on cannot be checked against what it was trained on.")


def split_problem(checkpoint, split, splits_dir):
    """Why ``checkpoint`` may not be scored on ``split`` (a ``scenes.splits.Split`` of ``splits_dir``),
    or None; an unverifiable checkpoint is left to the caller's note."""
    if not verifiable(checkpoint):
        return None
    if checkpoint["config"].get("split_sha256") != split.digests:
        return (f"it was trained on another split than the one in {splits_dir!r} (other images, or other pictures "
                "under the same names), so its scores there would be about images it may have trained on")
    return None


def overlap_problem(checkpoint, contents):
    """Why ``checkpoint`` may not be scored on images of ``contents`` (``{path: sha256}``), or None:
    any of them among its training or validation images."""
    if not verifiable(checkpoint):
        return None
    ids = content_ids(contents.values()).numpy()
    common = np.isin(ids, checkpoint["trained_on"].numpy())
    if not common.any():
        return None
    seen = set(ids[common].tolist())
    named = [path for path, digest in contents.items() if content_ids([digest]).item() in seen]
    return (f"{len(named)} of these images were among its training or validation images (e.g. {named[0]}), so "
            "its scores on them would not be out of sample")
