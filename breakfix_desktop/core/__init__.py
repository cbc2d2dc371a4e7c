"""Qt-free, torch-free core of BreakFix Desktop (preprocessing, protocol, models, stores)."""
