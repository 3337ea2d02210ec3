"""Who may use a shared ImPartial server, and which projects each user sees.

Access control is off unless the server's operator configures it, so a laptop install
asks for nothing. Two ways to turn it on, both read from the environment (or from the
``[access]`` table of Streamlit's ``secrets.toml``), never from the repository:

- ``IMPARTIAL_PASSWORD``: one shared password; people type their own user name with it.
- ``IMPARTIAL_USERS`` (``"alice:HASH,bob:HASH"``) or ``IMPARTIAL_USERS_FILE`` (one
  ``name:HASH`` a line): per-user passwords, stored as salted scrypt hashes made by
  ``python -m impartial.access NAME``.

A user listed with their own password always needs it; the shared password admits
every other name. Projects belong to the user who created them unless marked shared
(``can_open``). This module never imports streamlit: the login form lives in
``dashboard/access.py``.
"""

from __future__ import annotations

import functools
import getpass
import hashlib
import hmac
import math
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from impartial.errors import InputError

MAX_UPLOAD_MB = 200
"""Largest file one upload may hold; ``.streamlit/config.toml`` sets the same ``server.maxUploadSize``."""

# Streamlit's browser side turns maxUploadSize into bytes with 1000 per kB (1024 only on Windows: its
# utils check navigator.platform), so 200 MB there is 200 000 000 bytes; the same count here.
_BYTES_PER_MB = 1000 * 1000

PASSWORD_ENV = "IMPARTIAL_PASSWORD"
USERS_ENV = "IMPARTIAL_USERS"
USERS_FILE_ENV = "IMPARTIAL_USERS_FILE"

_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
# scrypt cost: 16 MiB of memory and ~50 ms per check, slow enough to make guessing from a
# stolen users file expensive, fast enough for a login form.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_SALT_BYTES, _KEY_BYTES = 16, 32
# Colons, not the usual "$", separate the fields: "$" is expanded by shells and docker compose.
_HASH_SCHEME = "scrypt"


def check_upload_size(name: str, n_bytes: int) -> None:
    """Raise InputError naming ``name`` when ``n_bytes`` exceeds ``MAX_UPLOAD_MB``.

    The size in the message is rounded up to 0.1 MB so a file just over the limit never
    reads as exactly the limit.
    """
    if n_bytes <= MAX_UPLOAD_MB * _BYTES_PER_MB:
        return
    size_mb = math.ceil(n_bytes / _BYTES_PER_MB * 10) / 10
    shown = f"{size_mb:.0f}" if size_mb.is_integer() else f"{size_mb:.1f}"
    raise InputError(f"{shown} MB is larger than the {MAX_UPLOAD_MB} MB upload limit", name)


def valid_user_name(user: str) -> bool:
    """True for 1-64 letters, digits and ``. _ @ -`` starting with a letter or digit."""
    return _USER_NAME.fullmatch(user) is not None


def hash_password(password: str, salt: bytes | None = None) -> str:
    """Salted scrypt hash of ``password`` as ``scrypt:N:R:P:SALT_HEX:KEY_HEX``.

    ``salt`` is random unless given (tests pass one to get a fixed string).
    """
    if not password:
        raise InputError("the password is empty")
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    key = _scrypt(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    return ":".join([_HASH_SCHEME, str(_SCRYPT_N), str(_SCRYPT_R), str(_SCRYPT_P), salt.hex(), key.hex()])


def check_password(password: str, stored_hash: str) -> bool:
    """True when ``password`` matches a hash from ``hash_password`` (constant-time comparison)."""
    if not _well_formed_hash(stored_hash):
        return False
    _, n, r, p, salt_hex, key_hex = stored_hash.split(":")
    key = _scrypt(password, bytes.fromhex(salt_hex), int(n), int(r), int(p))
    return hmac.compare_digest(key, bytes.fromhex(key_hex))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    # OpenSSL's default 32 MiB memory cap would reject larger N or R; allow twice what they need.
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=_KEY_BYTES, maxmem=256 * n * r + 2**20
    )


def _well_formed_hash(stored_hash: str) -> bool:
    """True when ``stored_hash`` has the six fields ``hash_password`` writes."""
    parts = stored_hash.split(":")
    if len(parts) != 6 or parts[0] != _HASH_SCHEME or not all(part.isdigit() for part in parts[1:4]):
        return False
    try:
        bytes.fromhex(parts[4])
        bytes.fromhex(parts[5])
    except ValueError:
        return False
    return True


def parse_users(text: str, source: str) -> dict[str, str]:
    """Read ``name:HASH`` entries separated by commas or new lines (``#`` starts a comment).

    ``source`` names where the text came from (a file path or a variable) in errors, so a
    typo stops the server at start instead of locking a user out later.
    """
    users: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        for entry in line.split("#", 1)[0].split(","):
            entry = entry.strip()
            if entry:
                user, stored_hash = _parse_user_entry(entry, f"{source} line {number}")
                users[user] = stored_hash
    return users


def _parse_user_entry(entry: str, where: str) -> tuple[str, str]:
    """Split one ``name:HASH`` entry and check both halves."""
    user, _, stored_hash = entry.partition(":")
    return _checked_user(user.strip(), stored_hash.strip(), where)


def _checked_user(user: str, stored_hash: str, where: str) -> tuple[str, str]:
    """Return ``(user, stored_hash)`` or raise InputError saying which half is wrong."""
    if not valid_user_name(user):
        raise InputError(f"{where}: {user!r} is not a valid user name (letters, digits, . _ @ -)")
    if not _well_formed_hash(stored_hash):
        raise InputError(f"{where}: the password hash of {user!r} is not one made by `python -m impartial.access`")
    return user, stored_hash


@dataclass(frozen=True)
class AccessSettings:
    """The server's login rules.

    ``shared_password`` admits any user name not in ``users``; ``users`` maps a name to
    its scrypt hash. Both empty means access control is off.
    """

    shared_password: str | None = None
    users: dict[str, str] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        """True when a login is required."""
        return bool(self.shared_password) or bool(self.users)

    def verify(self, user: str, password: str) -> bool:
        """True when ``user`` may log in with ``password``.

        A listed user must give their own password; the shared password covers the rest. Every check runs one
        scrypt, against a stand-in hash for names that are not listed, so the time to answer does not tell
        whether a user name exists.
        """
        if not valid_user_name(user) or not password:
            return False
        own_password = check_password(password, self.users.get(user) or _stand_in_hash())
        if user in self.users:
            return own_password
        if self.shared_password:
            return hmac.compare_digest(password.encode("utf-8"), self.shared_password.encode("utf-8"))
        return False


@functools.cache
def _stand_in_hash() -> str:
    """A valid hash of a random password: what an unknown user name is checked against."""
    return hash_password(secrets.token_urlsafe(16))


class LoginThrottle:
    """Growing delays after failed logins, per user name and per client (thread-safe, shared by all sessions).

    The first ``FREE_FAILURES`` failures of a key cost nothing; after that, a key must wait
    ``BASE_DELAY_S * 2 ** (failures - FREE_FAILURES)`` seconds (at most ``MAX_DELAY_S``) from its last failure
    before its next attempt is even checked. A success clears the user name's and the client's record.

    Args:
        clock: seconds, monotonic (tests pass a fake one).
    """

    FREE_FAILURES = 3
    BASE_DELAY_S = 1.0
    MAX_DELAY_S = 300.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: dict[str, tuple[int, float]] = {}  # key -> (failures in a row, time of the last)
        self._lock = threading.Lock()

    def wait_s(self, user: str, client: str) -> float:
        """Seconds before an attempt for this user name from this client will be checked (0: now)."""
        with self._lock:
            return max(self._remaining(key) for key in self._keys(user, client))

    def attempt(self, user: str, client: str, check: Callable[[], bool]) -> bool | float:
        """Run ``check`` unless a wait is due: True / False is its answer, a float the seconds left to wait."""
        wait = self.wait_s(user, client)
        if wait > 0:
            return wait
        success = check()
        with self._lock:
            for key in self._keys(user, client):
                if success:
                    self._failures.pop(key, None)
                else:
                    self._failures[key] = (self._failures.get(key, (0, 0.0))[0] + 1, self._clock())
        return success

    def _remaining(self, key: str) -> float:
        failures, last = self._failures.get(key, (0, 0.0))
        if failures < self.FREE_FAILURES:
            return 0.0
        delay = min(self.BASE_DELAY_S * 2 ** (failures - self.FREE_FAILURES), self.MAX_DELAY_S)
        return max(0.0, last + delay - self._clock())

    @staticmethod
    def _keys(user: str, client: str) -> tuple[str, str]:
        return f"user:{user.lower()}", f"client:{client}"


def load_settings(
    environ: Mapping[str, str] | None = None, secrets_table: Mapping[str, Any] | None = None
) -> AccessSettings:
    """Build the login rules from the environment, falling back to a secrets table.

    ``environ`` defaults to ``os.environ``. ``secrets_table`` is the ``[access]`` table of
    ``secrets.toml`` (keys ``password`` and ``users``, the latter a table name -> hash);
    an environment variable wins over the same setting there.
    """
    environ = os.environ if environ is None else environ
    secrets_table = secrets_table or {}
    password = environ.get(PASSWORD_ENV) or secrets_table.get("password") or None
    users = dict(
        _checked_user(str(name), str(stored), "secrets [access.users]")
        for name, stored in dict(secrets_table.get("users") or {}).items()
    )
    if environ.get(USERS_FILE_ENV):
        users_file = Path(environ[USERS_FILE_ENV])
        try:
            users.update(parse_users(users_file.read_text(encoding="utf-8"), str(users_file)))
        except OSError as error:
            raise InputError(f"cannot read the users file ({error.strerror})", users_file) from error
    if environ.get(USERS_ENV):
        users.update(parse_users(environ[USERS_ENV], USERS_ENV))
    return AccessSettings(shared_password=password, users=users)


def access_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """True when the environment asks for a login (see ``load_settings``)."""
    return load_settings(environ).enabled


def verify(user: str, password: str, environ: Mapping[str, str] | None = None) -> bool:
    """True when ``user`` may log in with ``password`` under the environment's settings."""
    return load_settings(environ).verify(user, password)


def can_open(project_meta: Mapping[str, Any], user: str | None) -> bool:
    """The single visibility rule for projects.

    ``user`` None means access control is off: everyone sees everything. Otherwise a
    project without an owner (made before access was turned on, or the demo), one owned
    by ``user``, or one with ``shared`` true is visible; all others are not.
    """
    if user is None:
        return True
    owner = project_meta.get("owner")
    return owner is None or owner == user or bool(project_meta.get("shared", False))


def main(argv: list[str] | None = None) -> int:
    """``python -m impartial.access NAME``: print a ``NAME:HASH`` line for the users file.

    The password is asked twice without echo (or read from one line of standard input
    when that is not a terminal), so it never lands in the shell history.
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not valid_user_name(args[0]):
        print("usage: python -m impartial.access USER_NAME  (letters, digits, . _ @ -)", file=sys.stderr)
        return 2
    if sys.stdin.isatty():
        password = getpass.getpass(f"Password for {args[0]}: ")
        if password != getpass.getpass("Again: "):
            print("The two passwords differ.", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\n")
    try:
        print(f"{args[0]}:{hash_password(password)}")
    except InputError as error:
        print(error, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
