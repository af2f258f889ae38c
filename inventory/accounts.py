"""Staff accounts for the central service: roles, argon2 password hashes, lock-out after repeated
failures, server-side sessions and API tokens (shown once, stored hashed, role-scoped, revocable).

Roles are ordered: viewer < inventory < operations < admin; each can do what the ones before it can.
A session or token id is a 256-bit random secret; only its SHA-256 is stored (a fast hash is right for
random secrets: nothing to guess; passwords, which people choose, get argon2id).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from inventory.config import ROLES, Role
from inventory.store import Store, StoreError, iso, parse_iso

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
TOKEN_PREFIX = "nalox_"
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
_hasher = PasswordHasher()  # argon2id with the library's current defaults (RFC 9106 low-memory profile)
_DUMMY_HASH = _hasher.hash("timing-equaliser-not-a-password")


class AccountError(StoreError):
    """A refused account operation (unknown user, bad name, weak password, ...); the message says why."""


def role_rank(role: str) -> int:
    return ROLES.index(role) if role in ROLES else -1


def role_allows(have: str, need: str) -> bool:
    return role_rank(have) >= role_rank(need) >= 0


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise AccountError(
            f"expected a user name of 1-64 letters, digits or . _ @ - (starting with a letter or digit), "
            f"got {name[:80]!r}"
        )
    return name


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise AccountError(f"expected a role among {', '.join(ROLES)}, got {role!r}")
    return role  # type: ignore[return-value]


def check_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AccountError(
            f"expected a password of {MIN_PASSWORD} to {MAX_PASSWORD} characters, got {len(password)}"
        )
    return password


def sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class User:
    name: str
    role: str
    disabled: bool
    created_at: datetime | None
    failed_logins: int
    locked_until: datetime | None
    last_login_at: datetime | None

    def locked(self, now: datetime) -> bool:
        return self.locked_until is not None and self.locked_until > now


@dataclass(frozen=True)
class Token:
    id: str
    name: str
    role: str
    created_at: datetime | None
    created_by: str
    revoked_at: datetime | None
    last_used_at: datetime | None


_USER_COLS = "name, role, disabled, created_at, failed_logins, locked_until, last_login_at"
_TOKEN_COLS = "id, name, role, created_at, created_by, revoked_at, last_used_at"
R = TypeVar("R")


def _user(r: tuple[Any, ...]) -> User:
    """A User from the columns _USER_COLS names (any after them are not its)."""
    name, role, off, created, fails, locked, last = r[:7]
    return User(name, role, bool(off), parse_iso(created), int(fails), parse_iso(locked), parse_iso(last))


def _token(r: tuple[Any, ...]) -> Token:
    """A Token from the columns _TOKEN_COLS names (any after them are not its)."""
    tid, name, role, created, created_by, revoked, last_used = r[:7]
    return Token(tid, name, role, parse_iso(created), created_by, parse_iso(revoked), parse_iso(last_used))


class Accounts:
    """Users, sessions and tokens in the central store (any backend: plain portable SQL)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # ------------------------------------------------------------------ users
    def add_user(self, name: str, role: str, password: str, now: datetime) -> User:
        check_name(name), check_role(role), check_password(password)
        with self.store.tx() as tx:
            n = tx.execute(
                "INSERT INTO staff_users (name, role, password_hash, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO NOTHING",
                (name, role, _hasher.hash(password), iso(now)),
            )
        if n != 1:
            raise AccountError(f"expected a new user name, {name!r} exists already")
        return self.get_user(name)  # type: ignore[return-value]

    def get_user(self, name: str) -> User | None:
        return self._first(_user, f"SELECT {_USER_COLS} FROM staff_users WHERE name = ?", name)

    def users(self) -> list[User]:
        return self._read(_user, f"SELECT {_USER_COLS} FROM staff_users ORDER BY name")

    def _read(self, record: Callable[[tuple[Any, ...]], R], sql: str, *params: object) -> list[R]:
        """The rows of one query, each as a record."""
        with self.store.tx() as tx:
            return [record(r) for r in tx.rows(sql, params)]

    def _first(self, record: Callable[[tuple[Any, ...]], R], sql: str, *params: object) -> R | None:
        rows = self._read(record, sql, *params)
        return rows[0] if rows else None

    def _must(self, name: str) -> User:
        u = self.get_user(name)
        if u is None:
            raise AccountError(f"expected an existing user, got {name!r}")
        return u

    def set_disabled(self, name: str, disabled: bool) -> User:
        self._must(name)
        with self.store.tx() as tx:
            tx.execute("UPDATE staff_users SET disabled = ? WHERE name = ?", (int(disabled), name))
            if disabled:
                tx.execute("DELETE FROM staff_sessions WHERE name = ?", (name,))
        return self._must(name)

    def set_role(self, name: str, role: str) -> User:
        self._must(name), check_role(role)
        with self.store.tx() as tx:
            tx.execute("UPDATE staff_users SET role = ? WHERE name = ?", (role, name))
        return self._must(name)

    def reset_password(self, name: str, password: str) -> User:
        """A new password; clears the lock-out and ends the user's sessions."""
        self._must(name), check_password(password)
        with self.store.tx() as tx:
            tx.execute(
                "UPDATE staff_users SET password_hash = ?, failed_logins = 0, locked_until = NULL "
                "WHERE name = ?",
                (_hasher.hash(password), name),
            )
            tx.execute("DELETE FROM staff_sessions WHERE name = ?", (name,))
        return self._must(name)

    def verify_login(
        self, name: str, password: str, now: datetime, max_failures: int, lockout: timedelta
    ) -> tuple[User | None, str]:
        """(user, "ok") or (None|user, why): unknown, disabled, locked, wrong. Failures count towards
        the lock-out; a success clears them. The hash is checked even for an unknown user (same time)."""
        with self.store.tx() as tx:
            r = tx.one(f"SELECT {_USER_COLS}, password_hash FROM staff_users WHERE name = ?", (name,))
        user = _user(r) if r else None
        stored = str(r[7]) if r and r[7] else _DUMMY_HASH
        try:
            good = _hasher.verify(stored, password) and user is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            good = False
        if user is None:
            return None, "unknown"
        if user.disabled:
            return user, "disabled"
        if user.locked(now):
            return user, "locked"
        with self.store.tx() as tx:
            if good:
                tx.execute(
                    "UPDATE staff_users SET failed_logins = 0, locked_until = NULL, last_login_at = ? "
                    "WHERE name = ?",
                    (iso(now), name),
                )
                if _hasher.check_needs_rehash(stored):
                    tx.execute(
                        "UPDATE staff_users SET password_hash = ? WHERE name = ?",
                        (_hasher.hash(password), name),
                    )
            else:
                fails = user.failed_logins + 1
                until = iso(now + lockout) if fails >= max_failures else None
                tx.execute(
                    "UPDATE staff_users SET failed_logins = ?, locked_until = ? WHERE name = ?",
                    (0 if until else fails, until, name),
                )
        if not good:
            return self._must(name), "locked_now" if user.failed_logins + 1 >= max_failures else "wrong"
        return self._must(name), "ok"

    # ------------------------------------------------------------------ sessions
    def open_session(self, name: str, now: datetime, source: str | None) -> str:
        sid = secrets.token_urlsafe(32)
        with self.store.tx() as tx:
            tx.execute(
                "INSERT INTO staff_sessions (id_hash, name, created_at, last_seen, source) "
                "VALUES (?, ?, ?, ?, ?)",
                (sha256(sid), name, iso(now), iso(now), (source or "")[:64]),
            )
        return sid

    def session_user(self, sid: str, now: datetime, idle: timedelta) -> User | None:
        """The session's user when the session exists, is not idle past `idle` and its user is enabled;
        touches last_seen (at most once a minute: a page view is not a database write)."""
        h = sha256(sid)
        with self.store.tx() as tx:
            r = tx.one("SELECT name, last_seen FROM staff_sessions WHERE id_hash = ?", (h,))
            if r is None:
                return None
            last = parse_iso(r[1])
            if last is None or now - last > idle:
                tx.execute("DELETE FROM staff_sessions WHERE id_hash = ?", (h,))
                return None
            if now - last > timedelta(seconds=60):
                tx.execute("UPDATE staff_sessions SET last_seen = ? WHERE id_hash = ?", (iso(now), h))
        user = self.get_user(str(r[0]))
        return user if user is not None and not user.disabled else None

    def close_session(self, sid: str) -> None:
        with self.store.tx() as tx:
            tx.execute("DELETE FROM staff_sessions WHERE id_hash = ?", (sha256(sid),))

    # ------------------------------------------------------------------ tokens
    def create_token(self, name: str, role: str, created_by: str, now: datetime) -> tuple[Token, str]:
        """A new token: (its record, the secret). The secret is shown once and never stored."""
        if not name.strip() or len(name) > 100:
            raise AccountError(f"expected a token name of 1-100 characters, got {name[:120]!r}")
        check_role(role)
        tid = secrets.token_hex(4)
        secret = f"{TOKEN_PREFIX}{tid}_{secrets.token_urlsafe(32)}"
        with self.store.tx() as tx:
            tx.execute(
                "INSERT INTO api_tokens (id, name, role, token_hash, created_at, created_by) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (tid, name.strip(), role, sha256(secret), iso(now), created_by),
            )
        return self.get_token(tid), secret  # type: ignore[return-value]

    def get_token(self, tid: str) -> Token | None:
        return self._first(_token, f"SELECT {_TOKEN_COLS} FROM api_tokens WHERE id = ?", tid)

    def tokens(self) -> list[Token]:
        return self._read(_token, f"SELECT {_TOKEN_COLS} FROM api_tokens ORDER BY created_at")

    def revoke_token(self, tid: str, now: datetime) -> Token:
        with self.store.tx() as tx:
            n = tx.execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (iso(now), tid)
            )
        t = self.get_token(tid)
        if t is None:
            raise AccountError(f"expected an existing token id, got {tid!r}")
        if n != 1:
            raise AccountError(f"token {tid} was revoked already, at {iso(t.revoked_at or now)}")
        return t

    def token_for(self, secret: str, now: datetime) -> Token | None:
        """The live token this secret belongs to, else None. last_used_at is touched at most once a
        minute (a script's every GET is not a database write)."""
        if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
            return None
        h = sha256(secret)
        with self.store.tx() as tx:
            r = tx.one(f"SELECT {_TOKEN_COLS}, token_hash FROM api_tokens WHERE token_hash = ?", (h,))
            if r is None or not hmac.compare_digest(str(r[7]), h) or r[5] is not None:
                return None
            last = parse_iso(r[6])
            if last is None or now - last > timedelta(seconds=60):
                tx.execute("UPDATE api_tokens SET last_used_at = ? WHERE id = ?", (iso(now), r[0]))
        return _token(r)

    # ------------------------------------------------------------------ the signing secret
    def secret_key(self) -> str:
        """The key that signs session cookies and CSRF tokens: made once, kept with the data, so every
        service process (and a restart) agrees on it."""
        with self.store.tx() as tx:
            tx.execute(
                "INSERT INTO settings (name, value) VALUES ('session_secret', ?) "
                "ON CONFLICT (name) DO NOTHING",
                (secrets.token_urlsafe(48),),
            )
            r = tx.one("SELECT value FROM settings WHERE name = 'session_secret'")
        assert r is not None
        return str(r[0])
