"""The Drills page: choose a recipe, fill its generated form, launch, watch live curves, read results.

``QtDrillsView(studio)`` is a thin view over a Qt-free
:class:`~breakfix_desktop.core.drills.DrillStudio`:

* left: recipe (backend commands that exist today, catalog attacks and the DrunkOptimizer sweep,
  the latter two honestly marked as waiting for ``python -m training drill``), the run settings
  and attack parameter forms generated from the catalog (types, ranges, help; invalid values are
  shown in red and refused before launch), data folder, device, role on the plots, Launch;
* right: progress of the running run(s) with Cancel, live curves (:class:`QtCurvesView`), and tabs
  with the queue/history table (plot, re-run, cancel, baseline, delete), the results
  (:class:`QtResultsView`) and the selected run's event log.

Runs go through :class:`QtDrillRunner` (one QProcess per device at a time).  On a screening-only
install (no torch) the page says how to install the training extra instead of failing.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from PySide6.QtCore import QBuffer, QByteArray, QCoreApplication, QIODevice, Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QCloseEvent, QColor, QPainter, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..core.attack_catalog import ParamSpec
from ..core.drills import (
    INSTALL_HINT,
    PATH_SETTINGS,
    ROLE_COLORS,
    ROLE_TITLES,
    ROLES,
    DrillRun,
    DrillStudio,
    FormError,
    ParamForm,
    Recipe,
)
from .qt_backend_job import BACKEND_PREFIX, QtDrillRunner, QtRecipeProbe
from .qt_curves import QtCurvesView
from .qt_results_view import QtResultsView

RUN_COLUMNS = ("Plot", "#", "Run", "Role", "Device", "Status", "Test acc.", "Started", "Time")
DEVICES = ("auto", "cpu", "cuda")
STATUS_COLOURS = {"ok": "#1e6b3a", "failed": "#9b1c1c", "crashed": "#9b1c1c", "cancelled": "#8a6d00",
                  "interrupted": "#8a6d00", "running": "#1f5fa0", "queued": "#4a5568"}
_ERROR_STYLE = "border: 1px solid #c53030; background: #fff5f5;"
_BANNER_INFO = "padding: 6px 8px; border-radius: 4px; background: #eef2f7; color: #243447;"
_BANNER_BAD = "padding: 8px; border-radius: 4px; background: #fff4e5; color: #7a4100; font-weight: bold;"


def _acc_text(run: DrillRun) -> str:
    """The history table's test accuracy: the run's, or for a drill that trained several models
    the last one's, named (every model's is in the tooltip)."""
    acc = run.final_test_acc
    if acc is None:
        return "-"
    series = run.final_series
    return f"{100 * acc:.1f} %" + (f" ({series})" if series else "")


def _acc_tooltip(run: DrillRun) -> str:
    accs = {name: acc for name, acc in run.final_test_accs().items() if name}
    if not accs:
        return ""
    lines = [f"{name}: {'-' if acc is None else f'{100 * acc:.1f} %'}" for name, acc in accs.items()]
    return "Final test accuracy per model:\n" + "\n".join(lines)


class QtThinProgress(QWidget):
    """A thin progress bar.  Unlike QProgressBar, whose setValue() repaints synchronously (~2 ms a
    call under load, at every 10 Hz tick), a new value only schedules a repaint, drawn with the
    rest of the frame."""

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self._min, self._max, self._value = 0, 100, 0
        self.setMinimumHeight(6)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)

    def setRange(self, minimum: int, maximum: int) -> None:  # noqa: N802 - Qt naming
        self._min, self._max = minimum, max(maximum, minimum + 1)
        self.update()

    def setValue(self, value: int) -> None:  # noqa: N802 - Qt naming
        value = max(self._min, min(self._max, int(value)))
        if value != self._value:
            self._value = value
            self.update()

    def value(self) -> int:
        return self._value

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt override
        p = QPainter(self)
        r = self.rect()
        p.fillRect(r, QColor("#e2e8f0"))
        done = int(r.width() * (self._value - self._min) / (self._max - self._min))
        if done > 0:
            p.fillRect(r.adjusted(0, 0, done - r.width(), 0), QColor("#1f5fa0"))


class QtParamField(QWidget):
    """One generated form field: the editor for a :class:`ParamSpec` and its validation state."""

    changed = Signal(str)

    def __init__(self, form: ParamForm, spec: ParamSpec, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.form, self.spec = form, spec
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        tip = f"{spec.help}\nAllowed: {spec.allowed()}. Default: {spec.default!r}."
        if spec.type == "bool":
            self.editor = QCheckBox()
            self.editor.setChecked(form.text(spec.name) == "true")
            self.editor.toggled.connect(lambda on: self._set("true" if on else "false"))
        elif spec.type == "choice":
            self.editor = QComboBox()
            if spec.nullable:
                self.editor.addItem("(none)", "")
            for choice in spec.choices:
                self.editor.addItem(str(choice), str(choice))
            self.editor.setCurrentIndex(max(self.editor.findData(form.text(spec.name)), 0))
            self.editor.currentIndexChanged.connect(lambda *_: self._set(self.editor.currentData()))
        else:
            self.editor = QLineEdit(form.text(spec.name))
            self.editor.setPlaceholderText(spec.allowed())
            self.editor.textChanged.connect(self._set)
        self.editor.setToolTip(tip)
        self.editor.setObjectName(f"param_{spec.name}")
        row.addWidget(self.editor, 1)
        if spec.name in PATH_SETTINGS:
            browse = QPushButton("Browse...")
            browse.clicked.connect(self._browse)
            row.addWidget(browse)
        self.error: Optional[str] = form.error(spec.name)
        self._show_state()

    def set_value(self, text: str) -> None:
        """Set the value as a user would (tests, re-run)."""
        if isinstance(self.editor, QCheckBox):
            self.editor.setChecked(str(text).lower() in ("true", "1", "yes", "on"))
        elif isinstance(self.editor, QComboBox):
            index = self.editor.findData(str(text))
            if index < 0:
                self._set(str(text))
            else:
                self.editor.setCurrentIndex(index)
        else:
            self.editor.setText(str(text))

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, self.spec.name, "", "Models (*.pt *.onnx);;All files (*)")
        if path:
            self.set_value(path)

    def _set(self, text: str) -> None:
        self.error = self.form.set_text(self.spec.name, text)
        self._show_state()
        self.changed.emit(self.spec.name)

    def _show_state(self) -> None:
        self.editor.setStyleSheet(_ERROR_STYLE if self.error else "")
        tip = f"{self.spec.help}\nAllowed: {self.spec.allowed()}. Default: {self.spec.default!r}."
        self.editor.setToolTip(f"{self.error}\n\n{tip}" if self.error else tip)


class QtParamFormView(QGroupBox):
    """A QFormLayout generated from a :class:`ParamForm` (one :class:`QtParamField` per spec)."""

    changed = Signal()

    def __init__(self, title: str, form: ParamForm, parent: Optional[QWidget] = None):
        super().__init__(title, parent)
        self.form = form
        self.fields: Dict[str, QtParamField] = {}
        layout = QFormLayout(self)
        layout.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        for spec in form.specs:
            field = QtParamField(form, spec)
            field.changed.connect(lambda *_: self.changed.emit())
            label = QLabel(spec.name.replace("_", " "))
            label.setToolTip(spec.help)
            layout.addRow(label, field)
            self.fields[spec.name] = field


class QtDrillsView(QWidget):
    """The Drills page over a :class:`DrillStudio`.

    ``program``/``prefix`` replace the backend command (tests replay recorded streams);
    ``probe_backend`` asks the backend for drill recipes (``drill --list``) when first shown.
    """

    def __init__(self, studio: DrillStudio, parent: Optional[QWidget] = None, *, program: Optional[str] = None,
                 prefix: Sequence[str] = BACKEND_PREFIX, probe_backend: bool = True, kill_timeout_ms: int = 3000):
        super().__init__(parent)
        self.studio = studio
        self.runner = QtDrillRunner(studio, program=program, prefix=prefix, kill_timeout_ms=kill_timeout_ms, parent=self)
        self.runner.run_finished.connect(self._on_run_finished)
        self.probe_backend = probe_backend and studio.backend.available
        self.probe: Optional[QtRecipeProbe] = None
        self.plotted: List[str] = []
        self.settings_view: Optional[QtParamFormView] = None
        self.params_view: Optional[QtParamFormView] = None
        self._versions: Dict[str, int] = {}

        title = QLabel("Drills")
        title.setObjectName("pageTitle")
        self.banner = QLabel(wordWrap=True, textInteractionFlags=Qt.TextSelectableByMouse)
        self.banner.setObjectName("drillsBanner")

        # ---- left: what to run
        self.recipe_box = QComboBox()
        self.recipe_box.setObjectName("recipeBox")
        self.recipe_box.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.recipe_box.setMinimumContentsLength(18)
        self.recipe_box.currentIndexChanged.connect(lambda *_: self._on_recipe_changed())
        self.recipe_summary = QLabel(wordWrap=True)
        self.recipe_summary.setStyleSheet("color: #4a5568;")
        self.recipe_note = QLabel(wordWrap=True)
        self.recipe_note.setStyleSheet(_BANNER_BAD)
        forms = QWidget()  # (see QtCurvesView.toolbar: attribute layouts live in a widget)
        self.forms_box = QVBoxLayout(forms)
        self.forms_box.setContentsMargins(0, 0, 0, 0)
        self.data_edit = QLineEdit(str(studio.data_dir) if studio.data_dir else "")
        self.data_edit.setPlaceholderText("folder with Training/ and Testing/")
        data_browse = QPushButton("Browse...")
        data_browse.clicked.connect(self._browse_data)
        data_row = QHBoxLayout()
        data_row.addWidget(self.data_edit, 1)
        data_row.addWidget(data_browse)
        self.device_box = QComboBox()
        self.device_box.addItems(DEVICES)
        self.device_box.setToolTip("auto: a GPU when torch sees one, else the CPU. One run at a time per device; "
                                   "further runs wait in the queue.")
        self.role_box = QComboBox()
        for role in ROLES:
            self.role_box.addItem(ROLE_TITLES[role], role)
        self.role_box.setToolTip("Colour on the plots (Figure 6): clean blue, attacked orange, defended green")
        common = QGroupBox("Data and device")
        common_form = QFormLayout(common)
        common_form.addRow("data folder", data_row)
        common_form.addRow("device", self.device_box)
        common_form.addRow("plot as", self.role_box)
        self.error_label = QLabel(wordWrap=True)
        self.error_label.setObjectName("launchError")
        self.error_label.setStyleSheet("color: #9b1c1c; font-weight: bold;")
        self.launch_button = QPushButton("Launch")
        self.launch_button.setObjectName("launchButton")
        self.launch_button.setDefault(True)
        self.launch_button.clicked.connect(self.launch)

        left_inner = QWidget()
        left_layout = QVBoxLayout(left_inner)
        left_layout.addWidget(QLabel("<b>What to run</b>"))
        left_layout.addWidget(self.recipe_box)
        left_layout.addWidget(self.recipe_summary)
        left_layout.addWidget(self.recipe_note)
        left_layout.addWidget(forms)
        left_layout.addWidget(common)
        left_layout.addWidget(self.error_label)
        left_layout.addWidget(self.launch_button)
        left_layout.addStretch(1)
        left = QScrollArea()
        left.setWidgetResizable(True)
        left.setWidget(left_inner)
        left.setMinimumWidth(300)
        left.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        left.setFrameShape(QScrollArea.NoFrame)

        # ---- right: progress, curves, tabs
        self.progress_label = QLabel("No run in progress.")
        self.progress_label.setObjectName("progressLabel")
        self.progress_label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.progress_bar = QtThinProgress()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setMaximumHeight(10)
        self.cancel_button = QPushButton("Cancel run")
        self.cancel_button.clicked.connect(self.cancel_current)
        progress = QWidget()
        progress_col = QVBoxLayout(progress)
        progress_col.setContentsMargins(0, 0, 0, 0)
        progress_col.setSpacing(2)
        progress_col.addWidget(self.progress_label)
        progress_col.addWidget(self.progress_bar)
        self.curves = QtCurvesView()
        # the page's 10 Hz tick refreshes the curves too: progress and curves change in the same
        # event-loop turn, so each tick paints one frame instead of two
        self.curves.timer.stop()
        self.results = QtResultsView(studio, images=self._curve_images)

        self.runs_table = QTableWidget(0, len(RUN_COLUMNS))
        self.runs_table.setObjectName("runsTable")
        self.runs_table.setHorizontalHeaderLabels(RUN_COLUMNS)
        self.runs_table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.runs_table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.runs_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.runs_table.verticalHeader().setVisible(False)
        header = self.runs_table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.Stretch)
        self.runs_table.itemSelectionChanged.connect(self._on_selection)
        self.runs_table.itemChanged.connect(self._on_item_changed)
        self.rerun_button = QPushButton("Re-run")
        self.rerun_button.clicked.connect(lambda: self.rerun(self.selected_run()))
        self.cancel_selected_button = QPushButton("Cancel")
        self.cancel_selected_button.clicked.connect(lambda: self.cancel(self.selected_run()))
        self.baseline_button = QPushButton("Use as baseline")
        self.baseline_button.clicked.connect(self._use_as_baseline)
        self.delete_button = QPushButton("Delete")
        self.delete_button.clicked.connect(self._delete_selected)
        self.import_button = QPushButton("Import drill folder...")
        self.import_button.setToolTip("Add a drill run outside the app (python -m training drill NAME --out DIR) "
                                      "to the history: choose its DIR (events.jsonl, report.json)")
        self.import_button.clicked.connect(self._browse_import)
        buttons = QHBoxLayout()
        for b in (self.rerun_button, self.cancel_selected_button, self.baseline_button, self.delete_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.import_button)
        runs_page = QWidget()
        runs_layout = QVBoxLayout(runs_page)
        runs_layout.setContentsMargins(4, 4, 4, 4)
        runs_layout.addWidget(self.runs_table, 1)
        runs_layout.addLayout(buttons)
        self.log_view = QPlainTextEdit(readOnly=True)
        self.log_view.setObjectName("runLog")
        self.log_view.setMaximumBlockCount(2000)
        self.tabs = QTabWidget()
        self.tabs.addTab(runs_page, "Queue && history")
        self.tabs.addTab(self.results, "Results")
        self.tabs.addTab(self.log_view, "Log")
        self._log_shown: Optional[tuple] = None  # (run id, version) in the log view
        self.tabs.currentChanged.connect(self._on_tab_changed)

        right_split = QSplitter(Qt.Vertical)
        right_split.addWidget(self.curves)
        right_split.addWidget(self.tabs)
        right_split.setStretchFactor(0, 3)
        right_split.setStretchFactor(1, 2)
        right_split.setSizes([470, 230])
        right_split.setChildrenCollapsible(False)
        self.right_split = right_split

        split = QSplitter(Qt.Horizontal)
        split.addWidget(left)
        split.addWidget(right_split)
        split.setStretchFactor(1, 1)
        split.setSizes([340, 860])
        split.setChildrenCollapsible(False)
        header = QHBoxLayout()  # the running run's progress sits beside the page title
        header.addWidget(title)
        header.addSpacing(24)
        header.addWidget(progress, 1)
        header.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(header)
        layout.addWidget(self.banner)
        layout.addWidget(split, 1)

        self.timer = QTimer(self)
        self.timer.setInterval(100)
        self.timer.timeout.connect(self._tick)
        self.timer.start()
        studio.subscribe(self._on_studio)
        self.destroyed.connect(lambda *_, s=studio, cb=self._on_studio: s.unsubscribe(cb))
        app = QCoreApplication.instance()
        if app is not None:  # closing the app stops the backend instead of orphaning it
            app.aboutToQuit.connect(self.shutdown)
        self._fill_recipes()
        self._update_banner()
        self._rebuild_runs()
        self._on_selection()
        self._tick()

    # ------------------------------------------------------------------ recipes and forms
    def _fill_recipes(self) -> None:
        current = self.recipe_box.currentData()
        self.recipe_box.blockSignals(True)
        self.recipe_box.clear()
        for recipe in self.studio.recipes:
            text = recipe.title if recipe.available else f"{recipe.title}  (not available yet)"
            self.recipe_box.addItem(text, recipe.name)
            if not recipe.available:
                self.recipe_box.setItemData(self.recipe_box.count() - 1, QBrush(QColor("#8a8f98")), Qt.ForegroundRole)
            self.recipe_box.setItemData(self.recipe_box.count() - 1, recipe.summary, Qt.ToolTipRole)
        index = self.recipe_box.findData(current) if current else 0
        self.recipe_box.setCurrentIndex(max(index, 0))
        self.recipe_box.blockSignals(False)
        self._on_recipe_changed()

    def recipe(self) -> Recipe:
        return self.studio.recipe(self.recipe_box.currentData())

    def select_recipe(self, name: str) -> None:
        index = self.recipe_box.findData(name)
        if index < 0:
            raise ValueError(f"unknown recipe {name!r}")
        self.recipe_box.setCurrentIndex(index)

    def _on_recipe_changed(self) -> None:
        if self.recipe_box.currentData() is None:
            return
        recipe = self.recipe()
        for view in (self.settings_view, self.params_view):
            if view is not None:
                self.forms_box.removeWidget(view)
                view.deleteLater()
        settings, params = self.studio.forms(recipe)
        self.settings_view = QtParamFormView("Run settings", settings)
        self.settings_view.setObjectName("settingsForm")
        self.forms_box.addWidget(self.settings_view)
        self.settings_view.changed.connect(self._validate)
        self.params_view = None
        if params is not None:
            title = (("Defense parameters" if recipe.name.startswith("defense:") else "Attack parameters")
                     + (f" ({recipe.attack})" if recipe.attack else ""))
            self.params_view = QtParamFormView(title, params)
            self.params_view.setObjectName("paramsForm")
            self.forms_box.addWidget(self.params_view)
            self.params_view.changed.connect(self._validate)
        self.recipe_summary.setText(recipe.summary)
        self.recipe_note.setText(recipe.unavailable_reason)
        self.recipe_note.setVisible(not recipe.available)
        self.role_box.setCurrentIndex(max(self.role_box.findData(recipe.role), 0))
        self.device_box.setEnabled(recipe.uses_device)
        self._validate()

    def field(self, name: str) -> QtParamField:
        """The editor of a setting or parameter by name (settings first)."""
        for view in (self.settings_view, self.params_view):
            if view is not None and name in view.fields:
                return view.fields[name]
        raise KeyError(name)

    def set_field(self, name: str, text: str) -> Optional[str]:
        """Type a value into a field as a user would; returns its error (None when valid)."""
        f = self.field(name)
        f.set_value(text)
        return f.error

    def form_errors(self) -> Dict[str, str]:
        errors = {}
        for view in (self.settings_view, self.params_view):
            if view is not None:
                errors.update(view.form.errors())
        return errors

    def _validate(self) -> None:
        recipe = self.recipe()
        errors = self.form_errors()
        if not self.studio.backend.available:
            self.launch_button.setEnabled(False)
            self.launch_button.setText("Launch (training extra not installed)")
        elif not recipe.available:
            self.launch_button.setEnabled(False)
            self.launch_button.setText("Launch (needs python -m training drill)")
        else:
            self.launch_button.setEnabled(True)
            self.launch_button.setText("Launch" if not self.studio.queue.running else "Add to queue")
        self.error_label.setText("\n".join(errors.values()))
        self.error_label.setVisible(bool(errors))

    def _update_banner(self, extra: str = "") -> None:
        b = self.studio.backend
        if not b.available:
            self.banner.setText(
                f"{b.message}<br>After installing, restart BreakFix Desktop. Run history, results and "
                f"the parameter forms stay available here.")
            self.banner.setStyleSheet(_BANNER_BAD)
            return
        missing = getattr(self, "_drills_missing", None)
        drill = self.studio.backend_recipes_note or (
            "Available now: Train (clean), Evaluate, Audit data and the single defenses (augmentation, "
            "adversarial training). Attack drills and the DrunkOptimizer sweep "
            + (f"show their parameter forms but cannot run: {missing}" if missing else
               "show their parameter forms; asking the training backend for the paper's drills "
               "(python -m training drill --list)..."))
        self.banner.setText(drill + (f" {extra}" if extra else ""))
        self.banner.setStyleSheet(_BANNER_INFO)

    def _browse_data(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Data folder", self.data_edit.text())
        if folder:
            self.data_edit.setText(folder)

    # ------------------------------------------------------------------ launch / cancel / re-run
    def launch(self) -> List[DrillRun]:
        """Validate the forms, data folder and device; queue the run(s).  Errors go to the error label."""
        recipe = self.recipe()
        try:
            settings = self.settings_view.form.values() if self.settings_view else {}
            params = self.params_view.form.values() if self.params_view else None
            runs = self.studio.prepare(recipe.name, settings, params, self.data_edit.text(),
                                       self.device_box.currentText(), self.role_box.currentData())
        except FormError as exc:
            self._refuse("Not launched: " + "; ".join(exc.errors.values()))
            return []
        except ValueError as exc:
            self._refuse(f"Not launched: {exc}")
            return []
        self.error_label.setVisible(False)
        for run in runs:
            self.plotted.append(run.id)
        return self.studio.submit(runs)

    def _refuse(self, message: str) -> None:
        self.error_label.setText(message)
        self.error_label.setVisible(True)

    def cancel(self, run: Optional[DrillRun]) -> None:
        if run is not None and not run.is_final:
            self.runner.cancel(run)

    def cancel_current(self) -> None:
        for run in list(self.studio.queue.running):
            self.runner.cancel(run)

    def rerun(self, run: Optional[DrillRun]) -> List[DrillRun]:
        if run is None:
            return []
        try:
            runs = self.studio.rerun(run.id)
        except ValueError as exc:
            self._refuse(f"Not re-run: {exc}")
            return []
        self.plotted += [r.id for r in runs]
        self._rebuild_runs()
        return runs

    def _use_as_baseline(self) -> None:
        run = self.selected_run()
        if run is None or run.report is None:
            self._refuse("Choose a finished run with a classification report as the baseline.")
            return
        self.results.set_baseline(run.id)

    def _browse_import(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Drill folder (python -m training drill ... --out DIR)")
        if folder:
            self.import_folder(folder)

    def import_folder(self, path) -> Optional[DrillRun]:
        """Import a drill folder into the history, plot it and show its results; a folder that
        cannot be imported is refused with the studio's message (it names the file)."""
        try:
            run = self.studio.import_run(path)
        except ValueError as exc:
            self._refuse(f"Not imported: {exc}")
            return None
        self.plotted.append(run.id)
        self._rebuild_runs(select=run.id)
        self.results.show_run(run)
        self.tabs.setCurrentWidget(self.results)
        return run

    def _delete_selected(self) -> None:
        run = self.selected_run()
        if run is None:
            return
        if not run.is_final:
            self._refuse("Cancel the run before deleting it.")
            return
        answer = QMessageBox.question(self, "Delete run", f"Delete {run.label} from the history? "
                                      f"(Its folder {run.out_dir} is kept.)")
        if answer == QMessageBox.Yes:
            self.plotted = [i for i in self.plotted if i != run.id]
            self.studio.delete(run.id)

    def shutdown(self) -> None:
        """Stop queued and running runs and write the history to disk (the app is closing)."""
        self.runner.shutdown()
        self.studio.close()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        # nothing is lost when the window closes right after a run: the history is flushed
        self.shutdown()
        super().closeEvent(event)

    # ------------------------------------------------------------------ studio -> widgets
    def _on_studio(self, what: str, run: Optional[DrillRun]) -> None:
        if what == "recipes":
            self._fill_recipes()
            self._update_banner()
            return
        self._rebuild_runs(select=run.id if run is not None and what in ("queued", "finished") else None)
        self._validate()

    def _on_run_finished(self, run: DrillRun) -> None:
        self.results.refresh_baselines()
        if self.selected_run() is run or self.selected_run() is None:
            self.select_run(run.id)
            self.results.show_run(run)
            self._show_log(run)
            self._on_selection()
        if run.report is not None or run.multi_series or not run.status == "ok":
            self.tabs.setCurrentWidget(self.results)
        self._tick()

    def _rebuild_runs(self, select: Optional[str] = None) -> None:
        selected = select or (self.selected_run().id if self.selected_run() else None)
        runs = self.studio.all_runs()
        table = self.runs_table
        table.blockSignals(True)
        table.setRowCount(len(runs))
        for row, run in enumerate(runs):
            plot = QTableWidgetItem()
            plot.setFlags(Qt.ItemIsUserCheckable | Qt.ItemIsEnabled | Qt.ItemIsSelectable)
            plot.setCheckState(Qt.Checked if run.id in self.plotted else Qt.Unchecked)
            values = [None, str(run.number), run.title + (f"  {run.sweep['param']}={run.sweep['value']:g}" if run.sweep else ""),
                      ROLE_TITLES.get(run.role, run.role), run.device, run.status,
                      _acc_text(run),
                      time.strftime("%m-%d %H:%M", time.localtime(run.started or run.created)),
                      "" if run.duration() is None else f"{run.duration():.0f} s"]
            for col, value in enumerate(values):
                item = plot if col == 0 else QTableWidgetItem(value)
                item.setData(Qt.UserRole, run.id)
                if col == 3:
                    item.setForeground(QBrush(QColor(ROLE_COLORS.get(run.role, "#333"))))
                if col == 5:
                    item.setForeground(QBrush(QColor(STATUS_COLOURS.get(run.status, "#333"))))
                    item.setToolTip(run.message)
                if col == 6:
                    item.setToolTip(_acc_tooltip(run))
                table.setItem(row, col, item)
        table.blockSignals(False)
        if selected:
            self.select_run(selected)
        self.results.refresh_baselines()
        self._sync_plot()

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        if item.column() != 0:
            return
        run_id = item.data(Qt.UserRole)
        if item.checkState() == Qt.Checked and run_id not in self.plotted:
            self.plotted.append(run_id)
        elif item.checkState() != Qt.Checked and run_id in self.plotted:
            self.plotted.remove(run_id)
        self._sync_plot()

    def set_plotted(self, run_ids: Sequence[str]) -> None:
        """Plot exactly these runs (in this order)."""
        self.plotted = list(run_ids)
        self._rebuild_runs()

    def _sync_plot(self) -> None:
        runs = [self.studio.runs[i] for i in self.plotted if i in self.studio.runs]
        self.curves.show_runs(runs)

    def selected_run(self) -> Optional[DrillRun]:
        rows = self.runs_table.selectionModel().selectedRows() if self.runs_table.selectionModel() else []
        if not rows:
            return None
        item = self.runs_table.item(rows[0].row(), 1)
        return self.studio.runs.get(item.data(Qt.UserRole)) if item else None

    def select_run(self, run_id: str) -> None:
        for row in range(self.runs_table.rowCount()):
            item = self.runs_table.item(row, 1)
            if item is not None and item.data(Qt.UserRole) == run_id:
                self.runs_table.selectRow(row)
                return

    def _on_selection(self) -> None:
        run = self.selected_run()
        self.results.show_run(run)
        self._show_log(run)
        final = run is not None and run.is_final
        self.rerun_button.setEnabled(run is not None)
        self.cancel_selected_button.setEnabled(run is not None and not final)
        self.baseline_button.setEnabled(run is not None and run.report is not None)
        self.delete_button.setEnabled(final)

    def _on_tab_changed(self, *_) -> None:
        run = self.selected_run()
        self._show_log(run)
        if self.tabs.currentWidget() is self.results and run is not None:
            self.results.show_run(run)

    def _show_log(self, run: Optional[DrillRun]) -> None:
        """The run's log, built only while the Log tab is shown and the run changed since."""
        if self.tabs.currentWidget() is not self.log_view:
            return
        shown = (run.id, run.version, run.status) if run is not None else None
        if shown == self._log_shown:
            return
        self._log_shown = shown
        if run is None:
            self.log_view.setPlainText("")
            return
        lines = [f"{run.label}  [{run.status}]  {run.message}", "Backend steps:"]
        lines += ["  python -m training --events json " + " ".join(step) for step in run.steps]
        lines.append(f"Folder: {run.out_dir}")
        lines.append(f"{len(run.events)} events, {len(run.invalid_lines)} invalid line(s):")
        for event in run.events[-150:]:
            fields = {k: v for k, v in event.items() if k not in ("v", "t", "type", "config", "report", "summary")}
            text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
            lines.append(f"  {event['type']:<16} {text}")
        for line, reason in run.invalid_lines[-20:]:
            lines.append(f"  INVALID ({reason}): {line[:200]}")
        if run.stderr_tail:
            lines += ["--- backend stderr (tail) ---", run.stderr_tail]
        self.log_view.setPlainText("\n".join(lines))

    # ------------------------------------------------------------------ timer
    def _tick(self) -> None:
        """~10 Hz: curves, progress of running runs, the selected run's log/results while it runs;
        the running runs' new events go to the history (written by its background thread)."""
        self.curves.refresh()
        self.studio.persist_events()
        errors = self.studio.history.write_errors
        if len(errors) != getattr(self, "_history_errors", 0):
            self._history_errors = len(errors)
            self._update_banner(f"Run history could not be written: {errors[-1]}")
        running = self.studio.queue.running
        pending = len(self.studio.queue.pending)
        if running:
            run = running[0]
            text = f"<b>{run.label}</b> running · " + (run.progress_text() or "starting the backend...")
            if len(running) > 1:
                text += f" · {len(running) - 1} more running"
            if pending:
                text += f" · {pending} queued"
            self.progress_label.setText(text)
            self.progress_bar.setValue(int(1000 * run.fraction_done()))
            self.cancel_button.setEnabled(True)
        else:
            self.progress_label.setText("No run in progress." + (f" {pending} queued." if pending else ""))
            self.progress_bar.setValue(0)
            self.cancel_button.setEnabled(False)
        selected = self.selected_run()
        if selected is not None and self._versions.get(selected.id) != selected.version:
            self._versions[selected.id] = selected.version
            self._show_log(selected)
            if not selected.is_final and self.tabs.currentWidget() is self.results:
                self.results.show_run(selected)  # (a hidden results tab is filled when chosen)

    # ------------------------------------------------------------------ misc
    def _curve_images(self) -> Dict[str, str]:
        """The curves as shown, as a PNG data URI (embedded in exported reports)."""
        pixmap = self.curves.glw.grab()
        data = QByteArray()
        buf = QBuffer(data)
        buf.open(QIODevice.WriteOnly)
        pixmap.save(buf, "PNG")
        return {"Curves (as plotted in the Drills view)":
                "data:image/png;base64," + base64.b64encode(bytes(data)).decode("ascii")}

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        if self.probe_backend and self.probe is None:
            self.probe = QtRecipeProbe(parent=self)
            self.probe.found.connect(self._on_recipes_found)
            self.probe.missing.connect(self._on_recipes_missing)
            self.probe.start()

    def _on_recipes_missing(self, reason: str) -> None:
        self._drills_missing = reason
        self._update_banner()

    def _on_recipes_found(self, listing) -> None:
        try:
            self.studio.set_backend_recipes(listing)
        except ValueError as exc:
            self._update_banner(f"(The backend's drill list was not understood: {exc})")
