"""The application shell: section navigation, pages, menus and the status bar.

``QtMainWindow(model)`` wraps a Qt-free :class:`~breakfix_desktop.core.model_registry.ModelCatalog`
and follows its changes (registry reloaded, inference device found).  Window geometry, dock
state and the last section persist in :class:`QSettings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

from PySide6.QtCore import QByteArray, QSettings, QSize, Qt
from PySide6.QtGui import QAction, QCloseEvent, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QSplitter,
    QStackedWidget,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from ..core.model_registry import ModelCatalog, onnxruntime_version
from .qt_models_view import QtModelsView

ICON_PATH = Path(__file__).resolve().parents[2] / "resources" / "icons" / "breakfix.svg"
APP_TITLE = "BreakFix Desktop"

#: section -> (headline, what arrives there) for pages that are not built yet.
PLACEHOLDERS: Dict[str, tuple] = {
    "Screening": (
        "Screening arrives with issue #6",
        "Open brain-MRI slices or a whole folder and screen them offline with the verified models: "
        "class probabilities per scan, the model versions used, and a flag when the ensemble or "
        "the trigger-pattern detector disagrees.",
    ),
    "Review queue": (
        "The review queue arrives in a later issue",
        "Scans that screening flags (low confidence, model disagreement, suspected trigger "
        "pattern) wait here for a human reviewer's decision.",
    ),
    "Drills": (
        "Poisoning drills arrive in a later issue",
        "Hands-on exercises for hospital security staff: spot a swapped or poisoned model and a "
        "trigger-stamped scan before it reaches a patient report.",
    ),
}
SECTIONS = ("Screening", "Review queue", "Drills", "Models")
_SECTION_ICONS = {
    "Screening": QStyle.SP_FileDialogContentsView,
    "Review queue": QStyle.SP_FileDialogDetailedView,
    "Drills": QStyle.SP_MessageBoxWarning,
    "Models": QStyle.SP_DriveHDIcon,
}


def app_icon() -> QIcon:
    """The BreakFix icon (an empty icon when the resource is missing)."""
    return QIcon(str(ICON_PATH)) if ICON_PATH.is_file() else QIcon()


class QtPlaceholderPage(QWidget):
    """An honest "not here yet" page: a headline and what the section will do."""

    def __init__(self, section: str, headline: str, body: str, parent: Optional[QWidget] = None):
        super().__init__(parent)
        title = QLabel(section)
        title.setObjectName("pageTitle")
        self.headline = QLabel(headline)
        self.headline.setObjectName("placeholderHeadline")
        self.headline.setAlignment(Qt.AlignHCenter)
        self.body = QLabel(body, wordWrap=True, alignment=Qt.AlignHCenter)
        self.body.setObjectName("placeholderBody")
        column = QWidget()
        column.setMaximumWidth(640)
        column_layout = QVBoxLayout(column)
        column_layout.addWidget(self.headline)
        column_layout.addSpacing(6)
        column_layout.addWidget(self.body)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(column, 4)
        row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addStretch(1)
        layout.addLayout(row)
        layout.addStretch(2)


class QtMainWindow(QMainWindow):
    """Main window over a :class:`ModelCatalog`; ``settings`` defaults to the app's QSettings."""

    def __init__(self, model: ModelCatalog, settings: Optional[QSettings] = None, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.model = model
        self.settings = settings if settings is not None else QSettings()
        self.setWindowTitle(APP_TITLE)
        self.setWindowIcon(app_icon())
        self.setObjectName("QtMainWindow")

        self.nav = QListWidget()
        self.nav.setObjectName("sectionNav")
        self.nav.setIconSize(QSize(20, 20))
        self.stack = QStackedWidget()
        self.models_view = QtModelsView(model.registry)
        self.pages: Dict[str, QWidget] = {}
        for name in SECTIONS:
            page = self.models_view if name == "Models" else QtPlaceholderPage(name, *PLACEHOLDERS[name])
            self.pages[name] = page
            self.stack.addWidget(page)
            QListWidgetItem(self.style().standardIcon(_SECTION_ICONS[name]), name, self.nav)
        self.nav.currentRowChanged.connect(self._on_section_changed)

        sidebar = QWidget()
        sidebar.setObjectName("sidebar")
        side_layout = QVBoxLayout(sidebar)
        side_layout.setContentsMargins(0, 0, 0, 0)
        side_layout.setSpacing(0)
        side_layout.addWidget(self._brand())
        side_layout.addWidget(self.nav, 1)

        splitter = QSplitter(Qt.Horizontal)
        splitter.addWidget(sidebar)
        splitter.addWidget(self.stack)
        splitter.setStretchFactor(1, 1)
        splitter.setChildrenCollapsible(False)
        splitter.setSizes([180, 900])
        self.nav.setMinimumWidth(150)
        self.setCentralWidget(splitter)

        self.device_label = QLabel()
        self.device_label.setObjectName("deviceStatus")
        self.models_label = QLabel()
        self.models_label.setObjectName("modelsStatus")
        self.statusBar().addPermanentWidget(self.device_label)
        self.statusBar().addPermanentWidget(self.models_label, 1)
        self._build_menus()
        self._apply_style()

        self._update_status()
        model.subscribe(self._on_model_changed)
        self.destroyed.connect(lambda *_, m=model, cb=self._on_model_changed: m.unsubscribe(cb))
        self._restore_settings()

    # ------------------------------------------------------------------ building
    def _brand(self) -> QWidget:
        """Icon + product name at the top of the sidebar."""
        brand = QWidget()
        brand.setObjectName("brand")
        row = QHBoxLayout(brand)
        row.setContentsMargins(12, 12, 12, 10)
        logo = QLabel()
        logo.setPixmap(app_icon().pixmap(QSize(32, 32)))
        name = QLabel("BreakFix")
        name.setObjectName("brandName")
        row.addWidget(logo)
        row.addWidget(name, 1)
        return brand

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self.open_models_action = QAction("Open models folder...", self)
        self.open_models_action.triggered.connect(self.open_models_folder)
        self.reload_models_action = QAction("Reload models", self, shortcut=QKeySequence.Refresh)
        self.reload_models_action.triggered.connect(lambda: self.model.reload())
        self.quit_action = QAction("&Quit", self, shortcut=QKeySequence("Ctrl+Q"))
        self.quit_action.setMenuRole(QAction.QuitRole)
        self.quit_action.triggered.connect(self.close)
        for action in (self.open_models_action, self.reload_models_action):
            file_menu.addAction(action)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)
        help_menu = self.menuBar().addMenu("&Help")
        self.about_action = QAction("&About BreakFix Desktop", self)
        self.about_action.setMenuRole(QAction.AboutRole)
        self.about_action.triggered.connect(self.show_about)
        help_menu.addAction(self.about_action)

    def _apply_style(self) -> None:
        self.setStyleSheet(
            "QLabel#pageTitle { font-size: 18pt; font-weight: 600; padding: 2px 0 6px 0; }"
            "QLabel#placeholderHeadline { font-size: 14pt; font-weight: 600; color: #2b4a6b; }"
            "QLabel#placeholderBody { color: #4a5568; font-size: 10.5pt; }"
            "QWidget#sidebar, QWidget#brand { background: #1f3550; }"
            "QLabel#brandName { color: white; font-size: 14pt; font-weight: 600; }"
            "QListWidget#sectionNav { font-size: 11pt; padding-top: 4px; border: none; outline: 0;"
            "  background: #1f3550; color: #e6edf5; }"
            "QListWidget#sectionNav::item { padding: 9px 8px; }"
            "QListWidget#sectionNav::item:selected { background: #2f5f92; color: white; }"
            "QStatusBar QLabel { padding: 0 8px; }"
        )

    # ------------------------------------------------------------------ sections
    def section(self) -> str:
        """The name of the section on screen."""
        return SECTIONS[max(self.nav.currentRow(), 0)]

    def set_section(self, name: str) -> None:
        """Show section ``name`` (one of :data:`SECTIONS`, case-insensitive)."""
        matches = [s for s in SECTIONS if s.lower() == name.lower()]
        if not matches:
            raise ValueError(f"unknown section {name!r}; choose from {', '.join(SECTIONS)}")
        self.nav.setCurrentRow(SECTIONS.index(matches[0]))

    def _on_section_changed(self, row: int) -> None:
        if row >= 0:
            self.stack.setCurrentIndex(row)
            self.settings.setValue("main/section", SECTIONS[row])

    # ------------------------------------------------------------------ model -> widgets
    def _on_model_changed(self, what: str) -> None:
        if what == "registry":
            self.models_view.set_registry(self.model.registry)
        self._update_status()

    def _update_status(self) -> None:
        device = self.model.device
        if device is None:
            self.device_label.setText(f"Inference: not started (onnxruntime {onnxruntime_version()})")
            self.device_label.setToolTip("")
        else:
            self.device_label.setText(f"Inference: {device.label}")
            self.device_label.setToolTip(device.note)
        registry = self.model.registry
        self.models_label.setText(f"Models: {registry.summary()}")
        bad = bool(registry.refused or registry.problems)
        self.models_label.setStyleSheet("color: #9b1c1c; font-weight: bold;" if bad else "")
        self.models_label.setToolTip(str(registry.manifest_path))

    # ------------------------------------------------------------------ actions
    def open_models_folder(self, folder: Optional[str] = None) -> None:
        """Load and verify the manifest of another folder (asks for it when not given)."""
        if folder is None:
            start = str(self.model.registry.manifest_path.parent)
            folder = QFileDialog.getExistingDirectory(self, "Open models folder", start)
            if not folder:
                return
        registry = self.model.reload(folder)
        self.set_section("Models")
        self.statusBar().showMessage(f"Loaded {registry.manifest_path}", 5000)

    def show_about(self) -> None:
        from ..app import version_text

        QMessageBox.about(
            self,
            "About BreakFix Desktop",
            f"<h3>BreakFix Desktop</h3><p>{version_text()}</p>"
            "<p>Offline brain-MRI screening with verified models. A screening aid for trained staff, "
            "not a diagnosis.</p>",
        )

    # ------------------------------------------------------------------ settings
    def _restore_settings(self) -> None:
        geometry = self.settings.value("main/geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        else:
            self.resize(1180, 740)
        state = self.settings.value("main/state")
        if isinstance(state, QByteArray) and not state.isEmpty():
            self.restoreState(state)
        section = self.settings.value("main/section", SECTIONS[0])
        self.set_section(section if section in SECTIONS else SECTIONS[0])

    def save_settings(self) -> None:
        self.settings.setValue("main/geometry", self.saveGeometry())
        self.settings.setValue("main/state", self.saveState())
        self.settings.setValue("main/section", self.section())
        self.settings.sync()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        self.save_settings()
        self.model.unsubscribe(self._on_model_changed)
        super().closeEvent(event)
