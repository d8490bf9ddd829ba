"""Classification metrics over a whole split: the one implementation training and evaluation share.

Per-class average precision is one-vs-rest on the softmax scores, exactly scikit-learn's
``average_precision_score``; mAP is their mean. Nothing here is averaged per batch.
"""
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, confusion_matrix


def classification_metrics(logits, targets, class_names):
    """Metrics of a split from its logits (N, C) and integer targets (N,): ``score_metrics`` of
    their softmax scores, plus ``loss`` (mean cross-entropy)."""
    logits, targets = logits.float(), targets.long()
    metrics = score_metrics(softmax_scores(logits).numpy(), targets.numpy(), class_names)
    return {"loss": float(F.cross_entropy(logits, targets)), **metrics}


def score_metrics(scores, labels, class_names):
    """Metrics of a split from its float32 softmax scores (N, C) and integer labels (N,).

    Returns plain values: ``accuracy``, ``mean_class_accuracy``, ``map``, per-class ``ap`` and
    ``class_accuracy`` (dicts keyed by class name; NaN for a class with no image in the split), and
    ``confusion`` (rows = true class, columns = predicted). Saved score files give back the same
    float32 scores, so metrics from them equal those computed at evaluation.
    """
    labels = np.asarray(labels)
    predictions = scores.argmax(axis=1)
    ap, class_accuracy = {}, {}
    for c, name in enumerate(class_names):
        positives = labels == c
        ap[name] = float(average_precision_score(positives, scores[:, c])) if positives.any() else float("nan")
        class_accuracy[name] = float((predictions[positives] == c).mean()) if positives.any() else float("nan")
    return {
        "accuracy": float((predictions == labels).mean()),
        "mean_class_accuracy": float(np.nanmean(list(class_accuracy.values()))),
        "map": float(np.nanmean(list(ap.values()))),
        "ap": ap,
        "class_accuracy": class_accuracy,
        "confusion": confusion_matrix(labels, predictions, labels=range(len(class_names))).tolist(),
    }


def softmax_scores(logits):
    return torch.softmax(logits.float(), dim=1)
