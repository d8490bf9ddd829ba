"""Building ResNet variants: from scratch, or torchvision's ImageNet weights with a new last layer.

Also two rewrites that keep the function and the state dict and run faster: the stem's ReLU
after its max-pool (``relu_after_pool``) and the CPU's 3x3 convolution for small, wide maps
(``use_matmul_convs``).
"""
import copy
import os

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from cli import UserError


def imagenet_weights(arch, weights_file=""):
    """The ImageNet state dict of ``arch``: from ``weights_file`` if named, else torchvision's cache.

    torchvision downloads into the torch cache on first use; offline, the file can be placed where
    that cache expects it, or named with ``--weights_file``.
    """
    if weights_file:
        if not os.path.isfile(weights_file):
            raise UserError(f"weights file {weights_file!r} does not exist.")
        try:
            return torch.load(weights_file, map_location="cpu", weights_only=True)
        except Exception as error:
            raise UserError(f"{weights_file} is not a readable state dict ({type(error).__name__}).") from None
    try:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
    except ValueError:
        raise UserError(f"torchvision has no ImageNet weights for architecture {arch!r}.") from None
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
    try:
        return weights.get_state_dict(progress=False, check_hash=False)
    except Exception as error:
        raise UserError(f"could not get the ImageNet weights of {arch} ({type(error).__name__}: {error}); "
                        f"download {weights.url} and place it at {cached}, or pass --weights_file=PATH.") from None


def load_weights(model, state_dict, path, arch):
    """``load_state_dict`` with a clear error when the weights are of another architecture."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        first = str(error).split("\n\t")[1].strip() if "\n\t" in str(error) else str(error)[:200]
        raise UserError(f"the weights in {path} do not fit a {arch} with {model.fc.out_features} classes "
                        f"({first}); it was saved from another architecture or class list.") from None


def resnet_names():
    """The ResNet family of torchvision (resnet18/34/50/101/152, ResNeXt, wide ResNets)."""
    return [name for name in torchvision.models.list_models(module=torchvision.models) if "resne" in name]


def build_model(arch, num_classes, pretrained=False, weights_file="", zero_init_residual=False):
    """A torchvision classifier with ``num_classes`` outputs.

    ``pretrained`` loads the ImageNet weights first and then replaces the final layer, as the
    report's fine-tuned variant does. ``zero_init_residual`` starts each residual block's last
    BatchNorm at zero (from scratch only), so every block begins as the identity.
    """
    if arch not in resnet_names():
        raise UserError(f"unknown architecture {arch!r}; choose one of {', '.join(resnet_names())}.")
    if not pretrained:
        return torchvision.models.get_model(arch, num_classes=num_classes, zero_init_residual=zero_init_residual)
    model = torchvision.models.get_model(arch)
    load_weights(model, imagenet_weights(arch, weights_file), weights_file or f"torchvision's {arch} weights", arch)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def relu_after_pool(model):
    """Move the stem's ReLU after its max-pool, in place: the same function and gradients.

    ReLU and max commute (ReLU never reorders values), so ``relu(maxpool(x))`` equals
    ``maxpool(relu(x))``, and their gradients agree too. The ReLU then runs on a quarter of the
    pixels; on the CPU the stem's 64 maps of 75x75 (at 150 px) make it one of the costliest
    passes of a step. ``model.relu`` becomes an identity, so code that hooks modules by name
    (feature maps) must use the model as built.
    """
    model.maxpool = nn.Sequential(model.maxpool, model.relu)
    model.relu = nn.Identity()
    return model


# ---------------------------------------------------------------------------------------------
# ResNet's last stage on the CPU: 512 channels on maps of at most 7x7. oneDNN's bf16 convolution
# is slow there (its weight gradient runs at about a fifth of the matmul peak on 5x5 maps), while
# the same convolution as one im2col matmul runs near the peak: forward and backward together
# take about half the time (bench.py measures the whole step).
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
        for i in range(3):  # scatter each patch position back (col2im; F.fold measured 1.3-1.6x slower here)
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


def fold_batch_norms(model):
    """An eval-mode copy of a ResNet with each BatchNorm folded into the convolution before it.

    torchvision's ResNets define every BatchNorm right after the convolution it normalises (the
    stem, each block, each downsample), and that is the pairing used. The copy computes the same
    function with one pass over the activations fewer per layer, for evaluation only.
    """
    folded = copy.deepcopy(model).eval()
    for parent in list(folded.modules()):
        children = list(parent.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(parent, bn_name, nn.Identity())
    return folded
