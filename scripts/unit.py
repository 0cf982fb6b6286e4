"""The systemd unit ``wats-station@.service``: render it from the shipped template and install it.

The template's text lives in ``scripts/wats-station@.service`` so that it can be read in the
repository as it is; only the Python interpreter and the ``User=``/``Group=`` lines are
filled in here. Nothing here calls systemctl: :func:`next_steps` says what to run.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import sys
from importlib.resources import files
from pathlib import Path

from wats_station.supervisor.atomic import write_atomically

UNIT_NAME = "wats-station@.service"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")

# What systemd accepts in User= (valid_user_group_name in relaxed mode, minus the oddities).
_USER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")


class UnitInstallError(Exception):
    """The unit file could not be written where it was asked for."""


def render_unit(*, python: str = sys.executable, user: str | None = None) -> str:
    """The unit's text for ``python`` (kept as given: a venv's python must not be resolved).

    With ``user``, the service runs as that local user and its primary group.
    """
    template = files("wats_station").joinpath(UNIT_NAME).read_text(encoding="utf-8")
    return template.format(python=_exec_path(python), user_lines=_user_lines(user))


def install_unit(
    target_dir: Path = SYSTEM_UNIT_DIR, *, python: str = sys.executable, user: str | None = None
) -> Path:
    """Write the unit into ``target_dir`` atomically with mode 0644; returns its path."""
    text = render_unit(python=python, user=user)
    if not os.access(python, os.X_OK):
        raise UnitInstallError(f"python interpreter {python} does not exist or is not executable")
    if not target_dir.is_dir():
        raise UnitInstallError(f"cannot install {UNIT_NAME}: {target_dir} is not a directory")
    path = target_dir / UNIT_NAME
    try:
        write_atomically(path, text.encode(), mode=0o644)  # systemd units are public
    except OSError as error:
        raise UnitInstallError(
            f"cannot write {path}: {error.strerror}; run as root, or choose a writable directory"
        ) from None
    return path


def next_steps(instance: str) -> list[str]:
    """The commands that load the installed unit and start ``instance`` now and at boot."""
    return ["systemctl daemon-reload", f"systemctl enable --now wats-station@{instance}"]


def _exec_path(python: str) -> str:
    """``python`` as the first word of ExecStart=, escaped against systemd's own syntax."""
    if not os.path.isabs(python):
        raise ValueError(f"python interpreter must be an absolute path, got {python!r}")
    if any(ord(char) < 32 for char in python):
        raise ValueError(f"python interpreter path {python!r} holds a control character")
    # % starts a specifier and $ a variable; a backslash or a quote starts an escape.
    word = python.replace("%", "%%").replace("$", "$$")
    if re.search(r'[\s"\'\\]', word):
        word = '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word


def _user_lines(user: str | None) -> str:
    if user is None:
        return ""
    if not _USER_NAME.match(user):
        raise ValueError(
            f"user name {user!r} is not valid: use up to 32 letters, digits, '_', '.' or '-', "
            "starting with a letter or '_'"
        )
    try:
        gid = pwd.getpwnam(user).pw_gid
    except KeyError:
        raise ValueError(
            f"user {user!r} does not exist on this machine; create it first "
            f"(for example: useradd --system --no-create-home {user})"
        ) from None
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        raise ValueError(f"the primary group (gid {gid}) of user {user!r} has no name") from None
    return f"User={user}\nGroup={group}"
