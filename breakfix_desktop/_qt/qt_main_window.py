"""The application shell: section navigation, pages, menus and the status bar.

``QtMainWindow(model)`` wraps a Qt-free :class:`~breakfix_desktop.core.model_registry.ModelCatalog`
and follows its changes (registry reloaded, inference device found).  Window geometry, dock
state and the last section persist in :class:`QSettings`.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, Callable, Dict, Optional

from PySide6.QtCore import QByteArray, QSettings, QSize, Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QIcon, QKeySequence
from PySide6.QtWidgets import (  # QFileDialog, QMessageBox: imported where used (startup time)
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QSplitter,
    QStackedWidget,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from ..core.model_registry import THREADS_ENV, ModelCatalog, gui_thread_budget, load_registry
from ..core.resources import resource_path
from .qt_models_view import QtModelsView

# The Screening and Review pages, the quarantine store and the screening session (numpy, PIL,
# SQLite, onnxruntime) are imported where the pages are built: with ``deferred=True`` that is
# after the window is on screen (see QtMainWindow.start_loading).

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


def _loading_page(section: str) -> QWidget:
    """Stands in for a page until the models are loaded (deferred start)."""
    page = QWidget()
    layout = QVBoxLayout(page)
    title = QLabel(section)
    title.setObjectName("pageTitle")
    note = QLabel("Loading models and the quarantine store...", alignment=Qt.AlignCenter)
    note.setObjectName("placeholderBody")
    layout.addWidget(title)
    layout.addWidget(note, 1)
    return page


class QtMainWindow(QMainWindow):
    """Main window over a :class:`ModelCatalog`; ``settings`` defaults to the app's QSettings.

    ``store`` is the quarantine store (a :class:`QuarantineStore` or its folder); when ``None``:
    ``$BREAKFIX_STORE``, else the folder in the settings (``store/folder``), else the per-user
    data folder (:func:`default_store_dir`).  A store that cannot be opened leaves the window
    working; the Screening and Review pages say why they cannot run.
    """

    #: catalog changes, handed to the UI thread (a screening run opens sessions on its worker)
    _catalog_changed = Signal(str)
    #: the background loading's outcome, handed to the UI thread
    _loaded = Signal(object)
    #: the models are verified, the store is open and every page is built
    ready = Signal()

    LOADING_TEXT = "Loading models..."

    def __init__(self, model: ModelCatalog, settings: Optional[QSettings] = None, parent: Optional[QWidget] = None,
                 *, store=None, deferred: bool = False):
        super().__init__(parent)
        self.model = model
        self.settings = settings if settings is not None else QSettings()
        self._store_arg = store
        self.store = None
        self._owns_store = False
        self.session = None
        self.screening_view = None
        self.review_view = None
        self.is_ready = False
        self._closed = False
        self.loader: Optional[threading.Thread] = None
        self.setWindowTitle(APP_TITLE)
        self.setWindowIcon(app_icon())
        self.setObjectName("QtMainWindow")

        self.nav = QListWidget()
        self.nav.setObjectName("sectionNav")
        self.nav.setIconSize(QSize(20, 20))
        self.stack = QStackedWidget()
        self.models_view = QtModelsView(model.registry)
        # the Drills page (pyqtgraph, the drill catalogue: half a second of imports) is built the
        # first time it is shown or asked for, so the window appears without waiting for it
        self._drills_view: Optional[QWidget] = None
        self.pages: Dict[str, QWidget] = {}
        for name in SECTIONS:
            page = {"Screening": _loading_page("Screening"), "Review queue": _loading_page("Review queue"),
                    "Models": self.models_view, "Drills": QWidget()}.get(name)
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

        self._catalog_changed.connect(self._on_model_changed)
        self._catalog_listener = self._catalog_changed.emit
        model.subscribe(self._catalog_listener)
        self.destroyed.connect(lambda *_, m=model, cb=self._catalog_listener: m.unsubscribe(cb))
        self._loaded.connect(self._finish_loading, Qt.QueuedConnection)
        self._on_ready: Optional[Callable[[], None]] = None
        self._restore_settings()
        if deferred:
            # the window goes on screen first; start_loading() (after show()) does the rest
            self._set_model_actions_enabled(False)
            self._update_status()
            self.statusBar().showMessage(self.LOADING_TEXT)
        else:
            self._finish_loading(self._load(sync=True))

    # ------------------------------------------------------------------ loading
    def start_loading(self, on_ready: Optional[Callable[[], None]] = None, *, probe_device: bool = True) -> None:
        """Deferred windows: import the heavy modules (numpy, PIL, SQLite, onnxruntime), verify the
        manifest's hashes and open the quarantine store on a background thread; the pages are built
        on the UI thread when that is done (``ready`` is emitted, ``on_ready`` called).  Then,
        still in the background, find the inference device (the status bar follows)."""
        if self.is_ready or self.loader is not None:
            return
        self._on_ready = on_ready
        folder = self._store_folder(self._store_arg)

        def work() -> None:
            try:
                outcome: Any = self._load(folder=folder)
            except BaseException as exc:  # noqa: BLE001 - shown in the window, never lost
                outcome = exc
            try:
                self._loaded.emit((outcome,))
            except RuntimeError:
                return  # the window is gone
            if probe_device and not isinstance(outcome, BaseException):
                try:
                    self.model.probe_device()
                except Exception:  # noqa: BLE001 - the status bar keeps "not started"
                    pass

        self.loader = threading.Thread(target=work, name="breakfix-load", daemon=True)
        self.loader.start()

    def _store_folder(self, store):
        """The store folder to open (``store`` itself when it is an open store)."""
        if store is not None and not isinstance(store, (str, os.PathLike)):
            return store
        return store or os.environ.get("BREAKFIX_STORE") or self.settings.value("store/folder") or None

    def _load(self, folder=None, sync: bool = False):
        """(registry or None, (store, error, owned)) - the blocking part of starting up."""
        from ..core import screening_session  # noqa: F401 - numpy, PIL and the engine, off the UI thread
        from ..core.quarantine import QuarantineStore, StoreError, default_store_dir

        if sync:
            folder = self._store_folder(self._store_arg)
        registry = None if self.model.loaded else load_registry(self.model.location)
        if isinstance(folder, QuarantineStore):
            return registry, (folder, None, False)
        try:
            return registry, (QuarantineStore(folder if folder else default_store_dir()), None, True)
        except StoreError as exc:
            return registry, (None, str(exc), False)

    def _finish_loading(self, outcome) -> None:
        """UI thread: build the Screening and Review pages over the loaded store and registry."""
        if isinstance(outcome, tuple) and len(outcome) == 1:
            outcome = outcome[0]
        if isinstance(outcome, BaseException):
            self.statusBar().showMessage(f"Could not start: {outcome.__class__.__name__}: {outcome}")
            return
        registry, (store, store_error, owned) = outcome
        if self._closed:  # closed while loading: nothing to show, just let go of the store
            if owned and store is not None:
                store.close()
            return
        from ..core.screening_session import ScreeningSession
        from .qt_review_view import QtReviewView
        from .qt_screening_view import QtScreeningView

        self.store, self._owns_store = store, owned
        if registry is not None:
            self.model.set_registry(registry)  # "registry" event: status bar + Models page
        self.session = ScreeningSession(self.model, self.store, store_error=store_error,
                                        workers=self._inference_workers())
        self.screening_view = QtScreeningView(self.session, self.settings)
        self.review_view = QtReviewView(self.store, self.model, self.settings, store_error=store_error)
        self._replace_page("Screening", self.screening_view)
        self._replace_page("Review queue", self.review_view)
        self._connect_pages()
        self.is_ready = True
        self._set_model_actions_enabled(True)
        self._update_status()
        if self.statusBar().currentMessage() == self.LOADING_TEXT:
            self.statusBar().clearMessage()
        self.ready.emit()
        if self._on_ready is not None:
            self._on_ready()

    def _replace_page(self, name: str, widget: QWidget) -> None:
        index = SECTIONS.index(name)
        old = self.stack.widget(index)
        current = self.stack.currentIndex()
        self.stack.insertWidget(index, widget)
        self.stack.removeWidget(old)
        old.deleteLater()
        self.pages[name] = widget
        self.stack.setCurrentIndex(current)

    def _set_model_actions_enabled(self, enabled: bool) -> None:
        for action in (self.add_files_action, self.add_folder_action, self.export_csv_action,
                       self.export_pdf_action, self.open_models_action, self.reload_models_action,
                       self.store_folder_action):
            action.setEnabled(enabled)

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

    @property
    def drills_view(self) -> QWidget:
        """The Drills page (a ``QtDrillsView``), built on first use."""
        if self._drills_view is None:
            from ..core.drills import DrillStudio
            from .qt_drills_view import QtDrillsView

            view = QtDrillsView(DrillStudio())
            index = SECTIONS.index("Drills")
            old = self.stack.widget(index)
            self.stack.insertWidget(index, view)
            self.stack.removeWidget(old)
            old.deleteLater()
            self.pages["Drills"] = view
            self._drills_view = view
        return self._drills_view

    def _on_section_changed(self, row: int) -> None:
        if row >= 0:
            if SECTIONS[row] == "Drills":
                self.drills_view  # noqa: B018 - builds the page before it is shown
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
            ort = sys.modules.get("onnxruntime")  # never imported here just for the status bar
            version = f" (onnxruntime {getattr(ort, '__version__', '?')})" if ort is not None else ""
            self.device_label.setText(f"Inference: not started{version}")
            self.device_label.setToolTip("")
        else:
            self.device_label.setText(f"Inference: {device.label}")
            self.device_label.setToolTip(device.note)
        registry = self.model.registry
        if not self.model.loaded:
            self.models_label.setText("Models: loading and verifying...")
            self.models_label.setStyleSheet("")
            return
        self.models_label.setText(f"Models: {registry.summary()}")
        bad = bool(registry.refused or registry.problems)
        self.models_label.setStyleSheet("color: #9b1c1c; font-weight: bold;" if bad else "")
        self.models_label.setToolTip(str(registry.manifest_path))

    # ------------------------------------------------------------------ actions
    def open_models_folder(self, folder: Optional[str] = None) -> None:
        """Load and verify the manifest of another folder (asks for it when not given)."""
        if folder is None:
            start = str(self.model.registry.manifest_path.parent)
            from PySide6.QtWidgets import QFileDialog

            folder = QFileDialog.getExistingDirectory(self, "Open models folder", start)
            if not folder:
                return
        registry = self.model.reload(folder)
        self.set_section("Models")
        self.statusBar().showMessage(f"Loaded {registry.manifest_path}", 5000)

    def show_about(self) -> None:
        from ..app import version_text

        from PySide6.QtWidgets import QMessageBox

        QMessageBox.about(
            self,
            "About BreakFix Desktop",
            f"<h3>BreakFix Desktop</h3><p>{version_text()}</p>"
            "<p>Offline brain-MRI screening with verified models. A screening aid for trained staff, "
            "not a diagnosis.</p>",
        )

    # ------------------------------------------------------------------ screening and review
    def _inference_workers(self) -> int:
        """Leave the UI thread a core: engine workers x onnxruntime threads <= the GUI's budget
        (``$BREAKFIX_INFERENCE_THREADS``, else the ``screening/inference_threads`` setting, else
        cores - 1).  A catalog that already has a thread budget keeps it."""
        setting = self.settings.value("screening/inference_threads")
        try:
            total = int(setting) if setting not in (None, "") else None
        except (TypeError, ValueError):
            total = None
        if os.environ.get(THREADS_ENV):
            total = None  # the environment wins (gui_thread_budget reads it)
        workers, budget = gui_thread_budget(total)
        if self.model.threads is None:
            self.model.threads = budget
        return workers

    def _connect_pages(self) -> None:
        self.screening_view.message.connect(lambda text: self.statusBar().showMessage(text, 8000))
        self.review_view.message.connect(lambda text: self.statusBar().showMessage(text, 8000))
        self.screening_view.reviewRequested.connect(self.review_scan)
        self.screening_view.quarantined.connect(lambda _id: self.review_view.schedule_refresh())
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
        from ..core.quarantine import default_store_dir

        current = str(self.store.folder) if self.store is not None else str(default_store_dir())
        from PySide6.QtWidgets import QFileDialog, QMessageBox

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
        self._closed = True
        self.model.unsubscribe(self._catalog_listener)
        if self.is_ready:
            self.screening_view.shutdown()
            self.review_view.shutdown()
            self.session.close()
        if self._owns_store and self.store is not None:
            self.store.close()
            self.store = None
        super().closeEvent(event)
