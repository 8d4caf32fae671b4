"""Predictions -> the seed's macro-metric row (Accuracy, Precision, Recall, F1 Score; scikit-learn)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

ACCURACY, F1 = "Accuracy", "F1 Score"  # the two the verdict and the short tables name
COLUMNS = (ACCURACY, "Precision", "Recall", F1)


def macro_row(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy and the macro averages of precision, recall and F1 over the ten classes."""
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="macro", labels=list(range(10)),
                                                 zero_division=0)
    return {"Accuracy": float(accuracy_score(y_true, y_pred)), "Precision": float(p), "Recall": float(r),
            "F1 Score": float(f)}


def confusion(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """10x10 confusion matrix (rows: true class, columns: predicted)."""
    return confusion_matrix(y_true, y_pred, labels=list(range(10)))
