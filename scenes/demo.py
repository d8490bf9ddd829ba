"""A small generated six-class image set, so the pipeline runs on a fresh machine with no download.

Each class has its own stripes (direction and frequency), faint under random colours and noise,
so a network learns it over a few epochs; the names follow the real data set's classes.
"""
import os

import numpy as np
from PIL import Image

from scenes.files import write_atomically

DEMO_ROOT = os.path.join("demo", "data")  # every output of the demo pipeline lies under demo/
CLASSES = ("buildings", "forest", "glacier", "mountain", "sea", "street")


def demo_image(label, rng, size):
    """One picture of a class: a wave of the class's direction and frequency over a colour drawn
    for each picture (a slight tint of the class on the same range for every class) and noise, so
    the classes overlap and a network learns them over several epochs, not in one."""
    y, x = np.mgrid[0:size, 0:size] / size
    angle = label * np.pi / len(CLASSES) + rng.normal(0, 0.12)
    frequency = 3 + label + rng.uniform(-0.5, 0.5)
    wave = np.sin(2 * np.pi * frequency * (x * np.cos(angle) + y * np.sin(angle)) + rng.uniform(0, 2 * np.pi))
    base = rng.uniform(60, 196, 3) + 40 * np.array([np.cos(label), np.sin(label), 0.0])
    image = base + 55 * wave[..., None] + rng.normal(0, 30, (size, size, 3))
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

