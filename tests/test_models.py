"""The model rewrites that run faster compute the same: the CPU's matmul form of wide 3x3 convolutions,
the stem's ReLU after its max-pool, and BatchNorms folded for evaluation."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from scenes.models import build_model, fold_batch_norms
from scenes.speedups import MatmulConv3x3, WideConv2d, relu_after_pool, use_matmul_convs


@pytest.mark.parametrize("stride, size", [(1, 5), (1, 4), (2, 10), (2, 9), (1, 1)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_matmul_convolution_equals_conv2d_with_its_gradients(stride, size, layout):
    torch.manual_seed(0)
    x = torch.randn(3, 5, size, size, dtype=torch.double).contiguous(memory_format=layout).requires_grad_()
    weight = torch.randn(7, 5, 3, 3, dtype=torch.double).contiguous(memory_format=layout).requires_grad_()
    expected = F.conv2d(x, weight, stride=stride, padding=1)
    got = MatmulConv3x3.apply(x, weight, stride)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected)
    assert torch.autograd.gradcheck(lambda a, b: MatmulConv3x3.apply(a, b, stride), (x, weight))
    if layout == torch.channels_last:  # the weight gradient comes in the weight's layout, not copied into it
        strides = []
        weight.register_hook(lambda g: strides.append(g.stride()))
        MatmulConv3x3.apply(x, weight, stride).sum().backward()
        assert strides == [weight.stride()]


def test_resnet_last_stage_switches_and_keeps_its_state_dict():
    model = build_model("resnet18", 6)
    keys = list(model.state_dict())
    use_matmul_convs(model)
    switched = sorted(name for name, m in model.named_modules() if isinstance(m, WideConv2d))
    assert switched == ["layer4.0.conv1", "layer4.0.conv2", "layer4.1.conv1", "layer4.1.conv2"]
    assert list(model.state_dict()) == keys
    assert type(model.layer3[0].conv1) is nn.Conv2d and type(model.layer4[0].downsample[0]) is nn.Conv2d


def test_wide_convolution_in_bf16_autocast_matches_conv2d():
    torch.manual_seed(0)
    conv = nn.Conv2d(512, 512, 3, padding=1, bias=False)
    wide = nn.Conv2d(512, 512, 3, padding=1, bias=False)
    wide.load_state_dict(conv.state_dict())
    use_matmul_convs(wide)
    assert type(wide) is WideConv2d
    x = torch.randn(4, 512, 5, 5).contiguous(memory_format=torch.channels_last)
    outputs, grads = [], []
    for module in (conv, wide):
        inputs = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = module(inputs)
        out.float().square().sum().backward()
        outputs.append(out.float())
        grads.append((inputs.grad, module.weight.grad))
    assert outputs[1].dtype == torch.float32 and grads[1][1].dtype == torch.float32
    scale = outputs[0].abs().max()
    assert (outputs[0] - outputs[1]).abs().max() < 0.02 * scale
    for a, b in zip(grads[0], grads[1]):
        assert (a - b).abs().max() < 0.03 * a.abs().max()


def test_wide_convolution_keeps_conv2d_for_float32_and_large_maps():
    torch.manual_seed(0)
    conv = nn.Conv2d(512, 512, 3, padding=1, bias=False)
    wide = use_matmul_convs(nn.Sequential(nn.Conv2d(512, 512, 3, padding=1, bias=False)))[0]
    wide.load_state_dict(conv.state_dict())
    small, large = torch.randn(2, 512, 5, 5), torch.randn(1, 512, 8, 8)
    assert torch.equal(wide(small), conv(small))  # float32: the same kernel, bit for bit
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(wide(large), conv(large))  # 64 output pixels: above the matmul form's limit


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
    folded = fold_batch_norms(use_matmul_convs(model))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 20  # the original is untouched
    assert isinstance(folded.layer4[1].conv2, WideConv2d) and folded.layer4[1].conv2.bias is not None
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the matmul form with the folded bias
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
