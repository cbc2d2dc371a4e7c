"""The drill studio's Qt-free core: recipes, parameter forms, runs, run history and the run queue.

Torch-free and Qt-free (standard library, numpy, platformdirs).  The GUI (``_qt/qt_drills_view.py``)
is a thin view over :class:`DrillStudio`; the backend is ``python -m training`` run as a child
process (``_qt/qt_backend_job.py``) whose JSON-lines events (:mod:`~breakfix_desktop.core.protocol`)
feed a :class:`DrillRun`.  This package re-exports the public names of its modules.

Pieces:

* :class:`BackendStatus` (:mod:`.environment`) - can this install launch the backend; the data folder.
* :class:`Recipe` (:mod:`.recipes`) - what can be launched.  The backend's commands that exist today
  (``train`` then ``evaluate`` = *Train (clean)*, ``evaluate``, ``audit-data``) and the single
  defenses (``train`` with augmentation or adversarial training, then ``evaluate``) are available;
  every attack of the torch-free catalog (:mod:`~breakfix_desktop.core.attack_catalog`) and the
  DrunkOptimizer scale-strength sweep are listed with their full parameter forms but marked
  unavailable until the backend grows ``python -m training drill`` (:func:`recipes_from_listing`
  reads its future ``drill --list``).
* :class:`ParamForm` (:mod:`.recipes`) - text values for a list of
  :class:`~breakfix_desktop.core.attack_catalog.ParamSpec`; each value is checked with the catalog's
  own rules (:func:`~breakfix_desktop.core.attack_catalog.coerce_value`,
  :func:`~breakfix_desktop.core.attack_catalog.validate_params`) and refused with a clear message
  before launch.
* :class:`DrillRun` (:mod:`.run`) - one launch: configuration, backend steps, status, every event,
  per-epoch and per-batch series (growable numpy buffers, so plotting 100k points stays cheap), the
  final classification reports; one :class:`SeriesData` per model of a multi-run drill (events
  tagged ``series``), the untagged events in the main series.  :meth:`DrillRun.apply` consumes
  protocol messages.
* :class:`RunHistory` (:mod:`.history`) - SQLite (config, events, results) in the per-user data
  folder or a given folder; the file is only created when the first run is recorded.  The studio's
  history writes on a background thread (creating the database, a running run's events about once a
  second, the run's record at its end), so the GUI thread never waits for SQLite;
  :meth:`DrillStudio.close` flushes it.
* :class:`RunQueue` (:mod:`.studio`) - FIFO with one running run per device; :class:`DrillStudio`
  (:mod:`.studio`) - the Drills view's model: recipes, runs, history, queue.
* :func:`read_drill_folder` (:mod:`.importer`) - a drill run outside the app (``python -m training
  drill NAME --out DIR``) rebuilt from ``DIR/events.jsonl``; :meth:`DrillStudio.import_run` adds it to
  the history.
* :func:`compare_reports`, :func:`report_html`, :func:`report_json`, :func:`export_report`
  (:mod:`.results`) - results against a baseline run, exported as HTML + JSON.
"""

from __future__ import annotations

from .environment import INSTALL_HINT, BackendStatus, backend_status, check_data_dir, default_data_dir
from .history import DB_NAME, HistoryEntry, RunHistory
from .recipes import (
    DRILL_COMMAND_NOTE,
    MODEL_PRESETS,
    PATH_SETTINGS,
    FormError,
    ParamForm,
    Recipe,
    builtin_recipes,
    defense_config,
    drill_config,
    model_presets,
    parse_sweep_values,
    recipes_from_listing,
)
from .results import compare_reports, export_report, paper_table, report_html, report_json
from .run import FINAL_STATUSES, MAIN_SERIES, ROLE_COLORS, ROLE_TITLES, ROLES, STATUSES, DrillRun, Series, SeriesData
from .importer import DrillImportError, read_drill_folder
from .studio import DrillStudio, RunQueue, device_lane, lanes_conflict

__all__ = [
    "ROLES", "ROLE_COLORS", "ROLE_TITLES", "STATUSES", "FINAL_STATUSES", "INSTALL_HINT", "DRILL_COMMAND_NOTE",
    "BackendStatus", "backend_status", "default_data_dir", "check_data_dir",
    "MODEL_PRESETS", "model_presets", "PATH_SETTINGS", "Recipe", "builtin_recipes", "recipes_from_listing",
    "drill_config", "defense_config",
    "FormError", "ParamForm", "Series", "SeriesData", "MAIN_SERIES", "DrillRun", "RunHistory", "HistoryEntry",
    "DB_NAME", "RunQueue",
    "device_lane", "lanes_conflict", "DrillStudio", "compare_reports", "report_json", "report_html",
    "export_report", "paper_table", "parse_sweep_values", "DrillImportError", "read_drill_folder",
]
