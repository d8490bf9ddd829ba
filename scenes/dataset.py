"""``NatureTypesDataset``: one split CSV as a map-style dataset of ``(image_tensor, label)``."""
import os

from torch.utils.data import Dataset

from scenes.images import load_image
from scenes.splits import class_folders, read_split_csv


class NatureTypesDataset(Dataset):
    """The images of one split CSV (paths relative to ``root``), each through ``transform``."""

    def __init__(self, csv_file, root, transform=None, class_names=None):
        self.root = root
        self.class_names = list(class_names) if class_names is not None else class_folders(root)
        self.samples = read_split_csv(csv_file, root, self.class_names)
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
