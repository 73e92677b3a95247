"""Pages in a real browser: Debian's Chromium driven by Playwright, against pytest-django's live
server (a thread of this process, on the test database).

The browser is the system's Chromium (``CHROMIUM``, else ``chromium`` on ``PATH``): Playwright
downloads nothing. ``.ci/run`` and ``make test`` install Debian's ``chromium`` where they can; on a
machine without it these tests are skipped with that reason.
"""

from __future__ import annotations

import os
import shutil

import pytest


def chromium_path() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser(django_db_setup, live_server):
    """One Chromium per test module. Playwright's synchronous API runs an event loop in this thread
    for as long as it is open, and Django refuses ORM calls while a loop runs: the ORM calls these
    tests make between two browser steps are synchronous all the same, so they are allowed here,
    and only until the module's browser is closed (the other tests run with Django's check)."""
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium on this machine: install Debian's chromium (make test and .ci/run do) "
                    "or set CHROMIUM to its path")
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
            yield browser
            browser.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def marketer(transactional_db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser("marketer", "marketer@example.com", "pw-marketer-1")


def submit(page, selector: str) -> None:
    """Click what submits a form and wait for the page it leads to (a plain click returns as soon as
    the click is done, while the old page is still showing)."""
    with page.expect_navigation():
        page.click(selector)


def sign_in(page, username: str, password: str, path: str) -> None:
    """Open ``path``, be sent to a sign-in form, fill it in and land back on ``path``."""
    page.goto(path)
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    submit(page, "input[type=submit], button[type=submit]")


@pytest.fixture
def admin_page(page, marketer):
    sign_in(page, "marketer", "pw-marketer-1", "/admin/")
    assert page.locator("#user-tools").is_visible(), page.content()[:2000]
    return page
