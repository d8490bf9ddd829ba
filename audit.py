"""Audit a run's data: likely label errors, near-copies and outliers, found with cleanlab from the
trained model, and a corrections file to act on them.

    python audit.py checkpoints/default                        # -> results/audit/default/
    python audit.py checkpoints/default/best.pth --train_probs=in_sample
    python data_handling.py --corrections=results/audit/default/corrections_suggested.csv  # after review

Every image of the run's split (train, validation, test) gets its penultimate features and
out-of-sample class probabilities: the run's own for validation and test, which it never trained
on; for training images, as --train_probs says (scenes/audit.py explains each way). Written to
--out_dir:

- label_issues.csv: path (relative to the data root), split, label, suggested, score (the
  probability of the given class), suggested_score; the images cleanlab flags, most suspicious first;
- near_copies.csv: groups of near-copies by their features, across splits (a leak) first;
- outliers.csv: images far from every other in feature space, most atypical first;
- corrections_suggested.csv: the top suspects relabelled to the suggested class, to review and
  apply with data_handling.py --corrections=FILE;
- audit.md with galleries (PNG) of each, and the test metrics without the suspected test label
  errors as a what-if beside the real ones.

The audit refuses a split other than the one the run was trained on (its rows' digest), since a
model scoring images it trained on would hide their label errors.
"""
import os

from scenes import cli
from scenes.audit import check_folds, checkpoint_of, extract, find_issues, out_of_sample, read_run_split
from scenes.audit_report import write_report
from scenes.checkpoints import load_checkpoint
from scenes.files import ensure_folder
from scenes.outputs import check_output_folder
from scenes.runtime import runtime

# --- settings ---
out_dir = ""  # where the audit's files go; "" = results/audit/<run>
splits_dir = ""  # folder of the run's split CSVs; "" = where the run was trained on them
data_root = ""  # folder of class sub-folders; "" = the one the split was made from
train_probs = "cv_features"  # how training images get out-of-sample scores [one of cv_features, trainings, in_sample]
folds = 5  # K of the cross-validation or of the trainings [>= 2]
fold_epochs = 0  # epochs of each of --train_probs=trainings; 0 = as many as the run planned [>= 0]
near_copy_threshold = 0.13  # near-copies: feature distance < this x the median nearest-neighbour one [> 0 and <= 1]
gallery = 24  # images per gallery (per split for label errors; near-copy sets across splits) [>= 0]
suggest = 50  # most suspicious labels written to corrections_suggested.csv [>= 0]
batch_size = 256  # images per batch of the forward pass [>= 1]
loader = "cached"  # cached: decoded once into a uint8 file; plain: PIL per item [one of cached, plain]
cache_dir = "cache"  # where the cached loader keeps decoded images
device = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
precision = "auto"  # auto: bf16 where the hardware is fast at it [one of auto, bf16, fp32]
seed = 0  # seeds the cross-validation folds [>= 0]
# --- end of settings ---


def audit(argument, settings, log=print):
    """Audit the run a command-line argument names; returns (out_dir, tables, what-if)."""
    path, run = checkpoint_of(argument)
    checkpoint = load_checkpoint(path)
    split = read_run_split(checkpoint, path, settings, run, log)
    check_folds(split, checkpoint["config"]["class_names"], settings)
    out_dir = settings["out_dir"] or os.path.join("results", "audit", run)
    check_output_folder(out_dir, "out_dir", split.root)
    ensure_folder(out_dir, "out_dir", create=False)
    rt = runtime(settings["device"], settings["precision"])
    log(f"auditing run {run} ({path}, epoch {checkpoint['epoch']}) on {len(split.contents)} images under {split.root}")
    data = out_of_sample(extract(checkpoint, path, split, settings, rt, log), settings, out_dir, log)
    findings = find_issues(data, settings, log)
    tables, whatif = write_report(run, path, checkpoint["epoch"], data, findings, settings, out_dir)
    issues, copies, outliers = tables
    log(f"{len(issues)} suspected label errors, {copies['group'].nunique()} near-copy groups "
        f"({copies.drop_duplicates('group')['across_splits'].sum()} across splits), {len(outliers)} outliers; "
        f"see {os.path.join(out_dir, 'audit.md')}")
    return out_dir, tables, whatif


def main(argv=None):
    config, _, positionals = cli.parse(__file__, __doc__, argv, positional=True)
    if len(positionals) != 1:
        raise cli.UserError("name one run folder or checkpoint, as python audit.py checkpoints/default.")
    return audit(positionals[0], config)


if __name__ == "__main__":
    cli.run(main)
