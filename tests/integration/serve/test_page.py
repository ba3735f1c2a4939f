"""The live page in a real headless Chromium (Debian's ``chromium``, driven by playwright; no browser
download): it loads, subscribes over graphql-ws, and its numbers change once the real sink commits new
changes to the PostgreSQL marts. A screenshot is saved under the test's tmp dir."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.integration.serve.shop import Api, running, token, write

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRED = os.environ.get("CDCWH_TEST_REQUIRE_BROWSER") == "1"
"""Set by .ci/run: there a missing browser or playwright fails the test instead of skipping it."""
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not REQUIRED,
    reason="no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)",
)
TIMEOUT_MS = 20_000


@pytest.fixture
def api(postgres_dsn: str, pg_schema: str, tmp_path: Path) -> Iterator[Api]:
    yield from running(postgres_dsn, pg_schema, tmp_path)


def total_revenue(dsn: str, schema: str) -> Decimal:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            sql.SQL(
                "SELECT coalesce(sum(line_amount), 0) FROM {} "
                "WHERE status IN ('placed', 'shipped', 'completed')"
            ).format(sql.Identifier(schema, "fact_order_items"))
        ).fetchone()
        assert row is not None
        return Decimal(row[0])


def test_the_page_updates_live_in_headless_chromium(api: Api, pg_schema: str, tmp_path: Path) -> None:
    assert CHROMIUM is not None, "CDCWH_TEST_REQUIRE_BROWSER=1 but no chromium on PATH"
    if not REQUIRED:
        pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) drives chromium")
    from playwright.sync_api import expect, sync_playwright

    before = total_revenue(api.dsn, pg_schema)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(f"{api.url}/#token={token('dashboard', subject='wallboard')}")
            expect(page.locator("#state")).to_have_text("live", timeout=TIMEOUT_MS)
            expect(page.locator("#total-revenue")).to_have_text(f"{before:.2f}", timeout=TIMEOUT_MS)
            expect(page.locator("#today-revenue")).to_have_text("0.00", timeout=TIMEOUT_MS)
            assert page.locator("#status-table tbody tr").count() >= 3
            assert "token=" not in page.url  # the page drops the token from the address bar
            # a new order on the day the page shows, through the real sink
            today = date.fromisoformat(page.locator("body").get_attribute("data-today") or "")
            api.shop.add_order(300, 1, today, "placed", [(2, "123.45")])
            write(api.dsn, pg_schema, api.shop)
            after = total_revenue(api.dsn, pg_schema)
            assert after - before == Decimal("246.90")
            expect(page.locator("#today-revenue")).to_have_text("246.90", timeout=TIMEOUT_MS)
            expect(page.locator("#today-orders")).to_have_text("1", timeout=TIMEOUT_MS)
            expect(page.locator("#total-revenue")).to_have_text(f"{after:.2f}", timeout=TIMEOUT_MS)
            assert page.locator("#chart canvas").count() == 1
            page.screenshot(path=str(tmp_path / "live-page.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "live-page.png").stat().st_size > 1000
