"""The data audit of a trained run: out-of-sample class probabilities and penultimate features for
every image of its split, and from them, with cleanlab, the likely label errors, the near-copies
and the outliers.

Validation and test images were never trained on, so the run's own softmax scores serve. Training
images need scores from a model that did not see them (``train_probs``):

- ``cv_features`` (default): K-fold cross-validated logistic regression on the run's penultimate
  features scaled to unit length (they come from the forward pass the audit makes anyway, so this
  adds about a second);
  the features were learnt on those images, so a memorised wrong label can still pull them;
- ``trainings``: K short trainings of the run's recipe, each without one fold of the training split,
  which then scores that fold (K trainings of (K-1)/K of the images: for a GPU);
- ``in_sample``: the run's own scores of its training images, seen in training: a baseline.

cleanlab's core API is used rather than ``Datalab``: Datalab needs the ``datasets`` package
(``cleanlab[datalab]``) and would pool all splits into one set of per-class thresholds, while each
split's probabilities here have their own source. Label issues are ``filter.find_label_issues``
(confident learning, pruned by noise rate) per split, ranked by ``rank.get_label_quality_scores``
(self-confidence: the probability of the given class); outliers are ``outlier.OutOfDistribution``
on the features, flagged by Datalab's rule (mean distance to the 10 nearest neighbours above Q3 +
1.7 IQR); near-copies are pairs of images whose cosine distance of features is below a fraction of
the median nearest-neighbour distance (Datalab's ``near_duplicate`` rule, 0.13), grouped.
"""
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.stats import iqr
from torch import nn
from tqdm import tqdm

from scenes.checkpoints import check_class_names, load_checkpoint, model_from_checkpoint, verifiable
from scenes.cli import script_defaults
from scenes.cli import UserError
from scenes.loaders import eval_loader
from scenes.metrics import softmax_scores
from scenes.models import fold_batch_norms
from scenes.runtime import prepare_model, runtime
from scenes.provenance import split_problem, unverified_note
from scenes.splits import SPLITS, read_split, read_split_info, split_csv, split_csvs, write_split

TRAIN_PROBS = ("cv_features", "trainings", "in_sample")
NEIGHBOURS = 10  # as cleanlab's OutOfDistribution and Datalab use
OUTLIER_IQR = 1 / 0.37037 - 1  # Datalab's default outlier threshold, as a multiple of the IQR


@dataclass
class AuditData:
    """Every image of a run's split, in split order: where it is and what the audit knows of it."""
    root: str
    class_names: list
    paths: list = field(default_factory=list)  # relative to root
    splits: list = field(default_factory=list)
    labels: np.ndarray = None
    features: np.ndarray = None  # (N, D) penultimate features
    probs: np.ndarray = None  # (N, C) out-of-sample class probabilities
    model_probs: np.ndarray = None  # (N, C) the run's own probabilities (in-sample for training images)
    run_config: dict = None  # the run's config, for trainings of its recipe
    contents: dict = None  # {path: sha256} as the split recorded them
    planned_epochs: int = 0
    seconds: dict = field(default_factory=dict)

    def of(self, split):
        """The indices of one split's images."""
        return np.flatnonzero(np.asarray(self.splits) == split)


# ---------------------------------------------------------------------------------------------
# The run and its split

def checkpoint_of(argument):
    """The checkpoint a command-line argument names: a .pth file, or a run folder's best.pth (else
    last.pth); returns (path, run name)."""
    if os.path.isfile(argument):
        return argument, os.path.basename(os.path.dirname(os.path.abspath(argument)))
    for name in ("best.pth", "last.pth"):
        if os.path.isfile(os.path.join(argument, name)):
            return os.path.join(argument, name), os.path.basename(os.path.abspath(argument))
    if os.path.isdir(argument):
        raise UserError(f"{argument!r} holds no best.pth or last.pth; name a run folder such as "
                        "checkpoints/default.")
    raise UserError(f"checkpoint {argument!r} does not exist; name a run folder such as checkpoints/default.")


def split_files(config, splits_dir, name):
    """{split: CSV} of the run: its own CSVs, or those in ``splits_dir``; a split that is gone is refused."""
    csvs = {split: split_csv(splits_dir, split) if splits_dir else config.get(f"{split}_csv") for split in SPLITS}
    gone = [f"{split} ({path})" for split, path in csvs.items() if not path or not os.path.isfile(path)]
    if gone:
        where = f"in {splits_dir!r}" if splits_dir else "where the run was trained"
        raise UserError(f"the split of run {name} is not {where}: {', '.join(gone)} missing; name the folder "
                        "that holds it with --splits_dir=DIR (or make it again with the same folder and seed).")
    return csvs


@dataclass
class RunSplit:
    """The split a run was trained on, as the audit reads it."""
    root: str  # the data root
    rows: dict  # {split: (csv, [(relative_path, label)])}
    contents: dict  # {relative_path: sha256}, as the split recorded them


def read_run_split(checkpoint, path, settings, name, log=print):
    """The ``RunSplit`` of a run, checked to be the split it was trained on, images included (``scenes.provenance``), so no image
    is scored by a model that saw it."""
    config = checkpoint["config"]
    folder = os.path.dirname(split_files(config, settings["splits_dir"], name)["train"])
    info = read_split_info(folder)
    check_class_names(config["class_names"], info["class_names"], name, f"the split {folder!r}")
    root = settings["data_root"] or info["data_root"]
    split = read_split(folder, root, config["class_names"])
    problem = split_problem(checkpoint, split, folder)
    if problem:
        raise UserError(f"run {name} is not audited: {problem}; audit it on its own split (--splits_dir).")
    if not verifiable(checkpoint):
        log(unverified_note(path))
    rows = {name: (split_csv(folder, name), split.rows[name]) for name in SPLITS}
    return RunSplit(root, rows, split.info["sha256"])


# ---------------------------------------------------------------------------------------------
# Features and probabilities

@torch.inference_mode()
def features_and_probs(model, loader, rt, tta_flip, desc):
    """Penultimate features (the input of ``fc``) and softmax probabilities of every image of a loader.

    The network runs as a copy with BatchNorms folded and ``fc`` replaced by the identity, so one
    pass gives both; with ``tta_flip`` the probabilities average the mirror image's logits, as the
    run's evaluation does, and the features are the image's own."""
    body = fold_batch_norms(model)
    head, body.fc = body.fc, nn.Identity()
    features, logits = [], []
    for images, _ in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, disable=not sys.stderr.isatty()):
        with rt.autocast():
            batch_features = body(images)
            batch_logits = head(batch_features)
            if tta_flip:
                batch_logits = (batch_logits + head(body(images.flip(3)))) / 2
        features.append(batch_features.float().cpu())
        logits.append(batch_logits.float().cpu())
    return torch.cat(features).numpy(), softmax_scores(torch.cat(logits)).numpy()


def extract(checkpoint, path, split, settings, rt, log=print):
    """AuditData of every image of the run's split (``read_run_split``'s), with features and the run's
    own probabilities."""
    config = {**checkpoint["config"], "data_root": split.root, "loader": settings["loader"],
              "cache_dir": settings["cache_dir"]}
    data = AuditData(split.root, list(config["class_names"]), run_config=checkpoint["config"],
                     contents=split.contents, planned_epochs=checkpoint.get("planned_epochs") or config["epochs"])
    model = prepare_model(model_from_checkpoint(checkpoint, path), rt)
    features, probs, labels = [], [], []
    started = time.perf_counter()
    for name, (csv, split_rows) in split.rows.items():
        loader = eval_loader(config, csv, rt.device, settings["batch_size"], log=log)
        split_features, split_probs = features_and_probs(model, loader, rt, config.get("tta_flip", False),
                                                         f"features of {name}")
        features.append(split_features)
        probs.append(split_probs)
        data.paths += [rel for rel, _ in split_rows]
        data.splits += [name] * len(split_rows)
        labels += [label for _, label in split_rows]
    data.labels = np.asarray(labels)
    data.features, data.model_probs = np.concatenate(features), np.concatenate(probs)
    data.seconds["features"] = time.perf_counter() - started
    return data


def cross_validated_probs(features, labels, num_classes, folds, seed):
    """Out-of-fold probabilities of a logistic regression on the features scaled to unit length (their
    direction, as the cosine neighbours compare them), K folds stratified by class: every image is
    scored by a model fitted without it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer
    from threadpoolctl import threadpool_limits

    classifier = make_pipeline(Normalizer(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    with threadpool_limits(1):  # matrices this small: BLAS threads only wait on each other (40x slower here)
        probs = cross_val_predict(classifier, features, labels, cv=cv, method="predict_proba")
    full = np.zeros((len(labels), num_classes), dtype=np.float32)
    full[:, np.unique(labels)] = probs  # a class with no training image gets probability 0
    return full


def check_folds(split, class_names, settings):
    """Refuse, before any work, K folds that a class of the training split cannot fill (it needs K
    images); ``split`` as ``read_run_split`` gives it."""
    if settings["train_probs"] == "in_sample":
        return
    folds = settings["folds"]
    counts = np.bincount([label for _, label in split.rows["train"][1]], minlength=len(class_names))
    short = [f"{name} ({count})" for name, count in zip(class_names, counts) if 0 < count < folds]
    if short:
        raise UserError(f"--folds={folds} needs {folds} training images per class, but {', '.join(short)} "
                        f"{'has' if len(short) == 1 else 'have'} fewer; choose a smaller --folds or "
                        "--train_probs=in_sample.")


def training_probs(data, settings, work_dir, log=print):
    """The out-of-sample probabilities of the training images, as ``settings['train_probs']`` says."""
    train = data.of("train")
    method, started = settings["train_probs"], time.perf_counter()
    if method == "in_sample":
        probs = data.model_probs[train]
    elif method == "cv_features":
        log(f"cross-validating a logistic regression on the features of {len(train)} training images "
            f"({settings['folds']} folds) ...")
        probs = cross_validated_probs(data.features[train], data.labels[train], len(data.class_names),
                                      settings["folds"], settings["seed"])
    else:
        probs = trainings_probs(data, settings, work_dir, log)
    data.seconds["train_probs"] = time.perf_counter() - started
    return probs


def fold_numbers(labels, folds, seed):
    """Each training image's fold (0 to K-1), stratified by class and seeded."""
    from sklearn.model_selection import StratifiedKFold

    fold = np.zeros(len(labels), dtype=int)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for k, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        fold[held_out] = k
    return fold


def fold_config(data, k, fold, work, settings):
    """The run's recipe for the training without fold ``k``: a split in ``work`` whose training
    images are the other folds', validation the run's (to choose its weights), test fold ``k``."""
    train, validation = data.of("train"), data.of("validation")
    rows = {"train": train[fold != k], "validation": validation, "test": train[fold == k]}
    splits_dir = os.path.join(work, f"fold{k + 1}")
    sha256 = {data.paths[i]: data.contents[data.paths[i]] for indices in rows.values() for i in indices}
    write_split(splits_dir, {split: [(data.paths[i], int(data.labels[i])) for i in indices]
                             for split, indices in rows.items()}, data.class_names,
                {"data_root": data.root, "class_names": data.class_names, "sha256": sha256})
    run = data.run_config
    epochs = settings["fold_epochs"] or data.planned_epochs
    return {**script_defaults("train.py"), **run, "data_root": data.root, "splits_dir": splits_dir,
            **split_csvs(splits_dir), "checkpoints_dir": os.path.join(work, "checkpoints"), "run": f"fold{k + 1}",
            "restart": True, "epochs": epochs, "time_budget_min": 0.0, "cache_dir": os.path.join(work, "cache"),
            "loader": settings["loader"], "device": settings["device"], "precision": settings["precision"]}


def trainings_probs(data, settings, work_dir, log=print):
    """Probabilities of the training images from K trainings of the run's recipe, each without one
    fold, which then scores that fold with its best weights (chosen on the validation split). Each
    training's split, checkpoints and cache lie in a temporary folder under ``work_dir``, removed after it."""
    from scenes.training import train as train_run

    train = data.of("train")
    fold = fold_numbers(data.labels[train], settings["folds"], settings["seed"])
    probs = np.zeros((len(train), len(data.class_names)), dtype=np.float32)
    rt = runtime(settings["device"], settings["precision"])
    os.makedirs(work_dir, exist_ok=True)
    for k in range(settings["folds"]):
        with tempfile.TemporaryDirectory(prefix="audit-fold-", dir=work_dir) as work:
            config = fold_config(data, k, fold, work, settings)
            log(f"fold {k + 1}/{settings['folds']}: training on {int((fold != k).sum())} images, "
                f"{config['epochs']} epochs, to score the other {int((fold == k).sum())} ...")
            train_run(config)
            best = os.path.join(work, "checkpoints", config["run"], "best.pth")
            model = prepare_model(model_from_checkpoint(load_checkpoint(best), best), rt)
            loader = eval_loader(config, config["test_csv"], rt.device, settings["batch_size"], log=log)
            probs[fold == k] = features_and_probs(model, loader, rt, config.get("tta_flip", False),
                                                  f"scoring fold {k + 1}")[1]
    return probs


def out_of_sample(data, settings, work_dir, log=print):
    """``data.probs``: the run's own probabilities for validation and test, ``training_probs`` for train
    (``work_dir`` holds the trainings' files while they run)."""
    data.probs = data.model_probs.copy()
    data.probs[data.of("train")] = training_probs(data, settings, work_dir, log)
    return data


# ---------------------------------------------------------------------------------------------
# cleanlab

def label_issues(data):
    """Per image: whether cleanlab flags its label (per split) and its label quality score (the
    probability of its given class; low is suspicious)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    flagged, scores = np.zeros(len(data.labels), bool), np.zeros(len(data.labels))
    for split in SPLITS:
        rows = data.of(split)
        labels, probs = data.labels[rows], data.probs[rows]
        with warnings.catch_warnings():  # a class with few images in a small split is expected
            warnings.simplefilter("ignore")
            flagged[rows] = find_label_issues(labels, probs)
        scores[rows] = get_label_quality_scores(labels, probs, method="self_confidence")
    return flagged, scores


def neighbours(features):
    """cleanlab's OutOfDistribution scores of the features (low = atypical) and each image's nearest
    neighbours by cosine distance, itself left out: (scores, distances, indices)."""
    from cleanlab.outlier import OutOfDistribution

    k = min(NEIGHBOURS, len(features) - 1)
    ood = OutOfDistribution(params={"k": k})
    scores = ood.fit_score(features=features, verbose=False)
    distances, indices = ood.params["knn"].kneighbors()
    return scores, distances, indices


def outlier_flags(distances):
    """Datalab's rule: a mean distance to the nearest neighbours above Q3 + 1.7 IQR of them all."""
    mean = distances.mean(axis=1)
    return mean > np.percentile(mean, 75) + OUTLIER_IQR * iqr(mean)


def near_copy_groups(distances, indices, threshold):
    """Groups (sorted index lists, two or more) of images joined by a distance below ``threshold``
    times the median distance to the nearest neighbour; and that limit."""
    limit = threshold * max(float(np.median(distances[:, 0])), 1e-12)
    parent = list(range(len(distances)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(distances < limit)):
        parent[root(i)] = root(int(indices[i, j]))
    groups = {}
    for i in range(len(parent)):
        groups.setdefault(root(i), []).append(i)
    return [members for members in groups.values() if len(members) > 1], limit


@dataclass
class Findings:
    """What the audit found, per image of ``AuditData`` (arrays) and as near-copy groups."""
    flagged: np.ndarray
    label_scores: np.ndarray
    ood_scores: np.ndarray
    outliers: np.ndarray
    nearest: np.ndarray  # cosine distance to the nearest other image
    groups: list
    copy_limit: float


def find_issues(data, settings, log=print):
    """Label issues, outliers and near-copies of the audited data, with cleanlab."""
    started = time.perf_counter()
    log(f"ranking label issues and finding near-copies and outliers among {len(data.labels)} images ...")
    flagged, label_scores = label_issues(data)
    ood_scores, distances, indices = neighbours(data.features)
    groups, limit = near_copy_groups(distances, indices, settings["near_copy_threshold"])
    data.seconds["cleanlab"] = time.perf_counter() - started
    return Findings(flagged, label_scores, ood_scores, outlier_flags(distances), distances[:, 0], groups, limit)

