"""Decoding image files: one function, used by the split, the loaders and prediction.

Every mode PIL opens becomes the 8-bit RGB picture a viewer shows: 16-bit grayscale is scaled to
8 bits (PIL's own conversion clips it to white), and a transparent picture is laid over white, as
on a page.

EXIF orientation is not applied: an image is read as its pixels are stored, in training,
evaluation and prediction alike (a photo that a camera marks as rotated is seen unrotated).
"""
import os

import numpy as np
from PIL import Image

from scenes.cli import UserError

MAX_DECODING_THREADS = 8  # PIL decodes and resizes without the GIL; more threads than this gain little
WIDE_GRAY_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}  # "I": 16-bit PNGs in some PIL versions
ALPHA_MODES = {"RGBA", "LA", "La", "RGBa", "PA"}
WHITE = (255, 255, 255)


def open_rgb(path):
    """An image file as an 8-bit RGB PIL image, as it looks (see ``to_rgb``).

    Raises whatever PIL raises for a file it cannot decode.
    """
    with Image.open(path) as image:
        return to_rgb(image)


def to_rgb(image):
    """The 8-bit RGB rendering of a PIL image of any mode: 1-bit, 8-bit, palette and CMYK as PIL
    converts them, 16-bit grayscale scaled, alpha or a transparent colour composited over white."""
    if image.mode in WIDE_GRAY_MODES:
        image = wide_gray_to_8_bit(image)
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        return over_white(image)
    return image.convert("RGB")


def wide_gray_to_8_bit(image):
    """16-bit grayscale as "L" (0..65535 to 0..255, rounded; "I" clipped to that range), or as "LA"
    with its transparent grey value, if it has one, made transparent."""
    values = np.asarray(image).astype(np.int64)
    levels = (np.clip(values, 0, 65535) + 128) // 257  # value / 257, rounded (257 is odd: no ties)
    gray = Image.fromarray(levels.astype(np.uint8), "L")
    if "transparency" not in image.info:
        return gray
    alpha = np.where(values == image.info["transparency"], 0, 255).astype(np.uint8)
    return Image.merge("LA", [gray, Image.fromarray(alpha, "L")])


def over_white(image):
    """An image with alpha (or a transparent colour) laid over white; opaque pixels keep their colour."""
    if image.mode == "La":  # premultiplied; PIL reaches RGBA from it only by way of LA
        image = image.convert("LA")
    rgba = image.convert("RGBA")
    page = Image.new("RGB", rgba.size, WHITE)
    page.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))  # rounds c*a/255 + 255*(1 - a/255) exactly
    return page


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
