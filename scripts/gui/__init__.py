"""The station window (``wats-station gui``): a PySide6 client of one station at a time.

It talks to the station only over the control API and the event stream (``ipc.client``),
like the CLI: it never opens the queue database or the station's files. Every call runs off
the GUI thread (``link.py``), so a slow or dead station never freezes the window.

    link.py        the connection: events, liveness, reconnecting; calls on a thread pool
    window.py      the main window: pages, connection banner, keyboard, tray icon
    page.py        what every page has
    overview.py, files.py, queue.py, converters.py, settings.py, events.py, instances.py
                   the pages
    widgets.py     small shared pieces (selectable text, copyable tables, colours)
    app.py         ``wats-station gui``

Qt is an optional extra (``pip install 'wats-station[gui]'``); the daemon never imports it.
"""
