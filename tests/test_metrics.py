import numpy as np
import pytest

from training.metrics import classification_report, confusion_matrix, format_report


def test_report_by_hand():
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3, 3])
    p = np.array([0, 0, 1, 1, 1, 2, 0, 2, 3, 2])
    r = classification_report(y, p)
    assert r["accuracy"] == pytest.approx(7 / 10)
    g = r["per_class"]["glioma"]
    assert g["precision"] == pytest.approx(2 / 3) and g["recall"] == pytest.approx(2 / 3) and g["support"] == 3
    m = r["per_class"]["meningioma"]
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == 1.0
    pit = r["per_class"]["pituitary"]
    assert pit["precision"] == 1.0 and pit["recall"] == 0.5 and pit["f1"] == pytest.approx(2 / 3)
    assert r["confusion_matrix"][2] == [1, 0, 2, 0]
    assert r["macro_avg"]["recall"] == pytest.approx((2 / 3 + 1 + 2 / 3 + 0.5) / 4)
    assert r["weighted_avg"]["recall"] == pytest.approx(r["accuracy"])


def test_never_predicted_class_is_zero_not_nan():
    r = classification_report([0, 1, 2, 3], [0, 0, 0, 0])
    assert r["per_class"]["notumor"]["precision"] == 0.0
    assert "notumor" in format_report(r, "t")


def test_confusion_matrix_counts():
    cm = confusion_matrix(np.array([0, 1, 1]), np.array([1, 1, 1]), 4)
    assert cm.sum() == 3 and cm[1, 1] == 2 and cm[0, 1] == 1
