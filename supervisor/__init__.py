"""The station's parent process.

It starts, watches and restarts the workers, owns the queue and serves the control API.
"""
