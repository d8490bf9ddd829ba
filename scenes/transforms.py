"""The image transforms of a run, in one place: built from its config (size, mean/std, augmentation).

Training, evaluation, feature maps and prediction all take their inputs from here, so they cannot
drift apart. ``build_transforms`` works on PIL images (the plain path); ``random_resized_crop_flip``
is the same augmentation on whole batches of tensors (the cached path).
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision import transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_RATIO = (3 / 4, 4 / 3)


def eval_size(config):
    """The image size of validation, test and evaluation: ``eval_image_size``, else ``image_size``."""
    return config.get("eval_image_size") or config["image_size"]


def eval_resize(size):
    """The evaluation resize to ``size`` x ``size`` (of PIL images)."""
    return transforms.Resize((size, size), antialias=True)


def picture(image, mean, std):
    """A normalised (3, H, W) image tensor back as an (H, W, 3) array of 0..1 for drawing."""
    image = image.detach().float().cpu() * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return image.clamp(0, 1).permute(1, 2, 0).numpy()


@dataclass(frozen=True)
class Augment:
    """Training augmentation: random resized crops of ``crop_size`` pixels (area ``min_scale`` to 1,
    ratio 3/4 to 4/3) and horizontal flips."""
    crop_size: int
    min_scale: float


def augment_of(config):
    """The augmentation a run's config asks for, or None."""
    return Augment(config["image_size"], config["crop_min_scale"]) if config.get("augment", True) else None


def pil_transforms(size, mean, std, augment=None):
    """PIL image to normalised tensor: ``augment``'s crops and flips, else a resize to ``size``."""
    normalize = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    if augment:
        return transforms.Compose([
            transforms.RandomResizedCrop(augment.crop_size, scale=(augment.min_scale, 1.0), ratio=CROP_RATIO,
                                         antialias=True),
            transforms.RandomHorizontalFlip(), *normalize])
    return transforms.Compose([eval_resize(size), *normalize])


def build_transforms(config, train):
    """The PIL-to-tensor transforms of a run: augmented for training, plain resize otherwise.

    Training crops come out at ``image_size``; evaluation resizes to ``eval_size(config)``.
    """
    if train:
        return pil_transforms(config["image_size"], config["mean"], config["std"], augment_of(config))
    return pil_transforms(eval_size(config), config["mean"], config["std"])


def random_resized_crop_flip(images, scale_min, generator, size=None):
    """Random resized crop (area in [scale_min, 1], ratio 3/4..4/3) and horizontal flip per image,
    resampled to ``size`` x ``size`` (default: the images' size).

    One ``affine_grid``/``grid_sample`` call for the whole batch of float NCHW images.
    """
    n = images.shape[0]
    uniform = lambda low, high: torch.rand(n, generator=generator) * (high - low) + low  # noqa: E731
    area = uniform(scale_min, 1.0)
    log_ratio = uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    width = torch.sqrt(area * torch.exp(log_ratio)).clamp(max=1.0)
    height = torch.sqrt(area / torch.exp(log_ratio)).clamp(max=1.0)
    center_x = (torch.rand(n, generator=generator) * 2 - 1) * (1 - width)
    center_y = (torch.rand(n, generator=generator) * 2 - 1) * (1 - height)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = width * flip, center_x
    theta[:, 1, 1], theta[:, 1, 2] = height, center_y
    theta = theta.to(images.device, images.dtype)
    size = size or images.shape[-1]
    grid = F.affine_grid(theta, [n, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
