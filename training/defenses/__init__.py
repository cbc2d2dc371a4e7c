"""Defenses (paper §5).  :class:`UpdateGuard` (update_guard.py) counters optimizer tampering."""

from .update_guard import UpdateGuard

__all__ = ["UpdateGuard"]
