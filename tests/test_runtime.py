"""The device choice of scenes/runtime.py on a machine with GPUs, simulated: torch.cuda patched
(is_available, device_count, set_device), torchrun's environment set, no process group started."""
import pytest
import torch

import train
from conftest import train_args
from scenes import runtime as runtime_module
from scenes.cli import UserError
from scenes.runtime import pick_device, runtime


@pytest.fixture
def gpus(monkeypatch):
    """A machine with four CUDA GPUs and no MPS; returns the devices set_device was called with."""
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    return chosen


@pytest.fixture
def torchrun(monkeypatch):
    """This process as rank 3 of 4 of torchrun, on GPU 3 of its machine; the process group recorded."""
    for name, value in {"RANK": "3", "LOCAL_RANK": "3", "WORLD_SIZE": "4"}.items():
        monkeypatch.setenv(name, value)
    groups = []
    monkeypatch.setattr(runtime_module.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(runtime_module.dist, "init_process_group", groups.append)
    return groups


@pytest.mark.parametrize("name", ["auto", "cuda"])
def test_under_torchrun_each_process_takes_the_gpu_of_its_local_rank(gpus, torchrun, name):
    rt = runtime(name, "auto")
    assert rt.device == torch.device("cuda", 3) and (rt.rank, rt.world) == (3, 4) and rt.bf16
    assert gpus == [torch.device("cuda", 3)] and torchrun == ["nccl"]  # an indexed device, as set_device needs


def test_under_torchrun_a_named_gpu_is_refused(gpus, torchrun):
    with pytest.raises(UserError, match=r"--device=cuda:0 names one GPU, but under torchrun each process takes "
                                        r"the GPU of its LOCAL_RANK; pass --device=cuda"):
        runtime("cuda:0", "auto")
    assert gpus == [] and torchrun == []


def test_a_local_rank_without_a_gpu_is_refused(gpus, torchrun, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "4")
    with pytest.raises(UserError, match=r"LOCAL_RANK 4 asks for CUDA GPU 4, but this machine has 4 "
                                        r"\(cuda:0 to cuda:3\); start at most 4 processes per machine"):
        runtime("auto", "auto")


def test_one_process_takes_the_gpu_it_names_or_the_first(gpus):
    assert runtime("cuda", "fp32").device == torch.device("cuda", 0)
    assert runtime("cuda:2", "fp32").device == torch.device("cuda", 2)
    assert gpus == [torch.device("cuda", 0), torch.device("cuda", 2)]
    with pytest.raises(UserError, match=r"--device=cuda:7 asks for CUDA GPU 7, but this machine has 4"):
        pick_device("cuda:7")


def test_without_a_gpu_cuda_is_refused_and_auto_takes_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(UserError, match="--device=cuda was asked for but no CUDA GPU is available"):
        pick_device("cuda", world=2, local_rank=1)


@pytest.mark.parametrize("name, message", [
    ("mps", "--device=mps was asked for but Apple's MPS is not available here"),
    ("xla", "--device=xla: this project runs on auto, cpu, cuda, cuda:N or mps, not xla"),
    ("meta", "--device=meta: this project runs on auto, cpu, cuda, cuda:N or mps, not meta"),
    ("tpu", "--device takes auto, cpu, cuda, cuda:N or mps, not 'tpu'"),
])
def test_devices_this_project_cannot_run_on_are_refused_before_any_folder_is_made(name, message, splits,
                                                                                  tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    args = [a for a in train_args(splits[1], tmp_path) if not a.startswith("--device")]
    with pytest.raises(UserError, match=message):
        train.main([*args, f"--device={name}"])
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "cache").exists()
