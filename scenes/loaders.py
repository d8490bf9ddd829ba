"""Batches of a split, two ways that give the same evaluation batches.

- ``plain``: ``NatureTypesDataset`` decodes each image with PIL per item in a ``DataLoader``;
- ``cached`` (default): every image is decoded once, resized exactly as the plain path resizes it,
  into a uint8 file keyed by the CSV, the images' content and the image size (a new file replaces
  the outdated one of the same CSV and size), with a crc32 per row checked whenever it is opened,
  so a damaged file is built again, never used; augmentation (random resized crop and flip) then
  runs on whole batches.
"""
import contextlib
import glob
import hashlib
import math
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from scenes.cli import UserError
from scenes.dataset import NatureTypesDataset
from scenes.files import ensure_folder, ensure_room, remove_stale_temporaries, write_atomically
from scenes.images import decoding_threads, load_image
from scenes.outputs import check_output_folder
from scenes.splits import content_digests, read_split_csv
from scenes.transforms import eval_resize, eval_size, pil_transforms, random_resized_crop_flip

CACHE_VERSION = "2"  # 2: keyed by the images' content, a crc32 per row
CRC_BYTES = 4


def cache_name(csv_file, root, samples, size):
    """The cache file's name, as (prefix, rest): ``<csv>-<size>px-<csv digest>-`` and ``<content>.u8``.

    <csv digest> hashes the CSV and the image size, <content> every listed image's sha256, so a
    changed CSV or image (even one of the same size and time) gets a new file; one with the same
    prefix and other content is outdated.
    """
    with open(csv_file, "rb") as f:
        listed = hashlib.sha256(f"{CACHE_VERSION}:{size}:".encode() + f.read()).hexdigest()[:10]
    contents = content_digests(root, [rel for rel, _ in samples])
    content = hashlib.sha256("".join(contents[rel] for rel, _ in samples).encode()).hexdigest()[:12]
    return f"{os.path.basename(csv_file).rsplit('.', 1)[0]}-{size}px-{listed}-", f"{content}.u8"


def decode_resized(path, size):
    """The plain path's evaluation resize, as a (size, size, 3) uint8 array."""
    return np.asarray(eval_resize(size)(load_image(path)), dtype=np.uint8)


def read_npy_header(path):
    """The array shape and the data offset of a ``.npy`` file; ValueError if it has no valid header."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        if dtype != np.uint8 or len(shape) != 4 or shape[3] != 3:
            raise ValueError(f"an array of {dtype} {shape}, not of RGB rows")
        return shape, f.tell()


class CacheDamaged(Exception):
    """A cache file that is not what was written: a header, length or row checksum that does not match."""


class ImageCache:
    """A split's (N, size, size, 3) uint8 cache file, read row by row with ``pread``, and after the rows
    a crc32 of each (``verify`` checks them all).

    Reading rows into a fresh array (rather than indexing a memory map of the file) leaves the
    file's pages in the kernel's page cache, shared by every run and process, and out of this
    process's resident memory, so the cache never sits twice in memory.
    """

    def __init__(self, path):
        try:
            self.path, self.shape, self.offset = path, *read_npy_header(path)
        except (ValueError, EOFError, OSError) as error:
            raise CacheDamaged(f"its header does not read ({error})") from None
        self.row_bytes = math.prod(self.shape[1:])
        if os.path.getsize(path) != self.offset + len(self) * (self.row_bytes + CRC_BYTES):
            raise CacheDamaged("it is not as long as its header says")
        self.fd = os.open(path, os.O_RDONLY)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, indices):
        rows = np.empty((len(indices), *self.shape[1:]), dtype=np.uint8)
        for row, index in zip(rows, indices):
            os.preadv(self.fd, [row], self.offset + int(index) * self.row_bytes)
        return rows

    def verify(self, chunk=256):
        """Raise CacheDamaged if a row's crc32 is not the one written with it."""
        written = np.frombuffer(os.pread(self.fd, CRC_BYTES * len(self), self.offset + len(self) * self.row_bytes),
                                dtype="<u4")
        for start in range(0, len(self), chunk):
            rows = self[range(start, min(start + chunk, len(self)))]
            bad = [start + i for i, row in enumerate(rows) if zlib.crc32(row) != written[start + i]]
            if bad:
                raise CacheDamaged(f"row {bad[0]} does not match its checksum")

    def __del__(self):
        if hasattr(self, "fd"):
            os.close(self.fd)


def fill_cache(f, root, samples, size):
    """Write the ``.npy`` header, every image's rows with ``pwrite`` (the file is never mapped), then
    the rows' crc32s."""
    shape = (len(samples), size, size, 3)
    np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
    f.flush()
    offset, row_bytes = f.tell(), math.prod(shape[1:])
    f.truncate(offset + math.prod(shape))  # room for the rows (a sparse file until written)

    def fill(i):
        row = decode_resized(os.path.join(root, samples[i][0]), size).tobytes()
        os.pwrite(f.fileno(), row, offset + i * row_bytes)
        return zlib.crc32(row)

    with ThreadPoolExecutor(decoding_threads()) as pool:
        crcs = np.array(list(pool.map(fill, range(len(samples)))), dtype="<u4")
    os.pwrite(f.fileno(), crcs.tobytes(), offset + len(samples) * row_bytes)


def checked_cache(path, log):
    """The cache at ``path`` if it is there and whole, else None (a damaged one is removed)."""
    if not os.path.exists(path):
        return None
    try:
        cache = ImageCache(path)
        cache.verify()
        return cache
    except CacheDamaged as error:
        log(f"the cache {path} is damaged ({error}); it is removed and built again.")
        os.remove(path)
        return None


def open_image_cache(csv_file, root, samples, size, cache_dir, build=True, log=print):
    """Return the split's ``ImageCache`` (N images, size x size, RGB uint8), building it if it is not
    there or does not match its checksums.

    With ``build=False`` (the other ranks of a distributed run) it only opens the one rank 0 built.
    """
    prefix, rest = cache_name(csv_file, root, samples, size)
    prefix = os.path.join(cache_dir, prefix)
    path = prefix + rest
    if not build:
        return ImageCache(path)
    remove_stale_temporaries(path, os.path.join(glob.escape(cache_dir), "*.u8"))  # of runs killed while caching
    cache = checked_cache(path, log)
    if cache is None:
        check_output_folder(cache_dir, "cache_dir", root)
        ensure_folder(cache_dir, "cache_dir")
        ensure_room(cache_dir, len(samples) * (size * size * 3 + CRC_BYTES),
                    f"the cache of {len(samples)} images at {size} px")
        log(f"caching {len(samples)} images of {csv_file} at {size}x{size} in {path} (once) ...")
        write_atomically(path, lambda f: fill_cache(f, root, samples, size), shared=True)
        for outdated in set(glob.glob(f"{glob.escape(prefix)}*.u8")) - {path}:  # older images of this split
            with contextlib.suppress(OSError):  # a run still reading one keeps its open file (POSIX)
                os.remove(outdated)
        cache = ImageCache(path)
    return cache


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


class SplitLoader:
    """What both loaders share: this rank's indices of the split per epoch, and the batch count."""

    def __init__(self, split_size, batch_size, device, shuffle, seed, rank, world):
        self.split_size, self.batch_size, self.device, self.shuffle = split_size, batch_size, device, shuffle
        self.seed, self.rank, self.world, self.epoch = seed, rank, world, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    @property
    def indices(self):
        return shard_indices(self.split_size, self.rank, self.world, self.shuffle, self.seed, self.epoch,
                             self.batch_size)

    def __len__(self):
        return math.ceil(len(self.indices) / self.batch_size)


class CachedLoader(SplitLoader):
    """Batches of a split from its uint8 cache: ``(images, targets)`` ready for the model.

    Images arrive on ``device`` as normalised float32 NCHW tensors in channels-last memory
    (the cache is NHWC, so this needs no copy beyond the dtype change).
    """

    def __init__(self, cache, labels, mean, std, batch_size, device, augment=None, shuffle=False, seed=0,
                 rank=0, world=1):
        super().__init__(len(labels), batch_size, device, shuffle, seed, rank, world)
        self.cache, self.labels, self.augment = cache, torch.as_tensor(labels), augment
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)

    def set_crop_size(self, size):
        """The size of the training crops from now on (progressive resizing)."""
        if self.augment:
            self.augment = replace(self.augment, crop_size=size)

    def __iter__(self):
        indices = self.indices
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch + 7919 * (self.rank + 1))
        for start in range(0, len(indices), self.batch_size):
            batch = indices[start:start + self.batch_size]
            pixels = torch.from_numpy(self.cache[batch.tolist()]).to(self.device, non_blocking=True)
            # the same operations as ToTensor and Normalize, in place, so the inputs equal the plain path's
            images = pixels.permute(0, 3, 1, 2).float().div_(255)
            if self.augment:
                images = random_resized_crop_flip(images, self.augment.min_scale, generator, self.augment.crop_size)
            images = images.sub_(self.mean).div_(self.std).contiguous(memory_format=torch.channels_last)
            yield images, self.labels[batch].to(self.device, non_blocking=True)


class PlainLoader(SplitLoader):
    """The same interface over ``NatureTypesDataset`` and a ``DataLoader`` (PIL per item)."""

    def __init__(self, dataset, mean, std, augment, batch_size, device, shuffle=False, seed=0, num_workers=0,
                 rank=0, world=1):
        super().__init__(len(dataset), batch_size, device, shuffle, seed, rank, world)
        self.dataset, self.num_workers = dataset, num_workers
        self.mean, self.std, self.augment = mean, std, augment

    def set_crop_size(self, size):
        if self.augment:
            self.augment = replace(self.augment, crop_size=size)
            self.dataset.transform = pil_transforms(size, self.mean, self.std, self.augment)

    def __iter__(self):
        loader = DataLoader(Subset(self.dataset, self.indices.tolist()), batch_size=self.batch_size,
                            num_workers=self.num_workers, persistent_workers=False,
                            generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        for images, targets in loader:
            yield (images.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last),
                   targets.to(self.device, non_blocking=True))


@dataclass(frozen=True)
class Source:
    """Where a loader's images come from and how they are read: the CSV, its data root and
    classes, the loader kind (``cached`` or ``plain``), the cache folder, the plain path's workers."""
    csv_file: str
    root: str
    class_names: tuple
    kind: str = "cached"
    cache_dir: str = "cache"
    num_workers: int = 0


def build_loader(source, size, mean, std, batch_size, device, augment=None, shuffle=False, seed=0,
                 rank=0, world=1, log=print):
    """The loader of one CSV: images at ``size`` pixels (``augment``'s crops cut from them), normalised.

    Both kinds check the CSV against the folder first and give the same evaluation batches;
    ``shuffle`` gives each epoch a seeded order (training).
    """
    if source.kind not in ("cached", "plain"):
        raise UserError(f"--loader takes cached or plain, not {source.kind!r}.")
    if source.kind == "plain":
        dataset = NatureTypesDataset(source.csv_file, source.root, pil_transforms(size, mean, std, augment),
                                     list(source.class_names))
        return PlainLoader(dataset, mean, std, augment, batch_size, device, shuffle, seed, source.num_workers,
                           rank, world)
    samples = read_split_csv(source.csv_file, source.root, list(source.class_names))
    open_cache = lambda: open_image_cache(source.csv_file, source.root, samples, size,  # noqa: E731
                                          source.cache_dir, build=rank == 0, log=log)
    cache = open_cache() if rank == 0 else None
    if world > 1:  # rank 0 builds the cache once; the others open it when it is there
        torch.distributed.barrier()
    cache = cache if cache is not None else open_cache()
    return CachedLoader(cache, [label for _, label in samples], mean, std, batch_size, device, augment, shuffle,
                        seed, rank, world)


def source_of(config, csv_file):
    """The ``Source`` of a CSV for a run's or an evaluation's config."""
    return Source(csv_file, config["data_root"], tuple(config["class_names"]), config["loader"],
                  config["cache_dir"], config.get("num_workers", 0))


def eval_loader(config, csv_file, device, batch_size, log=print):
    """A CSV's images as a model's config evaluates them: at its evaluation size, its mean/std."""
    return build_loader(source_of(config, csv_file), eval_size(config), config["mean"], config["std"],
                        batch_size, device, log=log)
