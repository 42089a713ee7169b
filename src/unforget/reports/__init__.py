"""Plots and HTML/markdown reports built from run folders only (never from live objects), so any run can be
re-reported: ``unforget report RUN_DIR``."""
