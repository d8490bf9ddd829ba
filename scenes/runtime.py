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


def pick_device(name, world=1, local_rank=0):
    """The device ``--device`` names (auto: CUDA, then Apple MPS, then the CPU), refused in one
    sentence where it is not available. Under torchrun (``world`` > 1) every CUDA choice is this
    process's ``LOCAL_RANK`` GPU, so no two processes of a machine share one."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device takes auto, cpu, cuda, cuda:N or mps, not {name!r}.") from None
    if device.type == "cuda":
        return cuda_device(name, device.index, world, local_rank)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device=mps was asked for but Apple's MPS is not available here; use --device=auto.")
    if device.type not in ("cpu", "mps"):
        raise UserError(f"--device={name}: this project runs on auto, cpu, cuda, cuda:N or mps, not {device.type}.")
    return device


def cuda_device(name, index, world, local_rank):
    """The indexed CUDA device of ``--device=cuda``/``cuda:N`` (``LOCAL_RANK``'s under torchrun)."""
    if not torch.cuda.is_available():
        raise UserError(f"--device={name} was asked for but no CUDA GPU is available; use --device=auto.")
    if world > 1 and index is not None:
        raise UserError(f"--device={name} names one GPU, but under torchrun each process takes the GPU of its "
                        "LOCAL_RANK; pass --device=cuda (choose the GPUs with CUDA_VISIBLE_DEVICES).")
    index = local_rank if world > 1 else index or 0
    count = torch.cuda.device_count()
    if index >= count:
        where = f"LOCAL_RANK {index}" if world > 1 else f"--device={name}"
        raise UserError(f"{where} asks for CUDA GPU {index}, but this machine has {count} "
                        f"(cuda:0 to cuda:{count - 1}); start at most {count} processes per machine.")
    return torch.device("cuda", index)


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
    device = pick_device(device_name, world, int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        torch.cuda.set_device(device)  # this process's default GPU (NCCL's and the allocator's)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Runtime(device, uses_bf16(device, precision), rank, world)


def prepare_model(model, rt):
    """The model on the run's device in channels-last memory, as torchvision built it (what feature
    maps, Grad-CAM and the ONNX export look at)."""
    return model.to(rt.device, memory_format=torch.channels_last)


def prepare_for_steps(model, rt):
    """``prepare_model`` with the speed-ups of the device, for training and evaluation steps only."""
    return speedups.apply(prepare_model(model, rt), rt)
