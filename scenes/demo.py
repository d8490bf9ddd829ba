"""A small generated six-class image set, so the pipeline runs on a fresh machine with no download.

Each class has its own colours and texture (stripes, blobs, gradients ...) plus noise, so a
network can learn it in a few epochs; the names follow the real data set's classes.
"""
import os

import numpy as np
from PIL import Image

from scenes.files import write_atomically

DEMO_ROOT = "demo_data"
CLASSES = ("buildings", "forest", "glacier", "mountain", "sea", "street")


def demo_image(label, rng, size):
    y, x = np.mgrid[0:size, 0:size] / size
    angle = label * np.pi / len(CLASSES) + rng.normal(0, 0.15)
    frequency = 3 + label + rng.uniform(-0.5, 0.5)
    wave = np.sin(2 * np.pi * frequency * (x * np.cos(angle) + y * np.sin(angle)) + rng.uniform(0, 2 * np.pi))
    base = np.array([(label * 53) % 256, (label * 97 + 60) % 256, (label * 151 + 120) % 256], dtype=float)
    image = base + 60 * wave[..., None] + rng.normal(0, 25, (size, size, 3))
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def make_demo_dataset(root=DEMO_ROOT, per_class=80, size=64, seed=0):
    """Write ``per_class`` JPEGs per class under ``root`` (kept if already there); returns root."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            path = os.path.join(root, name, f"{i:04d}.jpg")
            image = demo_image(label, rng, size)
            if not os.path.exists(path):
                write_atomically(path, lambda f: image.save(f, format="JPEG", quality=90))
    return root

