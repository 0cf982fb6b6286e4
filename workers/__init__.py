"""Restartable worker processes (watcher, converter, uploader).

Each runs as ``python -m wats_station.workers.<kind>``.
"""
