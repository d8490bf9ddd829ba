"""Device, precision, distributed set-up and the evaluation loop shared by every script.

Device and precision are decided once (``runtime``): CUDA, then Apple MPS, then the CPU;
bfloat16 autocast where the hardware does it fast (CUDA; CPUs with AMX or AVX-512 BF16).
``evaluate`` is pure: eval mode, inference mode, no files written, metrics over the whole split
(gathered from every rank of a ``torchrun`` job, no padded sample counted).
"""
import ctypes
import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.optim.swa_utils import update_bn

from cli import UserError
from metrics import classification_metrics
from models import fold_batch_norms, relu_after_pool, use_matmul_convs

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters


def cpu_has_fast_bf16():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def pick_device(name):
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device takes auto, cpu, cuda, cuda:N or mps, not {name!r}.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device=cuda was asked for but no CUDA GPU is available; use --device=auto.")
    return device


def uses_bf16(device, precision):
    if precision not in ("auto", "bf16", "fp32"):
        raise UserError(f"--precision takes auto, bf16 or fp32, not {precision!r}.")
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_fast_bf16()


@dataclass
class Runtime:
    device: torch.device
    bf16: bool
    rank: int = 0
    world: int = 1

    @property
    def is_main(self):
        return self.rank == 0

    def autocast(self):
        if not self.bf16:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)


def keep_freed_memory():
    """Let glibc keep freed blocks for reuse instead of returning them to the system.

    Each training step frees and allocates the same large activations; by default glibc serves
    each from a fresh ``mmap`` whose pages fault in again, which costs about 8% of a CPU step.
    Called once the image caches are built (their decoding would otherwise leave its freed memory
    in the process). Without glibc (macOS, musl) this does nothing.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_MAX, 0)
        libc.mallopt(M_TRIM_THRESHOLD, 2**30)
    except (OSError, AttributeError):
        pass


def runtime(device_name="auto", precision="auto"):
    """Pick the device and precision; join the process group when started by ``torchrun``."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = pick_device(device_name)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Runtime(device, uses_bf16(device, precision), rank, world)


def prepare_model(model, rt, keep_modules=False):
    """The model on the run's device in channels-last memory, with the CPU's bf16 fast convolutions
    and, unless ``keep_modules`` (each module's output as built, for hooks), the ReLU after the stem's max-pool."""
    model = model.to(rt.device, memory_format=torch.channels_last)
    if not keep_modules:
        relu_after_pool(model)
    return use_matmul_convs(model) if rt.device.type == "cpu" and rt.bf16 else model


def gather_split(local, world, total):
    """Reassemble a split's rows from every rank (rank r holds rows r, r + world, ...).

    Ranks hold at most one row fewer than others; the padding added to gather equal sizes is
    dropped again, so each row is counted exactly once.
    """
    if world == 1:
        return local
    longest = (total + world - 1) // world
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype)
    padded[: local.shape[0]] = local
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    interleaved = torch.stack(parts, dim=1).reshape(longest * world, *local.shape[1:])
    return interleaved[:total]


@torch.inference_mode()
def predict(model, loader, rt, tta_flip=False):
    """Logits (float32, on the CPU) and targets of one rank's share of a split, in order.

    The model runs with its BatchNorms folded into the convolutions (a copy; ``model`` is untouched).
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
