"""The application shell: section navigation, pages, menus and the status bar.

``QtMainWindow(model)`` wraps a Qt-free :class:`~breakfix_desktop.core.model_registry.ModelCatalog`
and follows its changes (registry reloaded, inference device found).  Window geometry, dock
state and the last section persist in :class:`QSettings`.
"""

from __future__ import annotations

import os
from typing import Dict, Optional

from PySide6.QtCore import QByteArray, QSettings, QSize, Qt, Signal
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

from ..core.drill_runs import DrillStudio
from ..core.model_registry import ModelCatalog, onnxruntime_version
from ..core.quarantine import QuarantineStore, StoreError, default_store_dir
from ..core.resources import resource_path
from ..core.screening_session import ScreeningSession
from .qt_drills_view import QtDrillsView
from .qt_models_view import QtModelsView
from .qt_review_view import QtReviewView
from .qt_screening_view import QtScreeningView

ICON_PATH = resource_path("icons", "breakfix.svg")
APP_TITLE = "BreakFix Desktop"

#: section -> (headline, what arrives there) for pages that are not built yet.
PLACEHOLDERS: Dict[str, tuple] = {
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
    """Main window over a :class:`ModelCatalog`; ``settings`` defaults to the app's QSettings.

    ``store`` is the quarantine store (a :class:`QuarantineStore` or its folder); when ``None``:
    ``$BREAKFIX_STORE``, else the folder in the settings (``store/folder``), else the per-user
    data folder (:func:`default_store_dir`).  A store that cannot be opened leaves the window
    working; the Screening and Review pages say why they cannot run.
    """

    #: catalog changes, handed to the UI thread (a screening run opens sessions on its worker)
    _catalog_changed = Signal(str)

    def __init__(self, model: ModelCatalog, settings: Optional[QSettings] = None, parent: Optional[QWidget] = None,
                 *, store=None):
        super().__init__(parent)
        self.model = model
        self.settings = settings if settings is not None else QSettings()
        self.store, store_error, self._owns_store = self._open_store(store)
        self.session = ScreeningSession(model, self.store, store_error=store_error)
        self.screening_view = QtScreeningView(self.session, self.settings)
        self.review_view = QtReviewView(self.store, model, self.settings, store_error=store_error)
        self.setWindowTitle(APP_TITLE)
        self.setWindowIcon(app_icon())
        self.setObjectName("QtMainWindow")

        self.nav = QListWidget()
        self.nav.setObjectName("sectionNav")
        self.nav.setIconSize(QSize(20, 20))
        self.stack = QStackedWidget()
        self.models_view = QtModelsView(model.registry)
        self.drills_view = QtDrillsView(DrillStudio())
        self.pages: Dict[str, QWidget] = {}
        for name in SECTIONS:
            page = {"Screening": self.screening_view, "Review queue": self.review_view,
                    "Models": self.models_view, "Drills": self.drills_view}.get(name)
            if page is None:
                page = QtPlaceholderPage(name, *PLACEHOLDERS[name])
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
        self._catalog_changed.connect(self._on_model_changed)
        self._catalog_listener = self._catalog_changed.emit
        model.subscribe(self._catalog_listener)
        self.destroyed.connect(lambda *_, m=model, cb=self._catalog_listener: m.unsubscribe(cb))
        self._connect_pages()
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
        self.add_files_action = QAction("Add scans...", self, shortcut=QKeySequence.Open)
        self.add_files_action.triggered.connect(lambda: self._screening_action(self.screening_view.choose_files))
        self.add_folder_action = QAction("Add folder of scans...", self, shortcut=QKeySequence("Ctrl+Shift+O"))
        self.add_folder_action.triggered.connect(lambda: self._screening_action(self.screening_view.choose_folder))
        for action in (self.add_files_action, self.add_folder_action):
            file_menu.addAction(action)
        export_menu = file_menu.addMenu("Export report")
        self.export_csv_action = QAction("CSV...", self)
        self.export_csv_action.triggered.connect(lambda: self.screening_view.export_dialog("csv"))
        self.export_pdf_action = QAction("PDF...", self)
        self.export_pdf_action.triggered.connect(lambda: self.screening_view.export_dialog("pdf"))
        export_menu.addAction(self.export_csv_action)
        export_menu.addAction(self.export_pdf_action)
        file_menu.addSeparator()
        for action in (self.open_models_action, self.reload_models_action):
            file_menu.addAction(action)
        self.store_folder_action = QAction("Quarantine store folder...", self)
        self.store_folder_action.triggered.connect(self.choose_store_folder)
        file_menu.addAction(self.store_folder_action)
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

    # ------------------------------------------------------------------ screening and review
    def _open_store(self, store):
        """(store or None, error or None, whether this window opened it)."""
        if isinstance(store, QuarantineStore):
            return store, None, False
        folder = store or os.environ.get("BREAKFIX_STORE") or self.settings.value("store/folder") or None
        try:
            return QuarantineStore(folder if folder else default_store_dir()), None, True
        except StoreError as exc:
            return None, str(exc), False

    def _connect_pages(self) -> None:
        self.screening_view.message.connect(lambda text: self.statusBar().showMessage(text, 8000))
        self.review_view.message.connect(lambda text: self.statusBar().showMessage(text, 8000))
        self.screening_view.reviewRequested.connect(self.review_scan)
        self.screening_view.quarantined.connect(lambda _id: self.review_view.refresh())
        self.review_view.decided.connect(lambda *_: self.session.refresh_from_store())
        self.review_view.queueChanged.connect(self._update_queue_count)
        self._update_queue_count(self.review_view.pending_count())

    def _update_queue_count(self, pending: int) -> None:
        item = self.nav.item(SECTIONS.index("Review queue"))
        if item is not None:
            item.setText(f"Review queue ({pending})" if pending else "Review queue")

    def _screening_action(self, action) -> None:
        self.set_section("Screening")
        action()

    def review_scan(self, scan_id: int) -> None:
        """Show quarantined scan ``scan_id`` in the Review queue."""
        self.set_section("Review queue")
        self.review_view.select_scan(scan_id)

    def choose_store_folder(self) -> None:
        current = str(self.store.folder) if self.store is not None else str(default_store_dir())
        folder = QFileDialog.getExistingDirectory(self, "Quarantine store folder", current)
        if folder:
            self.settings.setValue("store/folder", folder)
            QMessageBox.information(self, "Quarantine store folder",
                                    f"The quarantine store in {folder} will be used from the next start.")

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
        self.model.unsubscribe(self._catalog_listener)
        self.screening_view.shutdown()
        self.review_view.shutdown()
        self.session.close()
        if self._owns_store and self.store is not None:
            self.store.close()
            self.store = None
        super().closeEvent(event)
