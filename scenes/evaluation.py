"""Predictions and metrics of a whole split, shared by training, evaluation, the report and prediction.

``evaluate`` is pure: eval mode, inference mode, no files written, metrics over the whole split
(gathered from every rank of a ``torchrun`` job, no padded sample counted).
"""
import torch
import torch.distributed as dist
from torch.optim.swa_utils import update_bn

from scenes.metrics import classification_metrics
from scenes.models import fold_batch_norms


def gather_split(local, world, total):
    """Reassemble a split's rows from every rank (rank r holds rows r, r + world, ...).

    Ranks hold at most one row fewer than others; the padding added to gather equal sizes is
    dropped again, so each row is counted exactly once. The rows come back on the CPU.
    """
    if world == 1:
        return local
    longest = (total + world - 1) // world
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=collective_device())
    padded[: local.shape[0]] = local
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    interleaved = torch.stack(parts, dim=1).reshape(longest * world, *local.shape[1:])
    return interleaved[:total].cpu()


def collective_device():
    """Where the process group's tensors must be: NCCL takes this process's GPU only, gloo the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


@torch.inference_mode()
def predict(model, loader, rt, tta_flip=False):
    """Logits (float32, on the CPU) and targets of one rank's share of a split, in order (both empty
    when ``loader`` yields no batch).

    The model runs with its BatchNorms folded into the convolutions (a copy; ``model`` is untouched).
    ``loader`` may be any iterable of ``(images, targets)``; ``targets`` are passed through.
    """
    model = fold_batch_norms(model)
    logits, targets = [], []
    for images, batch_targets in loader:
        with rt.autocast():
            output = model(images)
            if tta_flip:
                output = (output + model(images.flip(3))) / 2
        logits.append(output.float().cpu())
        targets.append(batch_targets.cpu())
    if not logits:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(targets)


def recalibrate_batch_norms(model, loader, count, rt):
    """Re-estimate every BatchNorm's running mean and variance from the first batches of ``loader``
    that hold ``count`` images ("precise BN"): torch's ``update_bn`` (an equal average over those
    batches, in train mode, nothing trained) under the run's autocast.

    Evaluation then normalises with statistics of the loader's images (clean, at the evaluation
    size) instead of the moving average of the last training batches (cropped smaller, mixed).
    """
    def first_batches():
        seen = 0
        for images, _ in loader:
            if seen >= count:
                return
            seen += len(images)
            yield images

    with torch.no_grad(), rt.autocast():
        update_bn(first_batches(), model)


def evaluate(model, loader, rt, class_names, tta_flip=False):
    """Metrics of the whole split, identical on every rank; returns (metrics, logits, targets)."""
    logits, targets = predict(model, loader, rt, tta_flip)
    total = loader.split_size
    logits, targets = gather_split(logits, rt.world, total), gather_split(targets, rt.world, total)
    return classification_metrics(logits, targets, class_names), logits, targets
