"""What the data audit writes: its tables (label_issues.csv, near_copies.csv, outliers.csv), the
corrections it suggests, its galleries and audit.md."""
import os

import numpy as np
import pandas as pd

from scenes.corrections import write_corrections
from scenes.figures import picture_rows
from scenes.files import write_figure, write_table, write_text
from scenes.images import load_image
from scenes.scoring import metrics_of_scores
from scenes.splits import SPLITS

COLUMNS = 6  # pictures per gallery row
MAX_SET = 6  # pictures shown of one near-copy set


def class_of(data, indices):
    return np.array(data.class_names, dtype=object)[indices]


def issue_table(data, findings):
    """label_issues.csv: the images cleanlab flags, most suspicious (lowest label quality) first."""
    rows = np.flatnonzero(findings.flagged)
    suggested = data.probs[rows].argmax(axis=1)
    table = pd.DataFrame({"path": np.asarray(data.paths, dtype=object)[rows],
                          "split": np.asarray(data.splits, dtype=object)[rows],
                          "label": class_of(data, data.labels[rows]), "suggested": class_of(data, suggested),
                          "score": findings.label_scores[rows],
                          "suggested_score": data.probs[rows, suggested]})
    return table.sort_values("score", kind="stable").reset_index(drop=True)


def copy_table(data, findings):
    """near_copies.csv: one row per image of each near-copy group; groups across splits (leaks)
    first, then across classes, then the largest."""
    def key(members):
        return (len({data.splits[i] for i in members}) == 1, len(set(data.labels[members])) == 1, -len(members))

    rows = []
    for number, members in enumerate(sorted(findings.groups, key=key), start=1):
        across_splits = len({data.splits[i] for i in members}) > 1
        across_classes = len(set(data.labels[members])) > 1
        rows += [{"group": number, "path": data.paths[i], "split": data.splits[i],
                  "label": data.class_names[data.labels[i]], "distance": findings.nearest[i],
                  "across_splits": across_splits, "across_classes": across_classes} for i in members]
    return pd.DataFrame(rows, columns=["group", "path", "split", "label", "distance", "across_splits",
                                       "across_classes"])


def outlier_table(data, findings):
    """outliers.csv: the images flagged as outliers, most atypical (lowest score) first."""
    rows = np.flatnonzero(findings.outliers)
    table = pd.DataFrame({"path": np.asarray(data.paths, dtype=object)[rows],
                          "split": np.asarray(data.splits, dtype=object)[rows],
                          "label": class_of(data, data.labels[rows]), "score": findings.ood_scores[rows]})
    return table.sort_values("score", kind="stable").reset_index(drop=True)


def test_whatif(data, findings):
    """The test metrics as they are, and (a what-if) without the suspected test label errors:
    ``(all, without, removed count)``, each from ``metrics_of_scores``."""
    test = data.of("test")
    scores = pd.DataFrame(data.model_probs[test], columns=data.class_names)
    scores.insert(0, "path", [data.paths[i] for i in test])
    scores.insert(1, "label", data.labels[test])
    keep = ~findings.flagged[test]
    return (metrics_of_scores(scores, data.class_names),
            metrics_of_scores(scores[keep].reset_index(drop=True), data.class_names), int((~keep).sum()))


def picture(data, path):
    return np.asarray(load_image(os.path.join(data.root, path)))


def gallery(data, items, title, path):
    """A PNG of ``[(relative path, caption)]``, ``COLUMNS`` a row; returns its file name, or None if empty."""
    if not items:
        return None
    pictures = [(picture(data, rel), caption) for rel, caption in items]
    rows = [pictures[i:i + COLUMNS] for i in range(0, len(pictures), COLUMNS)]
    write_figure(path, picture_rows(rows, title))
    return os.path.basename(path)


def short(path, width=34):
    return path if len(path) <= width else "..." + path[-width + 3:]


def issue_galleries(data, issues, count, out_dir):
    """One gallery per split of its ``count`` most suspicious labels: {split: file name or None}."""
    files = {}
    for split in SPLITS:
        top = issues[issues["split"] == split].head(count)
        items = [(row.path, f"{short(row.path)}\ngiven {row.label}, suggested {row.suggested}\n"
                            f"p(given) {row.score:.3f}") for row in top.itertuples()]
        files[split] = gallery(data, items, f"Suspected label errors in {split}: given and suggested class",
                               os.path.join(out_dir, f"label_issues_{split}.png"))
    return files


def copy_gallery(data, copies, count, out_dir):
    """The near-copy sets that cross splits, one set a row."""
    leaks = copies[copies["across_splits"]]
    groups = list(leaks.groupby("group", sort=False))[:count]
    if not groups:
        return None
    rows = [[(picture(data, row.path), f"{short(row.path)}\n{row.split}, {row.label}\ndistance {row.distance:.4f}")
             for row in members.head(MAX_SET).itertuples()] for _, members in groups]
    write_figure(os.path.join(out_dir, "near_copies_across_splits.png"),
                 picture_rows(rows, "Near-copies across splits (one set a row): a leak"))
    return "near_copies_across_splits.png"


def outlier_gallery(data, outliers, count, out_dir):
    items = [(row.path, f"{short(row.path)}\n{row.split}, {row.label}\nscore {row.score:.3f}")
             for row in outliers.head(count).itertuples()]
    return gallery(data, items, "Outliers: the most atypical images by their features",
                   os.path.join(out_dir, "outliers.png"))


def suggested_corrections(issues, count):
    """Rows of corrections_suggested.csv: the ``count`` most suspicious labels, relabelled to the
    suggested class, with the split, the given class and the score as notes."""
    return [(row.path, "relabel", row.suggested, row.split, row.label, f"{row.score:.4f}")
            for row in issues.head(count).itertuples()]


def write_tables(data, findings, out_dir, suggest):
    """The three CSVs and corrections_suggested.csv; returns the tables."""
    issues, copies, outliers = (table(data, findings) for table in (issue_table, copy_table, outlier_table))
    write_table(os.path.join(out_dir, "label_issues.csv"), issues, index=False, float_format="%.6g")
    write_table(os.path.join(out_dir, "near_copies.csv"), copies, index=False, float_format="%.6g")
    write_table(os.path.join(out_dir, "outliers.csv"), outliers, index=False, float_format="%.6g")
    write_corrections(os.path.join(out_dir, "corrections_suggested.csv"), suggested_corrections(issues, suggest),
                      notes=("split", "given", "score"))
    return issues, copies, outliers


METHODS = {"cv_features": "{folds}-fold cross-validated logistic regression on the run's penultimate features",
           "trainings": "{folds} short trainings of the run's recipe, each without one fold of the training split",
           "in_sample": "the run's own scores (in-sample: the model trained on these images; a baseline)"}


def metrics_table(whatif):
    """The real test metrics and the what-if beside them, as Markdown."""
    real, without, removed = whatif
    header = "| test split | images | accuracy | mean class accuracy | mAP |\n|---|---:|---:|---:|---:|"
    row = "| {} | {} | {accuracy:.4f} | {mean_class_accuracy:.4f} | {map:.4f} |"
    count = lambda metrics: int(np.sum(metrics["confusion"]))  # noqa: E731
    return "\n".join([header, row.format("**real** (every test image)", count(real), **real),
                      row.format(f"what-if: without the {removed} suspected label errors", count(without), **without)])


def counts_line(table, what):
    counts = table["split"].value_counts() if len(table) else {}
    return f"{len(table)} {what} ({', '.join(f'{split} {counts.get(split, 0)}' for split in SPLITS)})"


def copies_summary(copies, limit):
    """One paragraph on the near-copy groups: leaks, redundancy, conflicting labels."""
    groups = copies.drop_duplicates("group")
    leaks, conflicts = int(groups["across_splits"].sum()), int(groups["across_classes"].sum())
    redundant = int((~groups["across_classes"]).sum())
    return (f"{len(groups)} group(s) of near-copies ({len(copies)} images; cosine distance of features below "
            f"{limit:.4g}): **{leaks} across splits** (a leak: the same picture trained on and tested), "
            f"{redundant} within one class (redundancy), {conflicts} filed under two classes (one label is wrong).")


def image_line(name, alt):
    return f"![{alt}]({name})" if name else f"_({alt}: none)_"


def audit_markdown(run, checkpoint_path, epoch, data, settings, tables, whatif, limit, files):
    """audit.md: what was audited and how, the what-if beside the real test metrics, the galleries."""
    issues, copies, outliers = tables
    sizes = ", ".join(f"{split} {len(data.of(split))}" for split in SPLITS)
    seconds = ", ".join(f"{part} {value:.1f} s" for part, value in data.seconds.items())
    method = METHODS[settings["train_probs"]].format(folds=settings["folds"])
    lines = [f"# Data audit of run {run}", "",
             f"Checkpoint `{checkpoint_path}` (epoch {epoch}); data root `{data.root}`; images: {sizes}.",
             f"Probabilities of the validation and test images: the run's own. Of the training images: {method}.",
             f"Time: {seconds}.", "",
             "## Suspected label errors", "",
             f"{counts_line(issues, 'images')} flagged by cleanlab's confident learning, listed in `label_issues.csv`, "
             "most suspicious first (`score` is the probability of the given class). "
             "`corrections_suggested.csv` relabels the first of them to the suggested class: review it, change or "
             "delete rows (`drop` removes an image), then make the split with "
             "`python data_handling.py --corrections=FILE` and train again.", ""]
    for split in SPLITS:
        lines += [f"### {split}", "", image_line(files["issues"][split], f"suspected label errors in {split}"), ""]
    lines += ["## Test metrics: real, and a what-if without the suspected test label errors", "",
              "The first row is the run's test result. The second is **not a result**: it only shows how much "
              "of the gap the suspected test label errors could explain, if every one of them were wrong.", "",
              metrics_table(whatif), "",
              "## Near-copies", "", copies_summary(copies, limit), "See `near_copies.csv`.", "",
              image_line(files["copies"], "near-copies across splits"), "",
              "## Outliers", "", f"{counts_line(outliers, 'images')} far from their nearest neighbours in feature "
              "space (`outliers.csv`, lowest score first): pictures of none of the classes, or unusual ones.", "",
              image_line(files["outliers"], "outliers"), ""]
    return "\n".join(lines)


def write_report(run, checkpoint_path, epoch, data, findings, settings, out_dir):
    """Every output of the audit in ``out_dir``; returns (tables, what-if)."""
    tables = write_tables(data, findings, out_dir, settings["suggest"])
    count = settings["gallery"]
    files = {"issues": issue_galleries(data, tables[0], count, out_dir) if count else dict.fromkeys(SPLITS),
             "copies": copy_gallery(data, tables[1], count, out_dir) if count else None,
             "outliers": outlier_gallery(data, tables[2], count, out_dir) if count else None}
    whatif = test_whatif(data, findings)
    text = audit_markdown(run, checkpoint_path, epoch, data, settings, tables, whatif, findings.copy_limit, files)
    write_text(os.path.join(out_dir, "audit.md"), text)
    return tables, whatif
