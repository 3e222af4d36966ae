"""The report's figures (matplotlib, Agg): one PNG per setting and kind, from the variants'
recorded results. Each function returns the file name it wrote, relative to `folder`."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_curve

from modules import contract as C
from modules.calibration import expected_calibration_error, uncalibrated

Rows = dict[str, list[dict]]  # row label ("ROI on, SMOTE on") -> that row's results, by seed


def _positive(result: dict, kind: str = "deployable") -> tuple[np.ndarray, np.ndarray]:
    """(is malignant [n], calibrated P(malignant) [n]) of one run's test split."""
    per = result["results"]["per_image"]
    labels = np.asarray(per["label"]) == C.POSITIVE_LABEL
    return labels.astype(int), np.asarray(per[kind][C.PROBABILITIES])[:, C.POSITIVE_LABEL]


def _save(fig, folder: str, name: str) -> str:
    fig.tight_layout()
    fig.savefig(os.path.join(folder, name), dpi=110)
    plt.close(fig)
    return name


def roc_curves(rows: Rows, folder: str, slug: str) -> str:
    """Malignant against the rest, without masks; one colour per row, one line per seed."""
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    for colour, (row, results) in zip(plt.cm.tab10.colors, rows.items(), strict=False):
        for k, result in enumerate(results):
            labels, scores = _positive(result)
            if labels.min() == labels.max():
                continue
            fpr, tpr, _ = roc_curve(labels, scores)
            auc = result["results"]["metrics"]["overall"]["auc"]
            ax.plot(
                fpr,
                tpr,
                color=colour,
                alpha=0.85,
                label=f"{row} (AUC {auc:.3f})" if k == 0 else None,
            )
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC, malignant, without masks")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, folder, f"roc_{slug}.png")


def reliability(rows: Rows, folder: str, slug: str) -> str:
    """Observed malignant rate against calibrated P(malignant), and against the probability
    before temperature scaling, pooled over seeds; the dashed line is perfect calibration."""
    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3.3), squeeze=False)
    for ax, (row, results) in zip(axes[0], rows.items(), strict=True):
        labels, calibrated, raw = [], [], []
        for result in results:
            y, p = _positive(result)
            probs = np.asarray(result["results"]["per_image"]["deployable"][C.PROBABILITIES])
            before = uncalibrated(probs, result["info"]["decision"]["temperature"])
            labels.append(y), calibrated.append(p), raw.append(before[:, C.POSITIVE_LABEL])
        y = np.concatenate(labels)
        for scores, name, marker in (
            (np.concatenate(raw), "before", "s"),
            (np.concatenate(calibrated), "calibrated", "o"),
        ):
            table = expected_calibration_error(y, scores)
            xs = [b["predicted"] for b in table["reliability"]]
            ys = [b["observed"] for b in table["reliability"]]
            ax.plot(xs, ys, marker=marker, label=f"{name} (ECE {table['ece']:.3f})")
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), title=row, xlabel="P(malignant)")
        ax.title.set_fontsize(8)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("observed malignant rate")
    return _save(fig, folder, f"reliability_{slug}.png")


def confusion_matrices(rows: Rows, folder: str, slug: str, names: list[str]) -> str:
    """The first seed's served calls without masks: rows true class, columns called."""
    fig, axes = plt.subplots(1, len(rows), figsize=(2.9 * len(rows), 2.9), squeeze=False)
    for ax, (row, results) in zip(axes[0], rows.items(), strict=True):
        per = results[0]["results"]["per_image"]
        matrix = np.zeros((len(names), len(names)), dtype=int)
        np.add.at(matrix, (np.asarray(per["label"]), np.asarray(per["deployable"][C.CLASS_ID])), 1)
        ax.imshow(matrix, cmap="Blues")
        for (i, j), n in np.ndenumerate(matrix):
            ax.text(j, i, str(n), ha="center", va="center", fontsize=9)
        ax.set_xticks(range(len(names)), names, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_title(row, fontsize=8)
        ax.set_xlabel("called")
    axes[0][0].set_ylabel("true")
    return _save(fig, folder, f"confusion_{slug}.png")


def training_curves(rows: Rows, folder: str, slug: str) -> str:
    """Train and eval loss per epoch, every seed."""
    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3.0), squeeze=False)
    for ax, (row, results) in zip(axes[0], rows.items(), strict=True):
        for k, result in enumerate(results):
            history = result["info"]["history"] or {}
            for key, style in (("loss", "-"), ("val_loss", "--")):
                if key in history:
                    ax.plot(
                        history[key],
                        style,
                        color=plt.cm.tab10.colors[k % 10],
                        label=f"{key} seed {result['variant']['seed']}",
                    )
        ax.set(title=row, xlabel="epoch")
        ax.title.set_fontsize(8)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("loss")
    return _save(fig, folder, f"training_{slug}.png")
