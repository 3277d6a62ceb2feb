"""Review and Judge calibration in a real browser (Debian's Chromium through Playwright).

The workspace is written through Store methods before Streamlit starts (no training), then
one answer is labelled from the browser and is still there after a reload. Screenshots land
in ``$SENSEI_SCREENSHOTS`` (default: the test's tmp folder).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from engine.store import Store
from tests.review_data import Populated, populate
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, live, server, shots

pytestmark = [pytest.mark.browser, pytest.mark.slow]
__all__ = ["server", "shots"]  # fixtures, imported so pytest finds them here


@pytest.fixture(autouse=True)
def _local_user(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local single-user mode acts as the server's user: here "tess" (before the server starts)."""
    monkeypatch.setenv("SENSEI_LOCAL_USER", "tess")


@pytest.fixture
def populated(store: Store) -> Populated:
    return populate(store)


def _browser(p: Any) -> tuple[Any, Any]:
    from playwright.sync_api import expect

    expect.set_options(timeout=60_000)  # a loaded 2-core machine renders slowly
    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    return browser, page


def _open(page: Any, url: str, title: str) -> None:
    """Open the app, then a page through the sidebar, as a user does."""
    from playwright.sync_api import expect

    page.goto(url)
    expect(page.get_by_test_id("stSidebarNav")).to_be_visible()
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True).click()
    expect(page.get_by_role("heading", name=title)).to_be_visible()


def _shot(page: Any, path: Path) -> None:
    # Streamlit scrolls inside its main container, so a tall viewport shows the whole page.
    page.set_viewport_size({"width": 1400, "height": 2200})
    page.wait_for_timeout(800)  # let charts and fonts settle
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1000})


def test_empty_review_and_calibration_say_what_to_do(server: tuple[str, Path], shots: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, _ = server
    with sync_playwright() as p:
        browser, page = _browser(p)
        try:
            # A deep link as a fresh server's very first page view still runs app.py
            # (sidebar and navigation), not the page alone.
            page.goto(f"{url}/review")
            expect(page.get_by_role("heading", name="Review")).to_be_visible()
            expect(page.get_by_test_id("stSidebarNav")).to_be_visible()
            expect(page.get_by_text("Local single-user mode")).to_be_visible()
            _open(page, url, "Review")
            expect(page.get_by_text("Run an experiment first")).to_be_visible()
            _shot(page, shots / "review-empty.png")
            _open(page, url, "Judge calibration")
            expect(page.get_by_text("Calibration needs two things")).to_be_visible()
            _shot(page, shots / "calibration-empty.png")
        finally:
            browser.close()


def test_label_an_answer_and_see_it_after_a_reload(
    populated: Populated, server: tuple[str, Path], shots: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, home = server
    with sync_playwright() as p:
        browser, page = _browser(p)
        try:
            _open(page, url, "Review")
            expect(page.get_by_text("Answer 1 of 12")).to_be_visible()
            expect(page.get_by_text("Your verdict (as tess)")).to_be_visible()
            _shot(page, shots / "review-populated.png")

            # Keyboard-friendly: category, note, then the Reject button, in tab order.
            category = live(page).get_by_role("combobox", name="Error category")
            category.fill("wrong")  # type to filter, Enter to pick: no mouse needed
            expect(page.get_by_role("option", name="wrong field value")).to_be_visible()
            category.press("Enter")
            live(page).get_by_label("Note", exact=True).fill("urgency should be high")
            page.get_by_role("button", name=re.compile("^Reject")).click()
            expect(page.get_by_text("Saved reject for example #100.")).to_be_visible()
            expect(page.get_by_text("Answer 2 of 12")).to_be_visible()  # moved on by itself

            page.reload()
            expect(page.get_by_text("Answer 2 of 12")).to_be_visible()  # the URL kept the item
            page.get_by_role("button", name=re.compile("^Previous")).click()
            expect(page.get_by_text("Answer 1 of 12")).to_be_visible()
            expect(page.get_by_text(re.compile(r"tess — reject · wrong field value · "))).to_be_visible()
            expect(page.get_by_role("paragraph").filter(has_text="urgency should be high")).to_be_visible()
            # Her own label opens for editing: the same person, the same note, after the reload.
            expect(live(page).get_by_label("Note", exact=True)).to_have_value("urgency should be high")
            _shot(page, shots / "review-after-reload.png")

            page.get_by_role("button", name="Export labels").click()
            with page.expect_download() as download:
                page.get_by_role("button", name="Current labels (JSONL)").click()
            lines = [json.loads(x) for x in Path(download.value.path()).read_text().splitlines()]
            assert {"annotator": "tess", "label": "reject", "note": "urgency should be high"}.items() <= next(
                x for x in lines if x["annotator"] == "tess"
            ).items()
            page.keyboard.press("Escape")

            page.get_by_text("Table", exact=True).click()
            expect(page.get_by_text(re.compile(r"^Page 1 of 1 · select a row"))).to_be_visible()
            _shot(page, shots / "review-table.png")
            grid = page.get_by_test_id("stDataFrame").first.bounding_box()
            assert grid is not None
            page.mouse.click(grid["x"] + 15, grid["y"] + 38 + 35 * 2 + 17)  # third row's checkbox
            expect(page.get_by_text("Answer 3 of 12")).to_be_visible()  # opened one at a time

            page.get_by_test_id("stSidebarNav").get_by_role("link", name="Judge calibration").click()
            expect(page.get_by_text(re.compile(r"^Disagreements \(\d+\)$"))).to_be_visible()
            expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible()
            other = page.get_by_role("combobox", name="Compare with")
            other.fill("strict")
            expect(page.get_by_role("option", name="strict")).to_be_visible()
            other.press("Enter")
            expect(page.get_by_text(re.compile("^lenient vs strict on the same"))).to_be_visible()
            _shot(page, shots / "calibration-populated.png")

            # A disagreement opens on Review, in the same session.
            table = page.get_by_test_id("stDataFrame").nth(1)
            table.scroll_into_view_if_needed()
            grid = table.bounding_box()
            assert grid is not None
            page.mouse.click(grid["x"] + 15, grid["y"] + 38 + 17)
            expect(page.get_by_text("Answer 3 of 12")).to_be_visible()
            expect(page.get_by_text("example #102")).to_be_visible()
        except Exception:
            _shot(page, shots / "review-failure.png")
            raise
        finally:
            browser.close()

    (label,) = Store(home).annotations(annotator_sub="local:tess")
    assert (label["item_ref"], label["label"]) == (populated.ref(0), "reject")
    assert (label["category"], label["note"]) == ("wrong field value", "urgency should be high")
