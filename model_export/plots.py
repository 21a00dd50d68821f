"""The training curve and the confusion matrix as PNG files in the model directory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from model_export.train import History  # noqa: E402


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
