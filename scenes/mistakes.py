"""Where a model goes wrong, from its score table: the misclassified images and the confused classes."""
import numpy as np
import pandas as pd


def mistakes_table(scores, class_names):
    """Every misclassified image of a score table (path, label, one score per class), most confident
    first: path, label and prediction by name, the prediction's score as ``confidence``, each class's
    score. Equal confidences keep the table's order."""
    class_names = list(class_names)
    array = scores[class_names].to_numpy(np.float64)
    labels, predicted = scores["label"].to_numpy(), array.argmax(axis=1)
    names = np.array(class_names, dtype=object)
    table = pd.DataFrame({"path": scores["path"].to_numpy(), "label": names[labels],
                          "prediction": names[predicted], "confidence": array.max(axis=1)})
    table = pd.concat([table, scores[class_names].reset_index(drop=True)], axis=1)[predicted != labels]
    return table.sort_values("confidence", ascending=False, kind="stable").reset_index(drop=True)


def confused_pairs(confusion, class_names, count):
    """The ``count`` largest off-diagonal cells of a confusion matrix (rows = true class), largest
    first: dicts of ``true``, ``predicted``, ``count``, ``share`` (of the true class's images) and
    ``reverse`` (the count the other way round). Cells of zero are left out."""
    confusion = np.asarray(confusion)
    cells = [(int(confusion[t, p]), t, p) for t in range(len(confusion)) for p in range(len(confusion))
             if t != p and confusion[t, p] > 0]
    cells.sort(key=lambda cell: (-cell[0], cell[1], cell[2]))
    return [{"true": class_names[t], "predicted": class_names[p], "count": n,
             "share": n / confusion[t].sum(), "reverse": int(confusion[p, t])} for n, t, p in cells[:count]]
