"""Device, precision and distributed set-up, decided once per script (``runtime``).

CUDA, then Apple MPS, then the CPU; bfloat16 autocast where the hardware does it fast (CUDA;
CPUs with AMX or AVX-512 BF16); under ``torchrun``, the process group.
"""
import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist

from scenes import speedups
from scenes.cli import UserError


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


def runtime(device_name="auto", precision="auto"):
    """Pick the device and precision; join the process group when started by ``torchrun``."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = pick_device(device_name)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Runtime(device, uses_bf16(device, precision), rank, world)


def prepare_model(model, rt):
    """The model on the run's device in channels-last memory, with the speed-ups of that device."""
    model = model.to(rt.device, memory_format=torch.channels_last)
    return speedups.apply(model, rt)
