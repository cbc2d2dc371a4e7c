"""QtModelsView: the table and card follow the registry it is given."""

from __future__ import annotations

import json

from PySide6.QtCore import Qt

from breakfix_desktop._qt.qt_models_view import COLUMNS, QtModelsView
from breakfix_desktop.core.model_registry import load_registry


def _row(view, row):
    return {name: view.table.item(row, col).text() for col, name in enumerate(COLUMNS)}


def test_lists_models_and_shows_selected_card(qtbot, make_models):
    reg = load_registry(make_models([("tiny-cnn", "classifier"), ("trigger-check", "detector")]))
    view = QtModelsView(reg)
    qtbot.addWidget(view)
    assert view.table.rowCount() == 2
    first = _row(view, 0)
    assert first["Name"] == "tiny-cnn" and first["Role"] == "classifier" and first["Status"] == "verified"
    assert first["Test acc."] == "90.0 %" and first["SHA-256"] == reg.models[0].sha256[:12] and first["Reason"] == ""
    assert "All 2 models verified" in view.banner.text()
    # the first row is selected; its card is shown as pretty JSON
    assert json.loads(view.card_view.toPlainText())["name"] == "tiny-cnn"
    view.table.selectRow(1)
    assert json.loads(view.card_view.toPlainText())["name"] == "trigger-check"
    assert "trigger-check" in view.card_title.text()
    assert view.select("tiny-cnn") and json.loads(view.card_view.toPlainText())["name"] == "tiny-cnn"
    assert not view.select("no-such-model") and view.selected_entry().name == "tiny-cnn"


def test_reloaded_registry_with_refused_model_updates_view(qtbot, make_models):
    folder = make_models([("tiny-cnn", "classifier"), ("trigger-check", "detector")])
    view = QtModelsView(load_registry(folder))
    qtbot.addWidget(view)
    view.table.selectRow(1)

    onnx_file = folder / "trigger-check.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:-1])
    view.set_registry(load_registry(folder))

    refused = _row(view, 1)
    assert refused["Status"] == "refused" and str(onnx_file) in refused["Reason"]
    assert "1 model REFUSED" in view.banner.text()
    assert view.table.item(1, 2).foreground().color().name() == "#9b1c1c"
    # selection kept on the same model; its card view leads with the refusal
    assert view.selected_entry().name == "trigger-check"
    assert view.card_view.toPlainText().startswith("REFUSED:")
    assert "(REFUSED)" in view.card_title.text()
    assert view.table.item(1, 0).data(Qt.UserRole) == "trigger-check"


def test_empty_registry_explains_where_models_go(qtbot, tmp_path):
    view = QtModelsView(load_registry(tmp_path))
    qtbot.addWidget(view)
    assert view.table.rowCount() == 0
    assert "No models shipped" in view.banner.text() and str(tmp_path) in view.banner.text()
    assert view.card_view.toPlainText() == "" and view.selected_entry() is None


def test_card_summary_and_warnings_above_the_json(qtbot, make_models):
    folder = make_models([("tiny-cnn", "classifier"), ("trigger-check", "detector")])
    card_path = folder / "trigger-check.card.json"
    card = json.loads(card_path.read_text())
    card["threshold"] = 0.5
    card["metrics"] = {"test": {"recall": 0.9, "precision": 0.9, "false_positive_rate": 0.02},
                       "recall_per_size": {"small": {"recall": 0.9, "in_training": True},
                                           "large": {"recall": 0.4, "in_training": False}}}
    card_path.write_text(json.dumps(card))  # the card is not hashed: only the ONNX file is
    view = QtModelsView(load_registry(folder))
    qtbot.addWidget(view)
    assert "Testing accuracy 90.0 %" in view.card_summary.text() and "Warning" not in view.card_summary.text()
    view.table.selectRow(1)
    text = view.card_summary.text()
    assert "Flags a scan when its score is &gt;= 0.5" in text and "large 40.0 % (not trained on)" in text
    assert "Warning: Misses patterns of some sizes: recall large 40.0 %" in text
    assert json.loads(view.card_view.toPlainText())["metrics"]["recall_per_size"]["large"]["recall"] == 0.4


def test_accuracy_under_attack_in_the_table_and_the_card(qtbot, make_models):
    folder = make_models([("tiny-cnn", "classifier"), ("trigger-check", "detector")])
    card_path = folder / "tiny-cnn.card.json"
    card = json.loads(card_path.read_text())
    card["metrics"]["robustness"] = {"model": [
        {"attack": "PGD", "eps": 0.01, "alpha": 0.001, "steps": 5, "label": "PGD eps 0.01, alpha 0.001, 5 steps",
         "accuracy": 0.906, "n": 1311, "scans": "all Testing scans"},
        {"attack": "worst case", "eps": 0.01, "alpha": 0.0025, "steps": 20, "restarts": 2, "accuracy": 0.42, "n": 128,
         "label": "worst case of FGSM and 2 x PGD-20 (eps 0.01, alpha 0.0025)", "scans": "stratified Testing subset"}]}
    card_path.write_text(json.dumps(card))
    view = QtModelsView(load_registry(folder))
    qtbot.addWidget(view)
    col = COLUMNS.index("Under attack")
    assert view.table.item(0, col).text() == "42.0 %"  # the worst case, not the weaker 5-step PGD
    assert "worst case of FGSM and 2 x PGD-20" in view.table.item(0, col).toolTip()
    assert view.table.item(1, col).text() == "-"  # the detector has no robustness rows
    text = view.card_summary.text()
    assert "PGD eps 0.01, alpha 0.001, 5 steps 90.6 %" in text and "(128 scans)" in text
    assert "Warning: Under the strongest attack measured" in text and "only 42.0 % of its answers hold" in text


def test_every_shipped_model_is_visible_without_scrolling(qtbot, make_models):
    reg = load_registry(make_models([(f"model-{i}", "classifier") for i in range(8)]))
    view = QtModelsView(reg)
    qtbot.addWidget(view)
    view.resize(1400, 900)
    view.show()
    qtbot.waitExposed(view)
    assert view.table.rowCount() == 8
    last = view.table.visualItemRect(view.table.item(7, 0))
    assert view.table.viewport().rect().contains(last)  # the 8th row is on screen
    assert view.table.verticalScrollBar().maximum() == 0  # nothing to scroll to
    assert view.card_view.height() > 200  # and the card still has room
