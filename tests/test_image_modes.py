"""scenes.images: every mode Pillow opens our formats in (.jpg .jpeg .png .bmp .webp) decodes to the
8-bit RGB picture it shows, compared with a rendering built here without the decoder.

What Pillow opens each kind of file as: 1-bit PNG/BMP "1"; 2- and 4-bit grey PNG "L"; grey
PNG/BMP/JPEG "L"; grey+alpha PNG "LA"; palette PNG/BMP "P" (its transparency in ``info``); RGB "RGB"
and RGBA "RGBA" (WebP opens every picture as one of these two); 16-bit grey PNG "I;16" (older Pillow
"I"); 48-bit RGB PNG "RGB", 64-bit RGBA and 32-bit grey+alpha PNG "RGBA" (Pillow keeps the high byte);
CMYK JPEG "CMYK". None opens as "F", and PNG holds no 32-bit grey, so "I" beyond 16 bits, "I;16B",
"La", "RGBa", "PA" and "YCbCr" are only made in memory here: they go through ``to_rgb`` directly.
"""
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CPU
from scenes.splitting import make_splits
from scenes.images import open_rgb, to_rgb
from scenes.loaders import eval_loader
from scenes.splits import SPLITS, read_split_csv, split_csv

V = np.arange(256, dtype=np.int64).reshape(16, 16)  # a gradient: every 8-bit value once
COLOUR = np.dstack([V, V.T, 255 - V])  # distinct colours in every channel
ALPHA = (V * 7) % 256  # every alpha value once, opaque and fully transparent among them
OFFSETS = (V % 3 - 1) * 128  # 16-bit values up to half a level off v * 257, to test the rounding


def gray(levels):
    """8-bit grey levels as the RGB array a viewer shows."""
    return np.repeat(np.asarray(levels, np.int64)[..., None], 3, -1)


def over_white(rgb, alpha):
    """The composite over white by hand: c * a/255 + 255 * (1 - a/255), rounded."""
    alpha = np.asarray(alpha, np.int64)[..., None]
    return np.floor((rgb * alpha + 255 * (255 - alpha)) / 255 + 0.5).astype(np.int64)


def u8(array):
    return np.asarray(array).astype(np.uint8)


def write_png(path, rows, width, height, depth, color_type):
    """A PNG written by hand from its packed rows, for the depths Pillow does not write: color type
    0 grey, 2 RGB, 4 grey+alpha, 6 RGBA."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    data = b"".join(b"\0" + row for row in rows)  # filter type 0 before each row
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(data))
                     + chunk(b"IEND", b""))


def png_16(path, array, color_type):
    """A 16-bit PNG of ``array`` (H x W x channels); Pillow writes 16 bits for grey only."""
    write_png(path, [row.astype(">u2").tobytes() for row in array], array.shape[1], array.shape[0], 16, color_type)


def png_2_bit_gray(path, levels):
    """A 2-bit grey PNG of levels 0..3, four pixels a byte."""
    packed = levels[:, 0::4] << 6 | levels[:, 1::4] << 4 | levels[:, 2::4] << 2 | levels[:, 3::4]
    write_png(path, [u8(row).tobytes() for row in packed], levels.shape[1], levels.shape[0], 2, 0)


PALETTE = np.stack([V.ravel(), (V.ravel() * 5) % 256, 255 - V.ravel()], 1)  # 256 distinct colours


def palette_image():
    image = Image.fromarray(u8(V), "P")
    image.putpalette(u8(PALETTE).tobytes())
    return image


def cmyk():
    return np.dstack([V, V.T, 255 - V, V // 4])  # black ink too, not only what PIL's RGB->CMYK gives


# name, file name, writes it, the modes Pillow may open it as, the expected RGB, tolerance (lossy JPEG)
CASES = [
    ("1-bit PNG", "a.png", lambda p: Image.fromarray(V >= 128).save(p), {"1"}, gray(np.where(V >= 128, 255, 0)), 0),
    ("1-bit BMP", "a.bmp", lambda p: Image.fromarray(V >= 128).save(p), {"1"}, gray(np.where(V >= 128, 255, 0)), 0),
    ("2-bit grey PNG", "a.png", lambda p: png_2_bit_gray(p, V % 4), {"L"}, gray(V % 4 * 85), 0),
    ("L PNG", "a.png", lambda p: Image.fromarray(u8(V)).save(p), {"L"}, gray(V), 0),
    ("L BMP", "a.bmp", lambda p: Image.fromarray(u8(V)).save(p), {"L"}, gray(V), 0),
    ("L JPEG", "a.jpg", lambda p: Image.fromarray(u8(V)).save(p, quality=95), {"L"}, gray(V), 3),
    ("L PNG, one grey transparent", "a.png", lambda p: Image.fromarray(u8(V)).save(p, transparency=10),
     {"L"}, gray(np.where(V == 10, 255, V)), 0),
    ("LA PNG", "a.png", lambda p: Image.fromarray(u8(np.dstack([V, ALPHA])), "LA").save(p),
     {"LA"}, over_white(gray(V), ALPHA), 0),
    ("LA PNG, opaque", "a.png", lambda p: Image.fromarray(u8(np.dstack([V, V * 0 + 255])), "LA").save(p),
     {"LA"}, gray(V), 0),
    ("P PNG", "a.png", lambda p: palette_image().save(p), {"P"}, PALETTE[V], 0),
    ("P BMP", "a.bmp", lambda p: palette_image().save(p), {"P"}, PALETTE[V], 0),
    ("P PNG, an alpha per colour", "a.png", lambda p: palette_image().save(p, transparency=u8(ALPHA).tobytes()),
     {"P"}, over_white(PALETTE[V], ALPHA.ravel()[V]), 0),
    ("P PNG, one colour transparent", "a.png", lambda p: palette_image().save(p, transparency=3),
     {"P"}, np.where((V == 3)[..., None], 255, PALETTE[V]), 0),
    ("RGB PNG", "a.png", lambda p: Image.fromarray(u8(COLOUR)).save(p), {"RGB"}, COLOUR, 0),
    ("RGB BMP", "a.bmp", lambda p: Image.fromarray(u8(COLOUR)).save(p), {"RGB"}, COLOUR, 0),
    ("RGB WebP", "a.webp", lambda p: Image.fromarray(u8(COLOUR)).save(p, lossless=True), {"RGB"}, COLOUR, 0),
    ("RGB JPEG", "a.jpg", lambda p: Image.fromarray(u8(COLOUR)).save(p, quality=95, subsampling=0),
     {"RGB"}, COLOUR, 3),
    ("RGB PNG, one colour transparent", "a.png",
     lambda p: Image.fromarray(u8(COLOUR)).save(p, transparency=tuple(COLOUR[2, 3].tolist())),
     {"RGB"}, np.where((V == 2 * 16 + 3)[..., None], 255, COLOUR), 0),
    ("RGBA PNG", "a.png", lambda p: Image.fromarray(u8(np.dstack([COLOUR, ALPHA]))).save(p),
     {"RGBA"}, over_white(COLOUR, ALPHA), 0),
    ("RGBA WebP", "a.webp", lambda p: Image.fromarray(u8(np.dstack([COLOUR, ALPHA]))).save(p, lossless=True),
     {"RGBA"}, over_white(COLOUR, ALPHA), 0),
    ("16-bit grey PNG", "a.png", lambda p: Image.fromarray(np.clip(V * 257 + OFFSETS, 0, 65535).astype(np.uint16))
     .save(p), {"I;16", "I"}, gray(V), 0),
    ("16-bit grey PNG, one grey transparent", "a.png",
     lambda p: Image.fromarray((V * 257).astype(np.uint16)).save(p, transparency=10 * 257),
     {"I;16", "I"}, gray(np.where(V == 10, 255, V)), 0),
    ("48-bit RGB PNG", "a.png", lambda p: png_16(p, COLOUR * 257, 2), {"RGB"}, COLOUR, 0),
    ("32-bit grey+alpha PNG", "a.png", lambda p: png_16(p, np.dstack([V, ALPHA]) * 257, 4),
     {"LA", "RGBA"}, over_white(gray(V), ALPHA), 0),
    ("64-bit RGBA PNG", "a.png", lambda p: png_16(p, np.dstack([COLOUR, ALPHA]) * 257, 6),
     {"RGBA"}, over_white(COLOUR, ALPHA), 0),
    ("CMYK JPEG", "a.jpg", lambda p: Image.fromarray(u8(cmyk()), "CMYK").save(p, quality=95), {"CMYK"},
     np.floor((255 - cmyk()[..., :3]) * (255 - cmyk()[..., 3:]) / 255 + 0.5), 3),
]


@pytest.mark.parametrize("name, file_name, write, modes, expected, tolerance", CASES, ids=[c[0] for c in CASES])
def test_each_mode_decodes_as_its_8_bit_rendering(tmp_path, name, file_name, write, modes, expected, tolerance):
    path = tmp_path / file_name
    write(path)
    with Image.open(path) as image:
        assert image.mode in modes, f"{name}: Pillow now opens it as {image.mode}"
    decoded = open_rgb(path)
    assert decoded.mode == "RGB" and decoded.size == (16, 16)
    difference = np.abs(np.asarray(decoded, np.int64) - expected)
    assert difference.max() <= tolerance, name


def test_an_opaque_alpha_channel_gives_the_pixels_without_it(tmp_path):
    Image.fromarray(u8(COLOUR)).save(tmp_path / "rgb.png")
    Image.fromarray(u8(np.dstack([COLOUR, V * 0 + 255]))).save(tmp_path / "rgba.png")
    assert np.array_equal(np.asarray(open_rgb(tmp_path / "rgba.png")), np.asarray(open_rgb(tmp_path / "rgb.png")))


def in_memory_cases():
    """Modes that no file of our formats opens as: (name, image, expected RGB, tolerance)."""
    rgba = Image.fromarray(u8(np.dstack([COLOUR, ALPHA])))
    wide = np.clip(V * 257 + OFFSETS, 0, 65535)
    beyond = np.where(V < 8, -1000, np.where(V > 247, 100_000, wide))  # "I" clipped to the 16-bit range
    return [
        ("I", Image.fromarray(beyond.astype(np.int32)), gray(np.where(V < 8, 0, np.where(V > 247, 255, V))), 0),
        ("I;16B", Image.frombytes("I;16B", (16, 16), wide.astype(">u2").tobytes()), gray(V), 0),
        ("RGBa", rgba.convert("RGBa"), over_white(COLOUR, ALPHA), 1),  # premultiplied: a level lost at low alpha
        ("La", Image.fromarray(u8(np.dstack([V, ALPHA])), "LA").convert("La"), over_white(gray(V), ALPHA), 1),
        ("PA", Image.merge("PA", [palette_image(), Image.fromarray(u8(ALPHA))]), over_white(PALETTE[V], ALPHA), 0),
        ("YCbCr", Image.fromarray(u8(COLOUR)).convert("YCbCr"), COLOUR, 3),  # fixed point, there and back
    ]


@pytest.mark.parametrize("name, image, expected, tolerance", in_memory_cases(), ids=[c[0] for c in in_memory_cases()])
def test_modes_made_only_in_memory_convert_too(name, image, expected, tolerance):
    assert image.mode == name
    decoded = to_rgb(image)
    assert decoded.mode == "RGB"
    assert np.abs(np.asarray(decoded, np.int64) - expected).max() <= tolerance, name


@pytest.mark.parametrize("loader", ["plain", "cached"])
def test_the_split_and_the_loaders_see_a_16_bit_png_as_its_8_bit_twin(tmp_path, loader):
    root = tmp_path / "images"
    for folder in ("deep", "flat"):
        (root / folder).mkdir(parents=True)
    Image.fromarray(np.clip(V * 257 + OFFSETS, 0, 65535).astype(np.uint16)).save(root / "deep" / "16.png")
    Image.fromarray(u8(V)).save(root / "flat" / "8.png")
    Image.fromarray(u8(COLOUR)).save(root / "flat" / "colour.png")  # the loaders' other images
    splits_dir = tmp_path / "splits"
    Image.fromarray(u8(COLOUR[::-1])).save(root / "deep" / "colour.png")  # every split gets an image:
    noise = np.random.default_rng(0).integers(0, 256, (2, *COLOUR.shape), dtype=np.uint8)
    for folder, picture in zip(("deep", "flat"), noise):  # the twins are near-copies, kept together
        Image.fromarray(picture).save(root / folder / "noise.png")
    make_splits(str(root), str(splits_dir), val_size=1, test_size=1, seed=0, log=lambda *a: None)
    config = {"image_size": 16, "mean": [0.0] * 3, "std": [1.0] * 3, "data_root": str(root),
              "class_names": ["deep", "flat"], "loader": loader, "cache_dir": str(tmp_path / "cache")}
    seen = {}
    for split in SPLITS:  # the split reads it and keeps it, in whichever split it lands
        csv_file = split_csv(str(splits_dir), split)
        rows = [rel for rel, _ in read_split_csv(csv_file, str(root))]
        batches = eval_loader(config, csv_file, CPU.device, 2, log=lambda *a: None)
        seen.update(zip(rows, torch.cat([batch for batch, _ in batches])))
    deep, flat = seen["deep/16.png"], seen["flat/8.png"]
    assert torch.equal(deep, flat) and deep.mean() < 0.6  # the gradient's mean, 0.5, not white
