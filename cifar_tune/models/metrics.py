"""Predictions -> the seed's macro-metric row (Accuracy, Precision, Recall, F1 Score; scikit-learn)."""

from __future__ import annotations

import numpy as np

# scikit-learn is imported where a row is computed: the column names are read by processes that compute none
# (a refused command pays no scikit-learn import, ~1 CPU s here)

ACCURACY, F1 = "Accuracy", "F1 Score"  # the two the verdict and the short tables name
COLUMNS = (ACCURACY, "Precision", "Recall", F1)


def macro_row(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy and the macro averages of precision, recall and F1 over the ten classes."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="macro", labels=list(range(10)),
                                                 zero_division=0)
    return {"Accuracy": float(accuracy_score(y_true, y_pred)), "Precision": float(p), "Recall": float(r),
            "F1 Score": float(f)}


def confusion(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """10x10 confusion matrix (rows: true class, columns: predicted)."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(y_true, y_pred, labels=list(range(10)))
