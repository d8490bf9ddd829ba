"""Images of a split CSV as tensors: the plain Dataset, the transforms, and the fast cached path.

    from NatureTypesDataset import NatureTypesDataset, build_transforms, build_loader

Transforms are built in one place from a run's config (image size, mean/std, augmentation), so
training, evaluation and feature maps see the same inputs. Two loaders give the same batches:

- ``plain``: ``NatureTypesDataset`` decodes each image with PIL per item in a ``DataLoader``;
- ``cached`` (default): every image is decoded once, resized exactly as the plain path resizes it,
  into a uint8 file keyed by the CSV, the files' sizes and times and the image size (a new file
  replaces the outdated one of the same CSV and size); augmentation (random resized crop and flip)
  then runs on whole batches. Its evaluation inputs equal the plain path's.
"""
import contextlib
import csv
import glob
import hashlib
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms

from cli import UserError
from data_handling import CSV_COLUMNS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_RATIO = (3 / 4, 4 / 3)
CACHE_VERSION = "1"


def load_image(path):
    """Open an image as RGB whatever its mode (grayscale, palette, RGBA, CMYK).

    A file that cannot be decoded (damaged or replaced after the split) is a UserError naming it.
    """
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except Exception as error:  # PIL raises many kinds for a bad file; each one means "unreadable"
        raise UserError(f"cannot decode the image {path} ({type(error).__name__}); it changed after the split: "
                        "replace it, or make the split again (python main.py --steps=split) to leave it out.") from None


def read_split_csv(csv_file, root, class_names=None):
    """Read a split CSV as [(relative_path, label)], checking it against the folder before any work.

    Raises UserError naming the missing files, or a class the folder (or ``class_names``) lacks.
    """
    if not os.path.isfile(csv_file):
        raise UserError(f"split file {csv_file!r} does not exist; run python main.py --steps=split first.")
    with open(csv_file, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header) != CSV_COLUMNS:
            raise UserError(f"{csv_file} is not a split CSV: its header should be {','.join(CSV_COLUMNS)}.")
        rows = list(reader)
    if class_names is None:
        class_names = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")) \
            if os.path.isdir(root) else []
    unknown = sorted({(name, label) for _, label, name in rows
                      if name not in class_names or int(label) != class_names.index(name)})
    if unknown:
        shown = ", ".join(f"{name} (index {label})" for name, label in unknown[:5])
        raise UserError(f"{csv_file} has classes that {root!r} does not have at those indices: {shown}; "
                        f"the classes there are {', '.join(class_names) or 'none'}.")
    missing = [rel for rel, _, _ in rows if not os.path.isfile(os.path.join(root, rel))]
    if missing:
        raise UserError(f"{len(missing)} image(s) listed in {csv_file} are missing under {root!r}, e.g. "
                        f"{', '.join(missing[:5])}; fix data_root or make the split again.")
    return [(rel, int(label)) for rel, label, _ in rows]


def eval_size(config):
    """The image size of validation, test and evaluation: ``eval_image_size``, else ``image_size``."""
    return config.get("eval_image_size") or config["image_size"]


def build_transforms(config, train):
    """The PIL-to-tensor transforms of a run: augmented for training, plain resize otherwise.

    Training crops come out at ``image_size``; evaluation resizes to ``eval_size(config)``.
    """
    size = config["image_size"] if train else eval_size(config)
    normalize = [transforms.ToTensor(), transforms.Normalize(config["mean"], config["std"])]
    if train and config.get("augment", True):
        return transforms.Compose([
            transforms.RandomResizedCrop(size, scale=(config["crop_min_scale"], 1.0), ratio=CROP_RATIO,
                                         antialias=True),
            transforms.RandomHorizontalFlip(), *normalize])
    return transforms.Compose([transforms.Resize((size, size), antialias=True), *normalize])


class NatureTypesDataset(Dataset):
    """One split CSV as a map-style dataset of ``(image_tensor, label)``."""

    def __init__(self, csv_file, root, transform=None, class_names=None):
        self.root = root
        self.samples = read_split_csv(csv_file, root, class_names)
        self.transform = transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        rel, label = self.samples[index]
        image = load_image(os.path.join(self.root, rel))
        return (self.transform(image) if self.transform else image), label

    @property
    def targets(self):
        return [label for _, label in self.samples]


# ---------------------------------------------------------------------------------------------
# The fast path: a uint8 cache at the run's resolution and augmentation on whole batches.

def cache_name(csv_file, root, samples, size):
    """The cache file's name, as (prefix, rest): ``<csv>-<size>px-<content>-`` and ``<files>.u8``.

    <content> hashes the CSV and the image size, <files> every listed file's size and time, so a
    changed CSV or image gets a new file; one with the same prefix and other files is outdated.
    """
    with open(csv_file, "rb") as f:
        content = hashlib.sha256(f"{CACHE_VERSION}:{size}:".encode() + f.read()).hexdigest()[:10]
    files = hashlib.sha256()
    for rel, _ in samples:
        stat = os.stat(os.path.join(root, rel))
        files.update(f"{stat.st_size}:{stat.st_mtime_ns};".encode())
    return f"{os.path.basename(csv_file).rsplit('.', 1)[0]}-{size}px-{content}-", f"{files.hexdigest()[:12]}.u8"


def decode_resized(path, size):
    """The plain path's evaluation resize, as a (size, size, 3) uint8 array."""
    resize = transforms.Resize((size, size), antialias=True)
    return np.asarray(resize(load_image(path)), dtype=np.uint8)


def read_npy_header(path):
    """The array shape and the data offset of a ``.npy`` file."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, _, _ = read_header(f)
        return shape, f.tell()


class ImageCache:
    """A split's (N, size, size, 3) uint8 cache file, read row by row with ``pread``.

    Reading rows into a fresh array (rather than indexing a memory map of the file) leaves the
    file's pages in the kernel's page cache, shared by every run and process, and out of this
    process's resident memory, so the cache never sits twice in memory.
    """

    def __init__(self, path):
        self.path, self.shape, self.offset = path, *read_npy_header(path)
        self.row_bytes = math.prod(self.shape[1:])
        if os.path.getsize(path) != self.offset + len(self) * self.row_bytes:
            raise UserError(f"{path} is not as long as its header says; delete it to rebuild it.")
        self.fd = os.open(path, os.O_RDONLY)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, indices):
        rows = np.empty((len(indices), *self.shape[1:]), dtype=np.uint8)
        for row, index in zip(rows, indices):
            os.preadv(self.fd, [row], self.offset + int(index) * self.row_bytes)
        return rows

    def __del__(self):
        if hasattr(self, "fd"):
            os.close(self.fd)


def open_image_cache(csv_file, root, samples, size, cache_dir, build=True, log=print):
    """Return the split's ``ImageCache`` (N images, size x size, RGB uint8), building it if needed.

    The file is written under a temporary name and renamed, so a killed build leaves no torn cache.
    Rows are written with ``pwrite``, so building does not map the file either.
    With ``build=False`` (the other ranks of a distributed run) it only opens an existing one.
    """
    prefix, rest = cache_name(csv_file, root, samples, size)
    prefix = os.path.join(cache_dir, prefix)
    path = prefix + rest
    shape = (len(samples), size, size, 3)
    if not os.path.exists(path) and build:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:  # the .npy header, then room for the rows (a sparse file)
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
            offset, row_bytes = f.tell(), math.prod(shape[1:])
            f.truncate(offset + math.prod(shape))
        fd = os.open(tmp, os.O_WRONLY)

        def fill(i):
            os.pwrite(fd, decode_resized(os.path.join(root, samples[i][0]), size).tobytes(), offset + i * row_bytes)

        log(f"caching {len(samples)} images of {csv_file} at {size}x{size} in {path} (once) ...")
        try:
            with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
                list(pool.map(fill, range(len(samples))))
            os.fsync(fd)
        except BaseException:  # an unreadable image or an interrupt: no half-built cache left behind
            os.remove(tmp)
            raise
        finally:
            os.close(fd)
        os.replace(tmp, path)
        for outdated in set(glob.glob(f"{glob.escape(prefix)}*.u8")) - {path}:  # older images of this split
            with contextlib.suppress(OSError):  # a run still reading one keeps its open file (POSIX)
                os.remove(outdated)
    return ImageCache(path)


def shard_indices(n, rank, world, shuffle, seed, epoch, batch_size=0):
    """The indices one rank sees in one epoch.

    Training (shuffle) takes a seeded permutation and drops the tail that does not divide among the
    ranks, so no sample is repeated, and a last batch of a single image, which BatchNorm cannot train
    on at small sizes (one value per channel); evaluation takes every index, ranks interleaved, none
    padded.
    """
    if not shuffle:
        return torch.arange(rank, n, world)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    shard = order[: n - n % world][rank::world]
    return shard[:-1] if batch_size and len(shard) % batch_size == 1 else shard


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


class SplitLoader:
    """What both loaders share: this rank's indices of the split per epoch, and the batch count."""

    def __init__(self, split_size, config, batch_size, device, train, rank, world):
        self.split_size, self.batch_size, self.device, self.train = split_size, batch_size, device, train
        self.config, self.seed, self.rank, self.world, self.epoch = config, config["seed"], rank, world, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    @property
    def indices(self):
        return shard_indices(self.split_size, self.rank, self.world, self.train, self.seed, self.epoch,
                             self.batch_size)

    def __len__(self):
        return math.ceil(len(self.indices) / self.batch_size)


class CachedLoader(SplitLoader):
    """Batches of a split from its uint8 cache: ``(images, targets)`` ready for the model.

    Images arrive on ``device`` as normalised float32 NCHW tensors in channels-last memory
    (the cache is NHWC, so this needs no copy beyond the dtype change).
    """

    def __init__(self, cache, labels, config, batch_size, device, train, rank=0, world=1):
        super().__init__(len(labels), config, batch_size, device, train, rank, world)
        self.cache, self.labels = cache, torch.as_tensor(labels)
        self.augment = train and config.get("augment", True)
        self.crop_min_scale, self.crop_size = config["crop_min_scale"], config["image_size"]
        self.mean = torch.tensor(config["mean"], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(config["std"], device=device).view(1, 3, 1, 1)

    def set_crop_size(self, size):
        """The size of the training crops from now on (progressive resizing)."""
        self.crop_size = size

    def __iter__(self):
        indices = self.indices
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch + 7919 * (self.rank + 1))
        for start in range(0, len(indices), self.batch_size):
            batch = indices[start:start + self.batch_size]
            pixels = torch.from_numpy(self.cache[batch.tolist()]).to(self.device, non_blocking=True)
            # the same operations as ToTensor and Normalize, in place, so the inputs equal the plain path's
            images = pixels.permute(0, 3, 1, 2).float().div_(255)
            if self.augment:
                images = random_resized_crop_flip(images, self.crop_min_scale, generator, self.crop_size)
            images = images.sub_(self.mean).div_(self.std).contiguous(memory_format=torch.channels_last)
            yield images, self.labels[batch].to(self.device, non_blocking=True)


class PlainLoader(SplitLoader):
    """The same interface over ``NatureTypesDataset`` and a ``DataLoader`` (PIL per item)."""

    def __init__(self, dataset, config, batch_size, device, train, num_workers=0, rank=0, world=1):
        super().__init__(len(dataset), config, batch_size, device, train, rank, world)
        self.dataset, self.num_workers = dataset, num_workers

    def set_crop_size(self, size):
        self.dataset.transform = build_transforms({**self.config, "image_size": size}, self.train)

    def __iter__(self):
        loader = DataLoader(Subset(self.dataset, self.indices.tolist()), batch_size=self.batch_size,
                            num_workers=self.num_workers, persistent_workers=False,
                            generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        for images, targets in loader:
            yield (images.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last),
                   targets.to(self.device, non_blocking=True))


def build_loader(config, split, train, device, rank=0, world=1, csv_file=None, log=print):
    """The loader of one split (``train``/``validation``/``test``, or any CSV) as the config says.

    ``config["loader"]`` picks ``cached`` (default) or ``plain``; both check the CSV against the
    folder first and give the same evaluation batches.
    """
    csv_file = csv_file or config[f"{split}_csv"]
    root = config["data_root"]
    batch_size = config["batch_size"] // world if train else config["eval_batch_size"]
    if config["loader"] == "plain":
        dataset = NatureTypesDataset(csv_file, root, build_transforms(config, train), config["class_names"])
        return PlainLoader(dataset, config, batch_size, device, train, config["num_workers"], rank, world)
    if config["loader"] != "cached":
        raise UserError(f"--loader takes cached or plain, not {config['loader']!r}.")
    samples = read_split_csv(csv_file, root, config["class_names"])
    # augmented training crops are cut from images kept at the evaluation size (when larger), like
    # the plain path cuts them from the full image; evaluation reads its own size
    augmented = train and config.get("augment", True)
    size = (max(config["image_size"], eval_size(config)) if augmented else
            config["image_size"] if train else eval_size(config))
    open_cache = lambda: open_image_cache(csv_file, root, samples, size,  # noqa: E731
                                          config["cache_dir"], build=rank == 0, log=log)
    cache = open_cache() if rank == 0 else None
    if world > 1:  # rank 0 builds the cache once; the others open it when it is there
        torch.distributed.barrier()
    cache = cache if cache is not None else open_cache()
    return CachedLoader(cache, [label for _, label in samples], config, batch_size, device, train, rank, world)
