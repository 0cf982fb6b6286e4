"""The wire format: every message type, its body fields, the protocol version, and msgpack encoding.

A message is one msgpack map ``{"v": PROTOCOL_VERSION, "type": ..., "id": ..., "body": {...}}``.
Decoding enforces a size limit, the version, a known type and well-typed body fields, and
raises ProtocolError (with an ErrorCode) for anything else: a bad frame earns an error
reply or a counted drop, never a crash.

File paths travel as bytes (``os.fsencode``), so a file name that is not valid UTF-8
survives the trip.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgpack

PROTOCOL_VERSION = 1

# WSJF reports with charts and attachments reach tens of megabytes; refusing a real report
# would lose it, so the default leaves room. The config can raise or lower it.
DEFAULT_MAX_MESSAGE_BYTES = 128 * 1024 * 1024


# Text that names a file may carry the undecodable bytes of a non-UTF-8 file name (as
# surrogate escapes); it crosses the wire byte-exact instead of failing to encode.
UNICODE_ERRORS = "surrogateescape"


class MsgType(StrEnum):
    # control socket (clients <-> supervisor)
    REQUEST = "request"
    REPLY = "reply"
    # events socket (supervisor -> subscribers)
    EVENT = "event"
    # workers socket (workers <-> supervisor)
    HELLO = "hello"  # worker: I am up
    WELCOME = "welcome"  # supervisor: here are your settings
    HEARTBEAT = "heartbeat"  # both ways
    JOB = "job"  # supervisor: do this
    JOB_DONE = "job_done"  # worker: this is what came of it
    FILE_READY = "file_ready"  # watcher: a file is completely written
    FILE_REJECTED = "file_rejected"  # watcher: a file that must not be read (e.g. symlink out)
    SHUTDOWN = "shutdown"  # supervisor: finish what you are doing and exit


class ErrorCode(StrEnum):
    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_TYPE = "unknown_type"
    BAD_FIELD = "bad_field"
    UNKNOWN_COMMAND = "unknown_command"
    BAD_ARGUMENTS = "bad_arguments"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    INVALID_REPORT = "invalid_report"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class JobKind(StrEnum):
    CONVERT = "convert"
    UPLOAD = "upload"
    PROBE = "probe"  # uploader: is the server reachable, and does it accept our token?
    VALIDATE = "validate"  # converter: decode and validate a big submit_report request


class UploadOutcome(StrEnum):
    """How an upload or probe ended, as the uploader classified the server's answer."""

    ACCEPTED = "accepted"  # 2xx
    REJECTED = "rejected"  # 400/422: this report is bad; retrying the same bytes cannot help
    UNAUTHORIZED = "unauthorized"  # 401/403: the token is wrong; nothing can succeed until fixed
    RATE_LIMITED = "rate_limited"  # 429: slow down for Retry-After
    SERVER_ERROR = "server_error"  # 5xx and other unexpected answers: retry with backoff
    OFFLINE = "offline"  # refused, DNS, connect timeout: the request never reached a server
    NOT_WATS = "not_wats"  # 2xx, but not what WATS answers (an HTML page, another id...)
    ANSWER_LOST = "answer_lost"  # sent, then reset or read timeout: it may have been stored


ANY = object  # a field whose value may be any msgpack type

# type -> {field: (accepted python types, required)}
BODY_FIELDS: dict[MsgType, dict[str, tuple[tuple[type, ...], bool]]] = {
    MsgType.REQUEST: {"command": ((str,), True), "args": ((dict,), False)},
    MsgType.REPLY: {"ok": ((bool,), True), "result": ((ANY,), False), "error": ((dict,), False)},
    MsgType.EVENT: {
        "epoch": ((str,), True),  # changes when the station restarts and its seq starts over
        "seq": ((int,), True),  # counts every event of this epoch
        "topic": ((str,), True),
        "topic_seq": ((int,), False),  # counts the events of this topic only
        "time": ((float, int), True),
        "data": ((dict,), True),
    },
    MsgType.HELLO: {
        "name": ((str,), True),
        "kind": ((str,), True),
        "pid": ((int,), True),
        "proof": ((bytes,), False),  # the per-spawn secret (ipc.handshake)
    },
    MsgType.WELCOME: {"settings": ((dict,), True)},
    MsgType.HEARTBEAT: {"jobs": ((list,), False), "rss": ((int,), False)},
    MsgType.JOB: {"job_id": ((str,), True), "kind": ((str,), True), "data": ((dict,), True)},
    MsgType.JOB_DONE: {
        "job_id": ((str,), True),
        "ok": ((bool,), True),
        "data": ((dict,), False),
        "error": ((dict,), False),
    },
    MsgType.FILE_READY: {
        "converter": ((str,), True),
        "path": ((bytes,), True),
        "size": ((int,), True),
        "mtime_ns": ((int,), True),
        "sha256": ((str,), True),  # the watcher fingerprints what it read through one handle
    },
    MsgType.FILE_REJECTED: {
        "converter": ((str,), True),
        "path": ((bytes,), True),
        "reason": ((str,), True),
    },
    MsgType.SHUTDOWN: {},
}


class ProtocolError(Exception):
    """A frame that is not a valid message; ``request_id`` is set when one could be read."""

    def __init__(self, code: ErrorCode, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id


@dataclass(frozen=True)
class Message:
    type: MsgType
    body: dict[str, Any] = field(default_factory=dict)
    id: int | str | None = None


def encode(message: Message) -> bytes:
    return msgpack.packb(
        {"v": PROTOCOL_VERSION, "type": str(message.type), "id": message.id, "body": message.body},
        use_bin_type=True,
        unicode_errors=UNICODE_ERRORS,
    )


def decode(frame: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Message:
    if len(frame) > max_bytes:
        raise ProtocolError(
            ErrorCode.TOO_LARGE, f"message of {len(frame)} bytes exceeds the limit of {max_bytes}"
        )
    try:
        raw = msgpack.unpackb(frame, raw=False, strict_map_key=True, unicode_errors=UNICODE_ERRORS)
    except Exception as error:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(ErrorCode.MALFORMED, f"not a msgpack message: {error}") from None
    if not isinstance(raw, dict):
        raise ProtocolError(ErrorCode.MALFORMED, "a message must be a msgpack map")
    request_id = raw.get("id")
    if not isinstance(request_id, (int, str, type(None))):
        raise ProtocolError(ErrorCode.BAD_FIELD, "'id' must be an integer, a string or nil")
    version = raw.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {version!r} is not supported "
            f"(this station speaks {PROTOCOL_VERSION})",
            request_id,
        )
    try:
        msg_type = MsgType(raw.get("type"))
    except ValueError:
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE, f"unknown message type {raw.get('type')!r}", request_id
        ) from None
    body = raw.get("body", {})
    if not isinstance(body, dict):
        raise ProtocolError(ErrorCode.BAD_FIELD, "'body' must be a map", request_id)
    check_body(msg_type, body, request_id)
    return Message(msg_type, body, request_id)


def peek_id(frame: bytes) -> Any:
    """A message's ``id`` read without decoding its body (our encoder writes the id first), so
    a reply can name the request even when the request is decoded elsewhere; None if unread."""
    unpacker = msgpack.Unpacker(io.BytesIO(frame), raw=False, read_size=4096)
    try:
        for _ in range(unpacker.read_map_header()):
            if unpacker.unpack() == "id":
                value = unpacker.unpack()
                return value if isinstance(value, (int, str)) else None
            unpacker.skip()
    except Exception:  # msgpack raises several unrelated types for bad input
        return None
    return None


def check_body(msg_type: MsgType, body: dict[str, Any], request_id: Any = None) -> None:
    check_fields(f"{msg_type} message", BODY_FIELDS[msg_type], body, request_id)


def check_fields(
    what: str,
    spec: dict[str, tuple[tuple[type, ...], bool]],
    data: dict[str, Any],
    request_id: Any = None,
) -> None:
    """Every required field present, every field of its type, no unknown field."""
    for name, (types, required) in spec.items():
        if name not in data:
            if required:
                raise ProtocolError(ErrorCode.BAD_FIELD, f"{what} lacks field '{name}'", request_id)
            continue
        value = data[name]
        if ANY in types or (value is None and not required):
            continue
        # bool is an int in Python; a field that wants an int must not accept True.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            wanted = " or ".join(t.__name__ for t in types)
            raise ProtocolError(
                ErrorCode.BAD_FIELD,
                f"{what} field '{name}' must be {wanted}, not {type(value).__name__}",
                request_id,
            )
    unknown = set(data) - set(spec)
    if unknown:
        raise ProtocolError(
            ErrorCode.BAD_FIELD,
            f"{what} has unknown field(s): {', '.join(sorted(unknown))}",
            request_id,
        )


def reply_ok(request_id: Any, result: Any = None) -> Message:
    return Message(MsgType.REPLY, {"ok": True, "result": result}, request_id)


def reply_error(request_id: Any, code: ErrorCode, message: str) -> Message:
    # The message may quote what the caller sent, lone surrogates and all: it must encode.
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return Message(
        MsgType.REPLY, {"ok": False, "error": {"code": str(code), "message": message}}, request_id
    )
