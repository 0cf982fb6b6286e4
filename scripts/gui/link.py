"""The window's connection to one station: events and liveness on a thread, calls on a pool.

``StationLink`` owns a thread that connects (a ``ping``, then the event stream and a
snapshot), follows the events, and notices when the station goes away: events are its
sign of life, and after a quiet spell it pings. A station that stops, dies or is not started
yet is reported as ``disconnected`` with the reason in words, and the thread keeps trying
until it comes back, when a fresh snapshot arrives as ``connected``.

``link.call(command, on_done, **args)`` runs one control command on a thread pool (a fresh
client each time, as zmq sockets belong to one thread) and hands ``Reply`` back on the
GUI thread. Nothing here ever blocks the window. The threads are Python threads talking to
the GUI through queued signals: the GUI thread never waits for them while holding the GIL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, Signal, Slot

from wats_station.ipc.client import (
    CommandFailed,
    Event,
    EventStream,
    StationClient,
    StationUnavailable,
)
from wats_station.ipc.endpoints import InstancePaths
from wats_station.ipc.protocol import ErrorCode

RETRY_S = 1.0  # between attempts to reach a station that is away
QUIET_S = 2.0  # no event for this long: ping to see that the station still lives
PING_TIMEOUT_S = 1.5
CALL_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Reply:
    """What came of one call: ``result`` when ``ok``, else ``error`` (in words) and ``code``."""

    command: str
    ok: bool
    result: Any = None
    error: str = ""
    code: str = ""

    @property
    def unsupported(self) -> bool:
        """The station is older than this window and does not know the command."""
        return self.code == str(ErrorCode.UNKNOWN_COMMAND)


def call_station(paths: InstancePaths, command: str, timeout_s: float, **args: Any) -> Reply:
    try:
        with StationClient(paths=paths, timeout_s=timeout_s) as client:
            return Reply(command, True, client.call(command, **args))
    except CommandFailed as error:
        return Reply(command, False, error=str(error), code=error.code)
    except StationUnavailable as error:
        return Reply(command, False, error=str(error), code="unavailable")
    except Exception as error:  # a bug here must not take the window down
        return Reply(command, False, error=f"{type(error).__name__}: {error}", code="internal")


class _Delivery(QObject):
    done = Signal(object, object)  # callback, result


class Background(QObject):
    """Runs work on a few Python threads and hands each result to its callback on the GUI thread.

    Python threads, not a QThreadPool: waiting for Qt's threads while holding the GIL can
    deadlock with a thread that needs it to finish; nothing here ever waits on the GUI thread
    except ``wait`` when the window closes (a Python join, which lets the others run).
    """

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="wats-gui")
        self._delivery = _Delivery(self)
        self._delivery.done.connect(self._deliver)  # a slot of ours: runs on our (GUI) thread

    def run(self, work: Callable[[], Any], on_done: Callable[[Any], None] | None = None) -> None:
        callback = on_done or (lambda _result: None)
        try:
            self._pool.submit(self._work, work, callback)
        except RuntimeError:
            pass  # shut down: the window is going away

    def _work(self, work: Callable[[], Any], callback: Callable[[Any], None]) -> None:
        result = work()
        try:
            self._delivery.done.emit(callback, result)
        except RuntimeError:
            pass  # the receiver was deleted meanwhile: nobody waits for this answer

    def wait(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def abandon(self) -> None:
        """Let running work end by itself; its results go nowhere."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    @Slot(object, object)
    def _deliver(self, callback: Callable[[Any], None], result: Any) -> None:
        try:
            callback(result)
        except RuntimeError as error:  # the widget that asked was closed meanwhile
            if "already deleted" not in str(error):
                raise


class _FollowerSignals(QObject):
    connected = Signal(object)  # a dict; typed "dict", PySide6 converts it and miscounts None
    disconnected = Signal(str)
    event = Signal(object)


class _Follower:
    """Connects, follows events, pings when quiet, reconnects; never touches widgets.

    Runs on a Python thread of its own and speaks through ``signals`` (queued to the GUI
    thread); once those are deleted or ``stop`` is called, it ends by itself.
    """

    def __init__(self, paths: InstancePaths, signals: _FollowerSignals) -> None:
        self.paths = paths
        self.signals = signals
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"wats-gui-follow-{paths.instance}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _emit(self, signal_name: str, value: Any) -> None:
        try:
            getattr(self.signals, signal_name).emit(value)
        except RuntimeError:  # the link was deleted: nobody listens any more
            self._stop.set()

    def _run(self) -> None:
        reason = ""
        while not self._stop.is_set():
            stream, why = self._connect()
            if stream is None:
                if why != reason:
                    reason = why
                    self._emit("disconnected", why)
                self._stop.wait(RETRY_S)
                continue
            reason = ""
            try:
                why = self._follow(stream)
            finally:
                stream.close()
            if not self._stop.is_set():
                reason = why
                self._emit("disconnected", why)

    def _connect(self) -> tuple[EventStream | None, str]:
        ping = call_station(self.paths, "ping", PING_TIMEOUT_S)
        if not ping.ok:
            return None, ping.error
        try:
            stream = EventStream(paths=self.paths)
        except StationUnavailable as error:
            return None, str(error)
        try:
            snapshot = stream.snapshot()
        except (StationUnavailable, CommandFailed) as error:
            stream.close()
            return None, str(error)
        self._emit("connected", snapshot.data)
        return stream, ""

    def _follow(self, stream: EventStream) -> str:
        last_sign = time.monotonic()
        while not self._stop.is_set():
            try:
                event = stream.next(timeout_s=0.2)
            except (StationUnavailable, CommandFailed) as error:  # a resync that failed
                return str(error)
            if event is not None:
                last_sign = time.monotonic()
                if event.topic == "resync":
                    self._emit("connected", event.data)
                else:
                    self._emit("event", event)
                continue
            if time.monotonic() - last_sign > QUIET_S:
                ping = call_station(self.paths, "ping", PING_TIMEOUT_S)
                if not ping.ok:
                    return ping.error
                last_sign = time.monotonic()
        return ""


class StationLink(QObject):
    """One station as the window sees it; emits on the GUI thread."""

    connected = Signal(object)  # a full status (dict): on connect, after a restart, a gap
    disconnected = Signal(str)  # why, in words (with how to start the station)
    event = Signal(object)  # an ipc.client.Event

    def __init__(self, paths: InstancePaths, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.paths = paths
        self.is_connected = False
        self._background = Background(self)
        signals = _FollowerSignals(self)
        signals.connected.connect(self._on_connected)
        signals.disconnected.connect(self._on_disconnected)
        signals.event.connect(self.event)
        self._follower = _Follower(paths, signals)

    @property
    def instance(self) -> str:
        return self.paths.instance

    def start(self) -> None:
        self._follower.start()

    def close(self, wait: bool = True) -> None:
        """Stop following. With ``wait`` (the window closes) until the threads have ended;
        without, they end by themselves while the window goes on."""
        self._follower.stop()
        if wait:
            self._follower.join(PING_TIMEOUT_S + 6.0)  # at worst a ping and a snapshot
            self._background.wait()
        else:
            self._background.abandon()

    def call(
        self,
        command: str,
        on_done: Callable[[Reply], None] | None = None,
        *,
        timeout_s: float = CALL_TIMEOUT_S,
        **args: Any,
    ) -> None:
        work = lambda: call_station(self.paths, command, timeout_s, **args)  # noqa: E731
        self._background.run(work, on_done)

    @Slot(object)
    def _on_connected(self, status: dict) -> None:
        self.is_connected = True
        self.connected.emit(status)

    @Slot(str)
    def _on_disconnected(self, reason: str) -> None:
        self.is_connected = False
        self.disconnected.emit(reason)


__all__ = ["Background", "Event", "Reply", "StationLink", "call_station"]
