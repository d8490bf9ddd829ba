"""Decoding image files: one function, used by the split, the loaders and prediction."""
from PIL import Image

from scenes.cli import UserError


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
