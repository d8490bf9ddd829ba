"""Building ResNet variants: from scratch, or torchvision's ImageNet weights with a new last layer.

Also ``fold_batch_norms``, the evaluation copy of a model with every BatchNorm folded into its
convolution.
"""
import copy
import os

import torch
import torchvision
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from scenes.cli import UserError


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


def check_arch(arch):
    if arch not in resnet_names():
        raise UserError(f"unknown architecture {arch!r}; choose one of {', '.join(resnet_names())}.")


def build_model(arch, num_classes, pretrained=False, weights_file="", zero_init_residual=False):
    """A torchvision classifier with ``num_classes`` outputs.

    ``pretrained`` loads the ImageNet weights first and then replaces the final layer, as the
    report's fine-tuned variant does. ``zero_init_residual`` starts each residual block's last
    BatchNorm at zero (from scratch only), so every block begins as the identity.
    """
    check_arch(arch)
    if not pretrained:
        return torchvision.models.get_model(arch, num_classes=num_classes, zero_init_residual=zero_init_residual)
    model = torchvision.models.get_model(arch)
    load_weights(model, imagenet_weights(arch, weights_file), weights_file or f"torchvision's {arch} weights", arch)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
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
