"""Checkpoint I/O shared by every script: atomic saves, safe loads, models rebuilt from the file.

A checkpoint is a dict of tensors and plain values only (so ``torch.load(weights_only=True)``
reads it and never unpickles code): ``model`` (the unwrapped state dict), ``optimizer``,
``scheduler``, ``epoch``, ``best_metric`` (with ``best_loss`` and ``best_epoch``), ``history``
(one dict of metrics per epoch), ``config`` (every setting of the run, with ``arch``,
``class_names``, ``image_size``, ``mean``, ``std``, the split CSVs, the split's ``split_sha256``
over paths, labels and content, and the seed), ``runtime`` (the device, precision and process
count it was saved under), ``format`` (``FORMAT``) and ``trained_on`` (``content_ids`` of its
training and validation images). A checkpoint without ``format`` was saved before runs knew their
data by content: it is never resumed, and evaluated only with a note.
"""
import contextlib
import fcntl
import math
import os
import pickle
import socket
import sys

import torch

from scenes.cli import UserError
from scenes.files import write_atomically
from scenes.models import build_model, load_weights

FORMAT = 2  # 2: the split's digests cover the images' content, and "trained_on" lists them
REQUIRED_KEYS = ("model", "config", "epoch")
REQUIRED_CONFIG = ("arch", "class_names", "image_size", "mean", "std")
# What each required config value must be, said as the refusal says it.
CONFIG_TYPES = {
    "arch": ("a name", lambda v: isinstance(v, str) and v != ""),
    "class_names": ("a list of class names", lambda v: isinstance(v, list) and len(v) > 0
                    and all(isinstance(n, str) for n in v)),
    "image_size": ("a whole number of pixels", lambda v: is_number(v, int) and v >= 1),
    "mean": ("three numbers", lambda v: isinstance(v, list) and len(v) == 3 and all(is_number(x) for x in v)),
    "std": ("three positive numbers", lambda v: isinstance(v, list) and len(v) == 3
            and all(is_number(x) and x > 0 for x in v)),
}


def save_checkpoint(state, path):
    """Save a checkpoint dict to ``path`` atomically (a kill leaves the previous file or the new one)."""
    write_atomically(path, lambda f: torch.save(state, f))


def load_checkpoint(path):
    """Load a checkpoint of this project, refusing anything else with a sentence that says why."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path!r} does not exist.")
    hint = ("for a run's last.pth, resume from its best.pth (copy it over last.pth) or start over with "
            "--restart=true")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "GLOBAL" in str(error):  # the pickle names a class or function: it would run code if unpickled
            raise UserError(f"{path} holds objects other than tensors and plain values and was refused unread "
                            f"(checkpoints are never unpickled as code); {hint}.") from None
        raise UserError(f"{path} is not a PyTorch file (another kind of file or damaged); {hint}.") from None
    except Exception as error:
        raise UserError(f"{path} is truncated or not a checkpoint ({type(error).__name__}); {hint}.") from None
    if not isinstance(checkpoint, dict) or any(k not in checkpoint for k in REQUIRED_KEYS) \
            or not isinstance(checkpoint["config"], dict) \
            or any(k not in checkpoint["config"] for k in REQUIRED_CONFIG):
        raise UserError(f"{path} is a PyTorch file but not a checkpoint of this project (it needs "
                        f"{', '.join(REQUIRED_KEYS)} and a config with {', '.join(REQUIRED_CONFIG)}); {hint}.")
    check_contents(checkpoint, path, hint)
    return checkpoint


def is_number(value, kind=(int, float)):
    return isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)


def check_contents(checkpoint, path, hint):
    """Refuse a checkpoint whose config values have the wrong kind or whose weights are not all
    finite tensors, so no script meets them as a traceback or as NaN scores."""
    for key, (kind, valid) in CONFIG_TYPES.items():
        if not valid(checkpoint["config"][key]):
            raise UserError(f"{path} is damaged: its config's {key} is {checkpoint['config'][key]!r}, not "
                            f"{kind}; {hint}.")
    weights = checkpoint["model"]
    if not isinstance(weights, dict) or not all(isinstance(t, torch.Tensor) for t in weights.values()):
        raise UserError(f"{path} is damaged: its model is not a dict of tensors; {hint}.")
    broken = [name for name, t in weights.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if broken:
        raise UserError(f"{path} holds weights that are not finite (NaN or infinite) in {', '.join(broken[:3])}"
                        f"{' ...' if len(broken) > 3 else ''}; it cannot be used: {hint}.")


def slim(checkpoint):
    """What evaluating a checkpoint needs (its model, config, epoch, best metric, format and the
    images it was trained on), without the optimizer state, to keep in memory."""
    keys = ("model", "config", "epoch", "best_metric", "format", "trained_on")
    return {key: checkpoint[key] for key in keys if key in checkpoint}


def content_ids(digests):
    """Sorted 64-bit ids (the first 8 bytes of each sha256 hex digest) of images, as a tensor a
    checkpoint can hold: a run's training and validation images in a few kilobytes."""
    ids = sorted({int.from_bytes(bytes.fromhex(d[:16]), "big", signed=True) for d in digests})
    return torch.tensor(ids, dtype=torch.int64)


def verifiable(checkpoint):
    """Whether a checkpoint records the content of its data (format 2 and later)."""
    return checkpoint.get("format", 1) >= FORMAT and isinstance(checkpoint.get("trained_on"), torch.Tensor)


def model_from_checkpoint(checkpoint, path):
    """Rebuild the model a checkpoint describes and load its weights (in eval mode, on the CPU)."""
    config = checkpoint["config"]
    model = build_model(config["arch"], len(config["class_names"]))
    load_weights(model, checkpoint["model"], path, config["arch"])
    return model.eval()


def check_class_names(checkpoint_classes, data_classes, path, where):
    if list(checkpoint_classes) != list(data_classes):
        raise UserError(f"{path} was trained on classes {', '.join(checkpoint_classes)} but {where} has "
                        f"{', '.join(data_classes)}; evaluate it on data with the same classes.")


class RunLock:
    """A lock on a run folder so two training processes never write the same run.

    The kernel holds it (``flock`` on ``<run>/.lock``) and lets go when its process ends however it
    ends, so a lock left by a killed process is free, also when the next process has its PID (a
    restarted container), and one held by a live process is respected across PID namespaces. The
    file names its holder for the message; removing it at the end never hides the error that ended
    the run.
    """

    def __init__(self, run_dir):
        self.path = os.path.join(run_dir, ".lock")
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.fd = None

    def __enter__(self):
        while self.fd is None:
            try:  # held read-only: the lock makes no writer of the disk (which may turn read-only)
                fd = os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o644)
            except OSError as error:
                raise UserError(f"cannot write the lock {self.path} ({error.strerror}); choose a run folder that "
                                "can be written.") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 256, 0).decode("utf-8", "replace").strip() or "starting"
                os.close(fd)
                raise UserError(f"another training process ({holder}) is using {os.path.dirname(self.path)}; "
                                "wait for it to finish or choose another --run.") from None
            except OSError as error:  # a file system without locks (some network ones): run unguarded
                print(f"warning: {self.path} cannot be locked ({error.strerror}); make sure no other training "
                      "uses this run.", file=sys.stderr)
            if self.same_file(fd):  # else its holder removed it meanwhile: lock the file there now
                with contextlib.suppress(OSError), open(self.path, "w", encoding="utf-8") as f:
                    f.write(self.owner)  # the holder's name, for messages only
                self.fd = fd
            else:
                os.close(fd)
        return self

    def same_file(self, fd):
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    def __exit__(self, *exc):
        with contextlib.suppress(OSError):  # a read-only disk: the file stays, unlocked and free
            os.remove(self.path)
        os.close(self.fd)  # releases the lock
        self.fd = None
