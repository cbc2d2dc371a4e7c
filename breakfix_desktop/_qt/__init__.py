"""Thin PySide6 views (``qt_<thing>.py`` / ``Qt<Thing>(model)``) over the Qt-free core."""
