"""The Ablation page as a team uses it, in a real browser: overlay two recipes, comment, share
the link, and open the exported report; and one experiment that varies its recipe.

Two finished experiments (same task and test split, learning rates that differ) are written
into the workspace; Chromium overlays them, posts a comment, reloads the copied URL and sees
both curves and the comment again. The HTML report is then opened from disk and its chart
must be drawn (plotly inlined, no network). A finished ``ablation.vary: {student.recipe: [gold,
sft]}`` experiment draws one curve per recipe, and its diff names exactly ``student.recipe``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from engine.ablation.report import write_report
from engine.specs import ExperimentSpec
from engine.store import Store
from tests.curve_data import finished_experiment
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, server, shots

__all__ = ["server", "shots"]  # fixtures, imported so pytest finds them here

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def two_experiments(store: Store) -> tuple[str, str]:
    a = finished_experiment(store, [8, 16, 32, 64, 110], [0, 1])
    b = finished_experiment(store, [8, 16, 32, 64, 110], [0, 1], score=0.8, lr=1e-4)
    return a, b


def test_overlay_comment_and_shared_link(
    two_experiments: tuple[str, str], server: tuple[str, Path], shots: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    a, b = two_experiments
    url, home = server
    expect.set_options(timeout=90_000)  # a loaded 2-core machine renders slowly
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.set_default_timeout(60_000)
        try:
            page.goto(f"{url}/ablation?experiment={a}&compare={b}")
            expect(page.get_by_role("heading", name="Ablation")).to_be_visible()
            legend = page.locator(".legendtext")
            expect(legend.filter(has_text=a[-6:]).first).to_be_visible()
            expect(legend.filter(has_text=b[-6:]).first).to_be_visible()
            expect(page.get_by_text("student.learning_rate").first).to_be_attached()  # the diff grid
            page.get_by_label("Comment").fill("Recipe B is worse everywhere: keep A and collect 2k more.")
            page.get_by_role("button", name="Post").click()
            expect(page.get_by_text("Recipe B is worse everywhere")).to_be_visible()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(shots / "ablation-overlay.png"), full_page=True)
            shared = page.url
            assert f"experiment={a}" in shared and re.search(rf"compare={b}", shared)

            again = browser.new_page(viewport={"width": 1400, "height": 1100})
            again.goto(shared)
            expect(again.get_by_text("Recipe B is worse everywhere")).to_be_visible()
            legend = again.locator(".legendtext")
            expect(legend.filter(has_text=a[-6:]).first).to_be_visible()
            expect(legend.filter(has_text=b[-6:]).first).to_be_visible()

            paths = write_report(Store(home), a, tmp_path / "report", compare=[b])
            report = next(p for p in paths if p.name == "report.html")
            doc = browser.new_page()
            doc.goto(report.as_uri())
            expect(doc.locator("#curve .main-svg").first).to_be_visible()
            expect(doc.locator(".legendtext").filter(has_text=b[-6:]).first).to_be_visible()
            expect(doc.get_by_text("Recipe B is worse everywhere")).to_be_visible()
            doc.screenshot(path=str(shots / "report.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(shots / "curves-failure.png"), full_page=True)
            raise
        finally:
            browser.close()


def test_a_vary_experiment_draws_one_curve_per_value_and_diffs_only_the_varied_path(
    store: Store, server: tuple[str, Path], shots: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    exp_id = finished_experiment(store, [8, 16, 32], [0, 1], vary={"student.recipe": ["gold", "sft"]})
    exp = store.get_experiment(exp_id)
    assert exp is not None
    first = store.get_examples(exp["dataset_id"], "train")[0]  # the teacher gets one field wrong
    wrong = {**json.loads(first["reference"]), "order_id": "Z99999"}
    key = ExperimentSpec.model_validate(exp["spec"]).teacher_key()
    store.save_teacher_responses(
        exp["dataset_id"], key, [{"idx": first["idx"], "request_hash": "x", "output": json.dumps(wrong)}]
    )
    url, _ = server
    expect.set_options(timeout=60_000)  # a loaded 2-core machine renders slowly
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.set_default_timeout(60_000)
        try:
            page.goto(f"{url}/ablation?experiment={exp_id}")
            expect(page.get_by_role("heading", name="Ablation")).to_be_visible()
            # Two curves, one per recipe: the legend names exactly the two values.
            expect(page.locator(".legendtext")).to_have_text(["gold (95% interval)", "sft (95% interval)"])
            expect(page.get_by_text("curve field_accuracy [gold]:")).to_be_visible()
            expect(page.get_by_text("curve field_accuracy [sft]:")).to_be_visible()
            # The diff: one row, the varied path, gold against sft; nothing else differs.
            expect(
                page.get_by_role("heading", name="What differs between the compared curves")
            ).to_be_visible()
            # (The grid draws on a canvas; its cells are also the canvas's table, which is read here.)
            diff = page.get_by_test_id("stDataFrame").filter(has_text="this one")
            expect(diff.locator("thead th")).to_have_text(["experiment", "parameter", "gold", "this one"])
            expect(diff.locator("tbody tr")).to_have_count(1)
            expect(diff.locator("tbody td")).to_have_text(["sft", "student.recipe", "gold", "sft"])
            warning = page.get_by_text("cannot tell which one made the difference")
            expect(warning).to_have_count(0)  # the "differs in more than one parameter" warning
            # The recipes include gold: where its answers and the teacher's part is open below.
            expect(page.get_by_text("differs from the gold answer on 1 of")).to_be_visible()
            expect(page.get_by_text("fields that differ most: order_id (1)", exact=False)).to_be_visible()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(shots / "ablation-vary.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(shots / "vary-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
