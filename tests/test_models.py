"""The model rewrites that run faster compute the same: the stem's ReLU after its max-pool (and the
steps get it only where it was measured to pay), and BatchNorms folded for evaluation."""
import copy

import pytest
import torch
from torch import nn

from scenes.models import build_model, fold_batch_norms
from scenes import speedups
from scenes.runtime import Runtime
from scenes.speedups import PoolFirstResNet, relu_after_pool


def test_folded_batch_norms_compute_the_same_function():
    torch.manual_seed(0)
    model = build_model("resnet18", 6)
    model.train()
    with torch.no_grad():  # BatchNorm statistics and affine parameters away from their initial values
        for _ in range(3):
            model(torch.randn(8, 3, 48, 48) * 2 + 0.5)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    model.eval()
    folded = fold_batch_norms(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 20  # the original is untouched
    assert folded.layer4[1].conv2.bias is not None
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected, got = model(x).float(), folded(x).float()
    assert (expected - got).abs().max() < 0.05 * expected.abs().max()


def test_relu_after_the_stem_pool_keeps_outputs_gradients_and_state_dict():
    torch.manual_seed(0)
    model = build_model("resnet18", 6).double()
    moved = relu_after_pool(copy.deepcopy(model))
    assert list(moved.state_dict()) == list(model.state_dict())
    x = torch.randn(2, 3, 40, 40, dtype=torch.double)
    outputs = [m(x) for m in (model, moved)]
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=0)
    for out in outputs:
        out.square().sum().backward()
    for (name, a), b in zip(model.named_parameters(), moved.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("device, bf16, moved", [("cpu", False, True), ("cpu", True, False), ("cuda", False, False)])
def test_the_steps_get_the_relu_move_only_where_it_pays(device, bf16, moved):
    model = speedups.apply(build_model("resnet18", 6), Runtime(torch.device(device), bf16=bf16))
    assert (type(model) is PoolFirstResNet) == moved  # measured: float32 on a CPU only (RESULTS.md)
