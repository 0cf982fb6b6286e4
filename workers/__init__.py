"""Restartable worker processes (watcher, converter, uploader): ``python -m workers.<kind>``."""
