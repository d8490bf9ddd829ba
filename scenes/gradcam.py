"""Grad-CAM: where a model looked for a class, by captum's ``LayerGradCam`` on its last stage.

The heat map of class c is ReLU(sum over channels k of a_k * A_k), A_k the last stage's output and
a_k the spatial mean of the gradient of class c's logit by A_k, brought up to the image's size.
It needs the model as trained: float32, gradients on, BatchNorms not folded, torchvision's module
names (``layer4``); ``gradcam_model`` gives it so.
"""
import torch
from captum.attr import LayerAttribution, LayerGradCam

from scenes.checkpoints import model_from_checkpoint
from scenes.runtime import Runtime, prepare_model

LAYER = "layer4"  # the last convolutional stage of torchvision's ResNets


def gradcam_model(checkpoint, path, device):
    """The model of a checkpoint in eval mode and float32 on ``device``, with its module names."""
    return prepare_model(model_from_checkpoint(checkpoint, path), Runtime(device, bf16=False))


def grad_cam(model, images, targets, layer=LAYER):
    """Grad-CAM heat maps (N, H, W) of class ``targets[i]`` for each image at the images' size, on
    the CPU, each scaled to a peak of 1 (all zero where nothing in the image speaks for the class)."""
    module = dict(model.named_modules())[layer]
    with torch.inference_mode(False), torch.enable_grad():
        images = images.clone()  # a tensor made under inference mode cannot take part in autograd
        maps = LayerGradCam(model, module).attribute(images, target=targets.tolist(), relu_attributions=True)
    maps = LayerAttribution.interpolate(maps.detach().float(), tuple(images.shape[-2:]),
                                        interpolate_mode="bilinear")[:, 0]
    return (maps / maps.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)).cpu()
