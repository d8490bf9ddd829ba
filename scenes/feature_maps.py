"""The feature-map command (what feature_map.py runs): a model from a checkpoint or torchvision's
ImageNet weights, its chosen modules hooked over the first images of a split, the images and the
table written. The hooks and statistics themselves are in ``scenes.features``.
"""
import os
import sys

import torch

from scenes import cli
from scenes.checkpoints import check_class_names, load_checkpoint, model_from_checkpoint, verifiable
from scenes.features import NonPositiveStats, capture_outputs, check_module_names, image_maps, save_feature_maps, \
    stats_table
from scenes.files import ensure_folder, write_text
from scenes.outputs import check_output_folder
from scenes.loaders import eval_loader
from scenes.models import build_model, imagenet_weights
from scenes.runtime import prepare_model, runtime
from scenes.provenance import split_problem, unverified_note
from scenes.splits import read_split, read_split_csv, read_split_info, split_csvs
from scenes.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_size

PRETRAINED_ONLY = ("arch", "weights_file", "image_size")


# ---------------------------------------------------------------------------------------------
# Model and data

def checkpoint_setup(config, overrides):
    """The model and the data config of a checkpoint of this project (its own size and mean/std)."""
    given = [f"--{key}" for key in PRETRAINED_ONLY if key in overrides]
    if given:
        raise cli.UserError(f"{', '.join(given)} only applies to --checkpoint=pretrained; a checkpoint of this "
                            "project brings its own architecture, weights and image size.")
    path = config["checkpoint"]
    saved = load_checkpoint(path)
    model = model_from_checkpoint(saved, path)
    data = dict(saved["config"])
    if config["splits_dir"]:
        info = read_split_info(config["splits_dir"])
        check_class_names(data["class_names"], info["class_names"], path, config["splits_dir"])
        data["data_root"] = info["data_root"]
        data.update(split_csvs(config["splits_dir"]))
    check_own_split(saved, path, data, config)
    return model, data, f"{path} ({data['arch']}, {eval_size(data)} px)"


def check_own_split(checkpoint, path, data, config):
    """Refuse a split the checkpoint was not trained on: its statistics would be about other data."""
    splits_dir = os.path.dirname(data[f"{config['split']}_csv"])
    split = read_split(splits_dir, config["data_root"] or data["data_root"], data["class_names"],
                       verify=[config["split"]])
    problem = split_problem(checkpoint, split, splits_dir)
    if problem:
        raise cli.UserError(f"{path} is not looked into on this split: {problem}; pass the --splits_dir it was "
                            "trained on.")
    if not verifiable(checkpoint):
        print(unverified_note(path), file=sys.stderr)


def pretrained_setup(config):
    """torchvision's ImageNet model as it is (1000 classes) with ImageNet mean/std at --image_size."""
    model = build_model(config["arch"], 1000)
    model.load_state_dict(imagenet_weights(config["arch"], config["weights_file"]))
    splits_dir = config["splits_dir"] or "splits"
    info = read_split_info(splits_dir)
    data = {"arch": config["arch"], "class_names": info["class_names"], "data_root": info["data_root"],
            "image_size": config["image_size"], "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
            **split_csvs(splits_dir)}
    return model.eval(), data, f"torchvision {config['arch']} with ImageNet weights ({config['image_size']} px)"


def check_settings(config, names):
    if not config["checkpoint"]:
        raise cli.UserError("name the weights to look into: --checkpoint=PATH/best.pth or --checkpoint=pretrained.")
    if not names and not config["list_modules"]:
        raise cli.UserError("--modules names no module; give comma-separated names such as layer1.0.conv1.")


def look_inside(model, batches, samples, names, data, config, rt, described):
    """Draw the first ``num_images`` images' feature maps and count non-positive values over the
    first ``stat_images``; returns the statistics."""
    limit = min(len(samples), max(config["stat_images"], config["num_images"]))
    stat_limit, image_limit = min(limit, config["stat_images"]), min(limit, config["num_images"])
    digits = max(3, len(str(image_limit - 1)))
    stats, seen = NonPositiveStats(), 0
    with capture_outputs(model, names) as outputs, torch.inference_mode():
        for images, _ in batches:
            images = images[: limit - seen]
            outputs.clear()
            with rt.autocast():
                model(images)
            if seen < stat_limit:
                stats.update(outputs, min(len(images), stat_limit - seen))
            for i in range(max(0, min(len(images), image_limit - seen))):
                rel, label = samples[seen + i]
                title = f"{config['split']} image {seen + i}: {rel} ({data['class_names'][label]}); {described}"
                save_feature_maps(image_maps(outputs, i), f"img{seen + i:0{digits}d}", images[i], data["mean"],
                                  data["std"], title, config["out_dir"], config["channels"])
            seen += len(images)
            if seen >= limit:
                break
    return stats, image_limit


def write_feature_maps(config, overrides):
    """Feature maps, overviews and the non-positive table of feature_map.py's settings (``config``;
    ``overrides``: those given on its command line); returns the table's rows."""
    names = [name.strip() for name in config["modules"].split(",") if name.strip()]
    check_settings(config, names)
    ensure_folder(config["out_dir"], "out_dir", create=False)
    if config["checkpoint"] == "pretrained":
        model, data, described = pretrained_setup(config)
    else:
        model, data, described = checkpoint_setup(config, overrides)
    if config["list_modules"]:
        print("\n".join(name for name, _ in model.named_modules() if name))
        return None
    check_module_names(model, names)
    data.update(data_root=config["data_root"] or data["data_root"], loader=config["loader"],
                cache_dir=config["cache_dir"])
    check_output_folder(config["out_dir"], "out_dir", data["data_root"])
    rt = runtime(config["device"], config["precision"])
    csv_file = data[f"{config['split']}_csv"]
    samples = read_split_csv(csv_file, data["data_root"], data["class_names"])
    if not samples:
        raise cli.UserError(f"{csv_file} lists no images; there is nothing to look at.")
    batches = eval_loader(data, csv_file, rt.device, config["batch_size"])
    model = prepare_model(model, rt)
    out_dir = config["out_dir"]
    for folder in ("feature_maps", "feature_maps_visualization"):
        os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
    stats, image_limit = look_inside(model, batches, samples, names, data, config, rt, described)
    rows = stats.rows(names)
    header = (f"Average percentage of non-positive (<= 0) values per module over the first {stats.images} "
              f"{config['split']} images of {csv_file}\nmodel: {described}; {'bf16' if rt.bf16 else 'fp32'} "
              f"on {rt.device}")
    table = stats_table(rows, header)
    write_text(os.path.join(out_dir, "non_positive_stats.txt"), table)
    print(table, end="")
    if stats.images < config["stat_images"]:
        print(f"(the {config['split']} split has only {stats.images} images, fewer than --stat_images="
              f"{config['stat_images']})")
    print(f"wrote feature maps of {image_limit} images to {os.path.join(out_dir, 'feature_maps')}/ and "
          f"{os.path.join(out_dir, 'feature_maps_visualization')}/, the table to "
          f"{os.path.join(out_dir, 'non_positive_stats.txt')}")
    return rows
