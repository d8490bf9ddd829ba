"""The Dataset class and the transforms, and a look at a split as the model sees it.

    python NatureTypesDataset.py                           # the training split: counts and a preview
    python NatureTypesDataset.py --split=test --out=results/test_preview.png
    python NatureTypesDataset.py --image_size=128 --eval_image_size=160

    from NatureTypesDataset import NatureTypesDataset, build_transforms

``NatureTypesDataset(csv_file, root, transform)`` is one split CSV as ``(image_tensor, label)``;
``build_transforms(config, train)`` builds a run's transforms from its config (image size, mean/std,
augmentation), the one place that training, evaluation, feature maps and prediction take them from.
Run as a script, it prints the split's images per class and writes a preview PNG: --num_images
images taken from every class in turn, each as training augments it (upper row) and as evaluation
sees it (lower row), un-normalised.
"""

import torch

from scenes import cli
from scenes.dataset import NatureTypesDataset
from scenes.files import ensure_file_folder, pyplot, write_figure
from scenes.splits import read_split_info, split_csv
from scenes.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms

__all__ = ["NatureTypesDataset", "build_transforms"]

# --- settings ---
split = "train"  # the split to look at [one of train, validation, test]
splits_dir = "splits"  # folder with the split CSVs (python main.py makes it)
data_root = ""  # folder of class sub-folders; "" = the one the split was made from
image_size = 128  # pixels (square) of the training crops, as train.py's image_size [16 to 1024]
eval_image_size = 160  # pixels (square) of evaluation, as train.py's eval_image_size [16 to 1024]
crop_min_scale = 0.35  # smallest area fraction of a random resized crop, as train.py's [> 0 and <= 1]
num_images = 12  # images in the preview, taken from every class in turn [>= 1]
seed = 0  # seeds the preview's augmentation [>= 0]
out = "results/preview.png"  # the preview PNG
# --- end of settings ---


def unnormalised(image, mean, std):
    """A normalised (3, H, W) tensor as an (H, W, 3) array of 0..1 for drawing."""
    return (image * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)).clamp(0, 1).permute(1, 2, 0)


def every_class_in_turn(targets, count):
    """Indices of ``count`` images: the first of each class, then the second of each, and so on."""
    by_class = {}
    for index, label in enumerate(targets):
        by_class.setdefault(label, []).append(index)
    rounds = max(len(indices) for indices in by_class.values())
    order = [indices[k] for k in range(rounds) for _, indices in sorted(by_class.items()) if k < len(indices)]
    return order[:count]


def save_preview(dataset, config, path, columns=6):
    """Images of ``dataset`` from every class, augmented for training above as evaluation sees them."""
    chosen = every_class_in_turn(dataset.targets, config["num_images"])
    rows = [("training", build_transforms(config, True)), ("evaluation", build_transforms(config, False))]
    columns = min(columns, len(chosen))
    pairs = -(-len(chosen) // columns)
    plt = pyplot()
    fig, axes = plt.subplots(2 * pairs, columns, figsize=(2.0 * columns, 4.4 * pairs), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    torch.manual_seed(config["seed"])
    for row, (what, transform) in enumerate(rows):
        dataset.transform = transform
        for i, index in enumerate(chosen):
            image, label = dataset[index]
            ax = axes[2 * (i // columns) + row][i % columns]
            ax.imshow(unnormalised(image, config["mean"], config["std"]).numpy(), interpolation="lanczos")
            ax.set_title(f"{dataset.class_names[label]}\n{what}, {image.shape[-1]} px", fontsize=8)
    fig.suptitle(f"{len(chosen)} images of {len(set(dataset.targets))} classes: as training augments them (upper) "
                 "and as evaluation sees them (lower)", fontsize=9)
    fig.tight_layout()
    write_figure(path, fig, dpi=120)


def main(argv=None):
    config, _ = cli.parse(__file__, __doc__, argv)
    ensure_file_folder(config["out"], "out")
    info = read_split_info(config["splits_dir"])
    root = config["data_root"] or info["data_root"]
    config.update(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))
    dataset = NatureTypesDataset(split_csv(config["splits_dir"], config["split"]), root,
                                 class_names=info["class_names"])
    counts = torch.bincount(torch.tensor(dataset.targets, dtype=torch.long), minlength=len(info["class_names"]))
    print(f"{config['split']}: {len(dataset)} images under {root}")
    for name, count in zip(info["class_names"], counts.tolist()):
        print(f"  {name:<12}{count:>6}")
    if len(dataset):
        save_preview(dataset, config, config["out"])
        print(f"preview of {min(config['num_images'], len(dataset))} images, every class in turn: {config['out']}")
    return dataset


if __name__ == "__main__":
    cli.run(main)
