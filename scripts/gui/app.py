"""Start the window: ``wats-station gui [--instance-id ID]``."""

from __future__ import annotations

import signal
import sys

from PySide6.QtWidgets import QApplication

from wats_station.gui.window import MainWindow


def run(instance: str) -> int:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("wats-station")
    app.setQuitOnLastWindowClosed(True)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl+C in the terminal closes the window
    window = MainWindow(instance)
    window.show()
    return app.exec()
