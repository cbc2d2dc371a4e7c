"""Developer tools for BreakFix Desktop (screenshots, ...)."""
