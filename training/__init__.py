"""BreakFix training backend (PyTorch): data, models, engine, export. Run as ``python -m training``."""
