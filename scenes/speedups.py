"""The CPU speed-ups of a training and evaluation step, in one place, applied by ``apply``.

Each keeps the model's function, its gradients, its state dict and torchvision's module names,
so hooks by name see the model as trained. What each saves is measured by ``bench.py
--ablate=true`` (see RESULTS.md).
"""
import ctypes

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # glibc's mallopt parameters


class PoolFirstResNet(torchvision.models.ResNet):
    """torchvision's ResNet with the stem's ReLU after its max-pool: the same modules, names and
    state dict, and the same function and gradients (ReLU and max commute), with the ReLU on a
    quarter of the pixels. A hook on ``relu`` sees its output at the pooled size."""

    def _forward_impl(self, x):
        x = self.relu(self.maxpool(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def relu_after_pool(model):
    """Move a torchvision ResNet's stem ReLU after its max-pool, in place (other models stay)."""
    if type(model) is torchvision.models.ResNet:
        model.__class__ = PoolFirstResNet
    return model


# ---------------------------------------------------------------------------------------------
# ResNet's last stage on the CPU: 512 channels on maps of at most 7x7, where oneDNN's bf16
# convolution runs far below the matmul peak and the same convolution as one im2col matmul does
# not (RESULTS.md).
MATMUL_MAX_MAP = 49  # output pixels per map up to which a wide 3x3 convolution uses the matmul form
MATMUL_MIN_CHANNELS = 512


def tap(offset, stride, count):
    """The rows (or columns) of a padded map that kernel position ``offset`` meets, as a slice."""
    return slice(offset, offset + stride * (count - 1) + 1, stride)


def im2col(x, stride):
    """The 3x3, padding-1 patches of NCHW ``x`` as rows: ``(n*ho*wo, 9*c)``, and ``ho, wo``."""
    n, c, h, w = x.shape
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)
    patches = [padded[:, tap(i, stride, ho), tap(j, stride, wo)] for i in range(3) for j in range(3)]
    return torch.stack(patches, dim=3).reshape(n * ho * wo, 9 * c), ho, wo


class MatmulConv3x3(torch.autograd.Function):
    """``conv2d(x, weight, stride=stride, padding=1)`` computed as matmuls in ``x``'s dtype.

    The weight is used as a ``(out, 9*in)`` matrix with columns in (row, column, channel) order:
    for a channels-last weight that is a view, and the weight gradient comes back in the same
    layout (channels-last, in the weight's dtype), so neither is copied to transpose it. The
    output is channels-last.
    """

    @staticmethod
    def forward(ctx, x, weight, stride):
        out_channels = weight.shape[0]
        columns, ho, wo = im2col(x, stride)
        matrix = weight.to(x.dtype).permute(0, 2, 3, 1).reshape(out_channels, -1)  # k x (i, j, c)
        ctx.save_for_backward(columns, matrix)
        ctx.shapes = x.shape, stride, weight.dtype
        return (columns @ matrix.t()).view(x.shape[0], ho, wo, out_channels).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad):
        columns, matrix = ctx.saved_tensors
        (n, c, h, w), stride, weight_dtype = ctx.shapes
        k = matrix.shape[0]
        grad = grad.to(columns.dtype)
        rows = grad.permute(0, 2, 3, 1).reshape(-1, k)
        grad_weight = (rows.t() @ columns).view(k, 3, 3, c).permute(0, 3, 1, 2).to(weight_dtype)
        if stride == 1:  # the input gradient is the convolution of the output gradient with the flipped kernel
            flipped = matrix.view(k, 3, 3, c).flip(1, 2).permute(1, 2, 0, 3).reshape(9 * k, c)
            grad_columns, _, _ = im2col(grad, 1)
            return (grad_columns @ flipped).view(n, h, w, c).permute(0, 3, 1, 2), grad_weight, None
        patches = (rows @ matrix).view(n, *grad.shape[2:], 3, 3, c)
        ho, wo = grad.shape[2:]
        grad_padded = patches.new_zeros(n, h + 2, w + 2, c)
        for i in range(3):  # scatter each patch position back (col2im; F.fold was slower, RESULTS.md)
            for j in range(3):
                grad_padded[:, tap(i, stride, ho), tap(j, stride, wo)] += patches[:, :, :, i, j]
        return grad_padded[:, 1:h + 1, 1:w + 1].permute(0, 3, 1, 2), grad_weight, None


class WideConv2d(nn.Conv2d):
    """A 3x3 ``nn.Conv2d`` (same parameters and state dict) that takes the matmul form for small
    maps in bf16 on the CPU, and ``nn.Conv2d``'s own path otherwise."""

    def forward(self, x):
        bf16 = x.dtype == torch.bfloat16 or torch.is_autocast_enabled("cpu")
        out_pixels = ((x.shape[2] - 1) // self.stride[0] + 1) * ((x.shape[3] - 1) // self.stride[1] + 1)
        if x.device.type != "cpu" or not bf16 or out_pixels > MATMUL_MAX_MAP:
            return super().forward(x)
        out = MatmulConv3x3.apply(x.to(torch.bfloat16), self.weight, self.stride[0])
        return out if self.bias is None else out + self.bias.to(out.dtype).view(1, -1, 1, 1)


def use_matmul_convs(model):
    """Switch the model's wide 3x3 convolutions (ResNet's last stage) to ``WideConv2d``, in place."""
    for module in model.modules():
        if (type(module) is nn.Conv2d and module.kernel_size == (3, 3) and module.padding == (1, 1)
                and module.stride[0] == module.stride[1] and module.dilation == (1, 1) and module.groups == 1
                and module.out_channels >= MATMUL_MIN_CHANNELS):
            module.__class__ = WideConv2d
    return model




def keep_freed_memory(keep=True):
    """Let glibc keep freed blocks for reuse instead of returning them to the system.

    Each training step frees and allocates the same large activations; by default glibc serves
    those over its mmap threshold from fresh ``mmap``s whose pages fault in again. ``keep=False``
    sets glibc's own steady-state thresholds instead (for ``bench.py``'s side-by-side measure).
    Without glibc (macOS, musl) this does nothing.
    """
    values = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**30)) if keep else \
        ((M_MMAP_MAX, 65536), (M_MMAP_THRESHOLD, 32 * 2**20), (M_TRIM_THRESHOLD, 64 * 2**20))
    try:
        libc = ctypes.CDLL("libc.so.6")
        for parameter, value in values:
            libc.mallopt(parameter, value)
    except (OSError, AttributeError):
        pass


SPEEDUPS = ("relu_after_pool", "matmul_convs", "keep_freed_memory")


def apply(model, rt, skip=()):
    """The model with its speed-ups, except those named in ``skip``: the stem's ReLU after its
    max-pool everywhere, the matmul convolutions on a CPU in bf16 (the only place they differ)."""
    if "relu_after_pool" not in skip:
        model = relu_after_pool(model)
    if "matmul_convs" not in skip and rt.device.type == "cpu" and rt.bf16:
        model = use_matmul_convs(model)
    return model
