"""Decoding image files: one function, used by the split, the loaders and prediction.

EXIF orientation is not applied: an image is read as its pixels are stored, in training,
evaluation and prediction alike (a photo that a camera marks as rotated is seen unrotated).
"""
import os

from PIL import Image

from scenes.cli import UserError

MAX_DECODING_THREADS = 8  # PIL decodes and resizes without the GIL; more threads than this gain little


def open_rgb(path):
    """An image file as an RGB PIL image, whatever its mode (grayscale, palette, RGBA, CMYK).

    Raises whatever PIL raises for a file it cannot decode.
    """
    with Image.open(path) as image:
        return image.convert("RGB")


def load_image(path):
    """``open_rgb``, with a file that cannot be decoded (damaged or replaced after the split) a
    UserError naming it."""
    try:
        return open_rgb(path)
    except Exception as error:  # PIL raises many kinds for a bad file; each one means "unreadable"
        raise UserError(f"cannot decode the image {path} ({type(error).__name__}); it changed after the split: "
                        "replace it, or make the split again (python main.py --steps=split) to leave it out.") from None


def decoding_threads(requested=0):
    """Threads that decode images: ``requested``, or with 0 one per CPU core up to a limit."""
    return requested or max(1, min(MAX_DECODING_THREADS, os.cpu_count() or 1))
