"""Staff for the dashboard tests: accounts and API tokens made straight in the store, a browser login,
and an HTTP client carrying a token (scripts never use a browser session)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from playwright.sync_api import Page, expect

from inventory.accounts import Accounts
from inventory.service import Service
from inventory.store import Store

PASSWORD = "correct horse battery staple"


def add_staff(store: Store, name: str, role: str, password: str = PASSWORD) -> str:
    Accounts(store).add_user(name, role, password, datetime.now(UTC))
    return password


def make_token(store: Store, role: str, name: str = "test script") -> str:
    return Accounts(store).create_token(name, role, "tests", datetime.now(UTC))[1]


def api_client(svc: Service, role: str = "inventory") -> httpx.Client:
    """An httpx client for the service's API and pages, with a token of `role`."""
    assert svc.store is not None
    token = make_token(svc.store, role, f"{role} script")
    return httpx.Client(base_url=svc.url or "", timeout=10, headers={"Authorization": f"Bearer {token}"})


def login(page: Page, base: str, name: str, password: str = PASSWORD) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.locator("#sign-in").click()
    expect(page.locator("#who")).to_contain_text(name)
