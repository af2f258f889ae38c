"""The demo's way in: an admin login `demo` (a fresh random password each start) and a viewer API
token, made in the demo's own central database before its inventory service starts. Printed next to
the dashboard URL; the token is the summary file's `api_token` (DESIGN.md, "Command line")."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class DemoAccess:
    login: str
    password: str
    api_token: str


def demo_access(db: str, login: str = "demo") -> DemoAccess:
    """Creates the database if new (migrations), the login (or a new password for it) and a token."""
    from inventory.accounts import Accounts
    from inventory.store import open_store

    store = open_store(db)
    try:
        accounts, now = Accounts(store), datetime.now(UTC)
        password = secrets.token_urlsafe(12)
        if accounts.get_user(login) is None:
            accounts.add_user(login, "admin", password, now)
        else:
            accounts.reset_password(login, password)
        _, token = accounts.create_token("nalox demo scripts", "viewer", "nalox demo", now)
    finally:
        store.close()
    return DemoAccess(login, password, token)
