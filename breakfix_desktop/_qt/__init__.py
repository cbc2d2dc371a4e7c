"""Thin PySide6 views (``qt_<thing>.py`` / ``Qt<Thing>(model)``) over the Qt-free core.

PySide6 is pinned below 6.12 (pyproject.toml): 6.12.0 on CPython 3.11 loses a reference to
``None`` on every Qt call that returns ``void`` and aborts the interpreter within seconds of use.
"""
