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
import math
import os
import pickle
import socket

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
    """A lock file in a run folder so two training processes never write the same run.

    A lock left by a process that is gone (killed, crashed) is taken over, never stuck forever.
    """

    def __init__(self, run_dir):
        self.path = os.path.join(run_dir, ".lock")
        self.owner = f"{socket.gethostname()}:{os.getpid()}"

    def holder_alive(self):
        try:
            with open(self.path, encoding="utf-8") as f:
                host, _, pid = f.read().strip().rpartition(":")
            if not host:
                return False  # empty or garbled: locks are written whole (below), so no live process left it
            if host != socket.gethostname():
                return True  # another machine's process: cannot check, so respect it
            os.kill(int(pid), 0)
            return True
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return False
        except PermissionError:
            return True

    def __enter__(self):
        # The owner is written to a file of our own first and then hard-linked as the lock (which
        # fails if the lock exists), so no process ever sees a lock without its owner in it.
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(self.owner)
        try:
            for _ in range(2):
                try:
                    os.link(tmp, self.path)
                    return self
                except FileExistsError:
                    if self.holder_alive():
                        with open(self.path, encoding="utf-8") as f:
                            holder = f.read().strip()
                        raise UserError(f"another training process ({holder}) is using {os.path.dirname(self.path)}; "
                                        f"wait for it to finish or choose another --run (remove {self.path} only if "
                                        "no training is running).") from None
                    os.remove(self.path)  # stale: its process is gone
            raise UserError(f"could not take the lock {self.path}; remove it if no training is running.")
        finally:
            os.remove(tmp)

    def __exit__(self, *exc):
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
