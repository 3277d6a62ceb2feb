"""engine.ui.common: the tables, figures and specs the pages draw, tested without Streamlit."""

from __future__ import annotations

import time
from typing import Any

import pytest

from engine import ablation
from engine.specs import SpecError, demo_spec
from engine.store import Store
from engine.ui import common as ui
from engine.ui import curves
from tests.actors import ADMIN


def test_format_duration_and_ago() -> None:
    assert ui.format_duration(None) == ""
    assert ui.format_duration(42.4) == "42s"
    assert ui.format_duration(95) == "1m 35s"
    assert ui.format_duration(3 * 3600 + 120) == "3h 02m"
    now = time.time()
    assert ui.format_ago(now - 5, now) == "just now"
    assert ui.format_ago(now - 180, now) == "3 min ago"
    assert ui.format_ago(None) == ""


def test_form_defaults_round_trip_to_the_same_spec() -> None:
    base = demo_spec("standard")
    values = ui.form_defaults(base)
    assert values["ablation.train_sizes"] == "50, 100, 200, 400, 800"
    assert values["teacher.base_url"] == ""
    assert ui.spec_from_form(values, base) == base


def test_spec_from_form_applies_values() -> None:
    values = ui.form_defaults() | {
        "name": "  mine ",
        "ablation.train_sizes": "400,100 200",
        "ablation.seeds": "0, 1",
        "teacher.kind": "openai",
        "teacher.base_url": "http://127.0.0.1:9/v1",
        "teacher.api_key_env": "MY_KEY",
        "student.lora.enabled": True,
        "student.lora.r": 4,
    }
    spec = ui.spec_from_form(values)
    assert spec.name == "mine"
    assert spec.ablation.train_sizes == [100, 200, 400]
    assert spec.ablation.seeds == [0, 1]
    assert spec.teacher.base_url == "http://127.0.0.1:9/v1"
    assert spec.student.lora.enabled and spec.student.lora.r == 4
    assert "3 sizes × 2 seeds = 6 training runs" in ui.plan_sentence(spec)
    one = spec.model_copy(
        update={"ablation": spec.ablation.model_copy(update={"train_sizes": [100], "seeds": [0]})}
    )
    assert "1 size × 1 seed = 1 training run of" in ui.plan_sentence(one)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"ablation.train_sizes": "50, lots"}, "ablation.train_sizes"),
        ({"ablation.train_sizes": "5000"}, "ablation.train_sizes"),
        ({"teacher.kind": "openai"}, "base_url"),
        ({"teacher.api_key_env": "sk-abc123"}, "teacher.api_key_env"),
        ({"student.learning_rate": -1.0}, "student.learning_rate"),
        ({"name": "   "}, "name"),
    ],
)
def test_spec_from_form_errors_name_the_field(change: dict, field: str) -> None:
    with pytest.raises(SpecError, match=field):
        ui.spec_from_form(ui.form_defaults() | change)


def _job(i: int, status: str, **kw) -> dict:
    row = {
        "id": f"job-{i}",
        "kind": "train",
        "status": status,
        "progress": 0.0,
        "message": "",
        "error": None,
        "created_at": 100.0 + i,
        "started_at": None,
        "spec": {"train_size": 10 * i, "seed": 0},
        "log_path": None,
    }
    return row | kw


def test_jobs_frame_status_and_active_jobs() -> None:
    rows = [
        _job(3, "queued"),
        _job(1, "succeeded", progress=1.0, message="done"),
        _job(2, "running", progress=0.5, started_at=1000.0, message="step 5/10"),
        _job(0, "failed", kind="teacher", spec={}, error="boom"),
    ]
    frame = ui.jobs_frame(rows, now=1060.0)
    assert list(frame["job"]) == ["job-0", "job-1", "job-2", "job-3"]
    assert frame.loc[2, "eta"] == "1m 00s"
    assert frame.loc[0, "message"] == "boom"
    assert frame.loc[0, "train_size"] == "" and frame.loc[3, "train_size"] == "30"
    assert [j["id"] for j in ui.active_jobs(rows)] == ["job-2", "job-3"]
    assert ui.status_line(rows) == "1 queued · 1 running · 1 succeeded · 1 failed"
    assert ui.status_line([]) == "no jobs"
    assert ui.default_log_job(rows) == 2
    assert ui.job_label(rows[2]) == "train n=20 seed 0 · running · job-2"
    assert ui.focus_index(["a", "b"], "b") == 1 and ui.focus_index(["a"], "zz") == 0


def _curve(sizes: list[int], means: list[float], seeds: int = 3, **kw: Any) -> ablation.Curve:
    points = [
        ablation.Point(n, m, m - 0.03, m + 0.02, seeds, [m] * seeds)
        for n, m in zip(sizes, means, strict=True)
    ]
    runs = [
        {
            "run_id": f"run-{n}-{s}",
            "train_size": n,
            "seed": s,
            "field_accuracy": m,
            "steps": 10.0,
            "epochs": 2.5,
        }
        for n, m in zip(sizes, means, strict=True)
        for s in range(seeds)
    ]
    return ablation.Curve(metric="field_accuracy", points=points, runs=runs, **kw)


def test_curve_figure_has_intervals_seeds_baselines_and_a_fit_band() -> None:
    sizes, means = [16, 32, 64, 128, 256], [0.3, 0.45, 0.56, 0.64, 0.7]
    curve = _curve(sizes, means, baselines={"teacher": 0.85, "zero_shot": 0.02})
    curve.curve_fit = ablation.choose_fit(sizes, means, [p.stderr for p in curve.points])
    assert curve.fit is not None
    fig = curves.curve_figure(curve)
    kinds = [t.name for t in fig.data]
    assert kinds[0] == "single seeds" and "(95% interval)" in kinds[1] and "fit band" in kinds[2]
    assert fig.data[3].name.startswith("fit (")
    assert fig.layout.xaxis.type == "log"
    assert max(fig.data[3].x) == pytest.approx(256 * 4)
    assert list(fig.data[1].error_y.arrayminus) == pytest.approx([0.03] * 5)
    teacher = next(s for s in fig.layout.shapes if s.line.dash == "dash")
    assert teacher.y0 == 0.85  # the teacher is a reference line, not a ceiling
    assert any("teacher (reference)" in a.text for a in fig.layout.annotations)
    assert any(line.startswith("Fit:") for line in curves.fit_sentences(curve))
    percent = curves.curve_figure(curve, axis="percent_of_teacher")
    assert percent.data[1].y[-1] == pytest.approx(100 * 0.7 / 0.85)


def test_curve_figure_without_fit_or_baselines_says_why() -> None:
    curve = _curve([16], [0.3], seeds=1)
    curve.curve_fit = ablation.choose_fit([16], [0.3])
    fig = curves.curve_figure(curve)
    assert [t.name for t in fig.data] == ["mean over seeds (95% interval)"] and not fig.layout.shapes
    assert curves.fit_sentences(curve) == ["No fit: a validated fit needs at least 4 sizes (1 so far)."]
    frame = curves.points_frame(_curve([16, 32], [0.3, 0.5]))
    assert list(frame.columns) == [
        "train_size",
        "field_accuracy",
        "ci_low",
        "ci_high",
        "seeds",
        "gain_per_100",
    ]
    assert frame.loc[1, "gain_per_100"] == pytest.approx(100 * 0.2 / 16)
    runs = curves.runs_frame(_curve([16], [0.3], seeds=2))
    assert list(runs["steps"]) == [10, 10] and list(runs["epochs"]) == [2.5, 2.5]


def test_page_state_round_trips_through_the_url() -> None:
    ids, metrics = ["exp-a", "exp-b", "exp-c"], ["field_accuracy", "exact_match"]
    query = curves.to_query("exp-a", ["exp-b", "exp-c"], "exact_match", "percent_of_teacher")
    assert curves.parse_query(query, ids, metrics) == {
        "experiment": "exp-a",
        "compare": ["exp-b", "exp-c"],
        "metric": "exact_match",
        "axis": "percent_of_teacher",
    }
    hostile = {
        "experiment": "../../etc/passwd",
        "compare": "exp-b,$HOME,exp-b",
        "metric": "{0.__class__}",
        "axis": "x",
    }
    assert curves.parse_query(hostile, ids, metrics) == {
        "experiment": None,
        "compare": ["exp-b"],
        "metric": None,
        "axis": "absolute",
    }
    assert curves.parse_ints("1600, 3_200", "sizes") == [1600, 3200]
    with pytest.raises(ValueError, match="sizes: '1e12' is not a whole number"):
        curves.parse_ints("1e12", "sizes")


def test_store_backed_frames(store: Store) -> None:
    exp_id = ablation.launch_experiment(store, demo_spec("fast"), actor=ADMIN)
    assert ui.loss_figure(store, exp_id) is None
    runs = store.list_runs(exp_id)
    for step in (0, 2, 4):
        store.log_metrics(runs[0]["id"], step, {"loss": 3.0 - step / 2})
    fig = ui.loss_figure(store, exp_id)
    assert fig is not None and fig.data[0].name == "n=16 seed 0" and list(fig.data[0].y) == [3.0, 2.0, 1.0]

    frame = ui.experiments_frame(store)
    assert list(frame["id"]) == [exp_id] and frame.loc[0, "status"] == "queued"

    job_rows = store.list_jobs(experiment_id=exp_id)
    store.add_event("error", "worker_died", "worker died", job_id=job_rows[0]["id"])
    events = ui.events_frame(store, job_rows)
    assert list(events["event"]) == ["worker_died"]

    store.save_outputs(
        runs[0]["id"],
        [
            {"idx": i, "prompt": f"p{i}", "output": "{}", "reference": "{}", "scores": {"exact_match": 1.0}}
            for i in range(45)
        ],
    )
    page, pages = ui.outputs_page(store, runs[0]["id"], page=3, page_size=20)
    assert pages == 3 and list(page["idx"]) == list(range(40, 45))
    assert "exact_match" in page.columns
    assert ui.outputs_page(store, runs[1]["id"], 1)[0].empty


def test_launch_respects_no_autostart(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENSEI_NO_AUTOSTART", "1")
    assert not ui.autostart_enabled()
    exp_id = ui.launch(store, demo_spec("fast"), actor=ADMIN)
    assert len(store.list_jobs(experiment_id=exp_id)) == 3
    assert not (store.logs_dir / "scheduler.log").exists()
    monkeypatch.setenv("SENSEI_NO_AUTOSTART", "0")
    assert ui.autostart_enabled()
    monkeypatch.setenv("SENSEI_DEMO_PRESET", "fast")
    assert ui.demo_preset() == "fast"


def test_what_the_pages_import_loads_no_torch() -> None:
    """Pages open in a second, not after a torch import: heavy work lives in jobs."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    modules: set[str] = set()
    for path in [root / "app.py", *(root / "views").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("engine"):
                for alias in node.names:  # "from engine import ui" names a module; "import Store" not
                    sub = f"{node.module}.{alias.name}"
                    modules.add(sub if _is_module(sub) else str(node.module))
    assert "engine.judges.small.flow" in modules and "engine.serving.compare" in modules
    code = (
        "import sys\n" + "".join(f"import {m}\n" for m in sorted(modules)) + "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert done.stdout.strip() == "False", sorted(modules)


def _is_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def test_engine_never_imports_streamlit() -> None:
    """Every engine module imports in a process that has no streamlit: decisions stay testable."""
    import pkgutil
    import subprocess
    import sys
    from pathlib import Path

    import engine

    root = Path(__file__).resolve().parents[1]
    names = [
        m.name for m in pkgutil.walk_packages(engine.__path__, "engine.") if not m.name.endswith("__main__")
    ]
    assert "engine.ui.common" in names and "engine.store.db" in names
    code = "import sys\n" + "".join(f"import {m}\n" for m in names) + "print('streamlit' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_engine_root_holds_only_the_spine() -> None:
    """Features live in domain packages; the root keeps specs, store, jobs, context, devices, CLI."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "engine"
    modules = sorted(p.stem for p in root.glob("*.py"))
    assert len(modules) <= 12, modules
    prefixes = [m.split("_")[0] for m in modules if not m.startswith("__")]
    assert len(prefixes) == len(set(prefixes)), modules
    packages = {p.parent.name for p in root.glob("*/__init__.py")}
    for pkg in packages:  # no engine/<pkg>/<other package>_*.py: that module belongs in <other package>
        for path in (root / pkg).glob("*.py"):
            assert path.stem.split("_")[0] not in packages - {pkg} or "_" not in path.stem, path


def test_plural_counts() -> None:
    from engine.words import plural

    assert plural(1, "group") == "1 group" and plural(0, "group") == "0 groups"
    assert plural(2, "category") == "2 categories" and plural(1200, "row") == "1,200 rows"
    assert plural(3, "judge", "judges") == "3 judges"


def test_log_view_newest_first_search_and_cut(tmp_path: Any) -> None:
    from engine import jobs
    from engine.ui import logs

    text = "\n".join(f"line {i}" for i in range(100))
    view = logs.log_view(text, lines=3)
    assert view.text == "line 99\nline 98\nline 97"
    assert (view.shown, view.matched, view.total) == (3, 100, 100)
    assert view.caption() == "Last 3 of 100 lines, newest first"
    assert logs.log_view(text, lines=3, newest_first=False).text == "line 97\nline 98\nline 99"
    found = logs.log_view(text, "LINE 4", lines=3)
    assert found.text == "line 49\nline 48\nline 47" and found.matched == 11
    assert found.caption("LINE 4") == "11 of 100 lines contain “LINE 4” (the last 3 shown), newest first"
    path = tmp_path / "job.log"
    path.write_text("first line\nsecond line\nthird\n")
    assert jobs.read_log({"log_path": str(path)}) == "first line\nsecond line\nthird\n"
    assert jobs.read_log({"log_path": str(path)}, max_bytes=15) == "third\n"  # whole lines only
    assert jobs.read_log({"log_path": str(tmp_path / "missing.log")}) == ""
