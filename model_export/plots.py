"""The training curve, the confusion matrix and the reliability diagram as PNG files in the model
directory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt  # noqa: E402

if TYPE_CHECKING:
    from model_export.calibrate import Reliability
    from model_export.train import History


def training_curve(history: History, path: Path) -> None:
    epochs = list(range(1, len(history.train_loss) + 1))
    fig, loss_axis = plt.subplots(figsize=(6, 4), dpi=120)
    loss_axis.plot(epochs, history.train_loss, "o-", color="tab:red", label="train loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("train loss", color="tab:red")
    loss_axis.set_xticks(epochs)
    acc_axis = loss_axis.twinx()
    acc_axis.plot(epochs, history.dev_accuracy, "s-", color="tab:blue", label="dev accuracy")
    acc_axis.set_ylabel("dev accuracy", color="tab:blue")
    acc_axis.axvline(history.best_epoch, color="grey", linestyle=":", label="kept epoch")
    fig.legend(loc="lower center", ncol=3, fontsize="small")
    loss_axis.set_title("Training curve")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def confusion_matrix(confusion: Sequence[Sequence[int]], labels: Sequence[str], path: Path) -> None:
    fig, axis = plt.subplots(figsize=(4.5, 4), dpi=120)
    image = axis.imshow(confusion, cmap="Blues")
    axis.set_xticks(range(len(labels)), labels)
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    peak = max(max(row) for row in confusion) or 1
    for i, row in enumerate(confusion):
        for j, count in enumerate(row):
            colour = "white" if count > peak / 2 else "black"
            axis.text(j, i, str(count), ha="center", va="center", color=colour)
    axis.set_title("Confusion matrix (test split)")
    fig.colorbar(image, ax=axis)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def reliability_diagram(before: Reliability, after: Reliability, temperature: float, path: Path) -> None:
    """Accuracy against confidence per bin on dev, before and after temperature scaling."""
    fig, axis = plt.subplots(figsize=(5, 4.5), dpi=120)
    axis.plot([0.5, 1.0], [0.5, 1.0], color="grey", linestyle=":", label="perfectly calibrated")
    for curve, style, name in ((before, "o--", "before"), (after, "s-", f"after (T = {temperature:.2f})")):
        pairs = zip(curve.confidence, curve.accuracy, strict=True)
        points = [(c, a) for c, a in pairs if c is not None and a is not None]
        axis.plot([c for c, _ in points], [a for _, a in points], style, label=f"{name}: ECE {curve.ece:.3f}")
    axis.set_xlabel("score of the predicted label (mean in its bin)")
    axis.set_ylabel("share of those predictions that were right")
    axis.set_xlim(0.5, 1.0)
    axis.set_ylim(0.3, 1.0)
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small", loc="upper left")
    axis.set_title("Reliability on dev")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
