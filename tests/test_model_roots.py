"""Models load only from a Hub id or a folder under the model roots (issue 12).

A folder outside the workspace, the data roots and ``SENSEI_MODEL_ROOTS`` — named by an
absolute path, a ``..`` escape, or a workspace symlink that points out — is refused at launch
(engine, Launch and Teacher pages) and again by each worker that would load it (a crafted job
row), naming the field, in the same words whether or not the folder exists. Here the model
roots are narrowed to ``tmp_path / "models"``; the "private" folder sits beside the workspace.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine import ablation
from engine.ablation.grow import extend_experiment
from engine.context import JobContext
from engine.serving import server as serving
from engine.specs import AblationSpec, DataSpec, ExperimentSpec, TeacherSpec, demo_spec
from engine.store import Store
from engine.teacher import job as teacher_job
from engine.teacher.playground import Variant, launch_teacher_job, run_variant
from engine.training.model_refs import MODEL_ROOTS_VAR, ModelNotAllowed
from tests.actors import ADMIN
from tests.test_pages import APP, app, texts
from tests.test_teacher_job import make_ctx

HUB_STUDENT = "Qwen/Qwen2.5-0.5B-Instruct"


@pytest.fixture(autouse=True)
def _narrow_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The session allows all of pytest's temporary folder (conftest); these tests need an outside.
    monkeypatch.setenv(MODEL_ROOTS_VAR, str(tmp_path / "models"))


@pytest.fixture
def private(tmp_path: Path) -> Path:
    """A model folder outside every root (created by :func:`refusals` on its second try)."""
    return tmp_path / "private-model"


def _absolute(store: Store, private: Path) -> str:
    return str(private)


def _dotdot(store: Store, private: Path) -> str:
    assert store.home.parent == private.parent
    return "../private-model"  # relative to the workspace


def _symlink(store: Store, private: Path) -> str:
    store.home.mkdir(parents=True, exist_ok=True)
    (store.home / "shared-model").symlink_to(private, target_is_directory=True)
    return "shared-model"  # Hub-shaped, but a folder (a link) of the workspace


ESCAPES = {"absolute": _absolute, "dotdot": _dotdot, "symlink": _symlink}


def missing_then_existing(private: Path) -> Iterator[str]:
    """Yield twice: with the private folder missing, then holding a model config."""
    yield "missing"
    private.mkdir(parents=True)
    (private / "config.json").write_text('{"model_type": "llama"}')
    yield "existing"
    shutil.rmtree(private)


def refusals(private: Path, attempt: Callable[[], object]) -> str:
    """The refusal of ``attempt`` with the private folder missing, then existing; asserts
    both are the same and returns it."""
    messages = []
    for _ in missing_then_existing(private):
        with pytest.raises(ModelNotAllowed) as err:
            attempt()
        messages.append(str(err.value))
    missing, existing = messages
    assert missing == existing
    return missing


def with_models(student: str = "tiny", teacher: str | None = None, recipe: str = "sft") -> ExperimentSpec:
    data = demo_spec("fast").model_dump(mode="json")
    data["student"].update(model=student, recipe=recipe)
    if teacher is not None:
        data["teacher"] = TeacherSpec(kind="local", model=teacher, max_tokens=8).model_dump(mode="json")
    return ExperimentSpec.model_validate(data)


# ------------------------------------------------------------------------------ launch
@pytest.mark.parametrize("escape", ESCAPES)
@pytest.mark.parametrize("field", ["student.model", "teacher.model"])
def test_launch_refuses_a_folder_outside_the_roots(
    store: Store, private: Path, escape: str, field: str
) -> None:
    ref = ESCAPES[escape](store, private)
    spec = with_models(student=ref) if field == "student.model" else with_models(teacher=ref)
    message = refusals(private, lambda: ablation.launch_experiment(store, spec, actor=ADMIN))
    assert message.startswith(f"{field}: {ref!r} cannot be loaded: only Hugging Face Hub ids")
    assert str(store.home.parent / "models") in message and "uploads" not in message  # the roots
    assert store.list_experiments() == [] and store.list_jobs() == []


def test_every_launch_path_and_every_varied_value_is_checked(store: Store, private: Path) -> None:
    varied = with_models().model_dump(mode="json")
    varied["ablation"]["vary"] = {"student.model": ["tiny", str(private)]}
    spec = ExperimentSpec.model_validate(varied)
    message = refusals(private, lambda: ablation.launch_experiment(store, spec, actor=ADMIN))
    assert message.startswith(f"student.model: {str(private)!r} cannot be loaded")
    teacher_only = with_models(teacher=str(private))
    assert refusals(private, lambda: launch_teacher_job(store, teacher_only, actor=ADMIN)).startswith(
        "teacher.model: "
    )
    assert store.list_experiments() == []

    # Extending re-checks too: here the admin no longer lists the folder the student came from.
    allowed = store.home.parent / "models" / "student"
    exp_id = ablation.launch_experiment(store, with_models(student=str(allowed)), actor=ADMIN)
    jobs = len(store.list_jobs())
    extend = lambda: extend_experiment(store, exp_id, seeds=[7], actor=ADMIN)  # noqa: E731
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(MODEL_ROOTS_VAR, str(private))  # another folder
        with pytest.raises(ModelNotAllowed, match=r"^student\.model: "):
            extend()
    assert len(store.list_jobs()) == jobs
    assert extend()  # listed again: the new seed is queued


def test_kd_never_says_whether_a_folder_outside_the_roots_exists(store: Store, private: Path) -> None:
    spec = with_models(teacher=str(private), recipe="kd")
    message = refusals(private, lambda: ablation.launch_experiment(store, spec, actor=ADMIN))
    assert message.startswith("teacher.model: ") and "not a folder here" not in message
    # Inside a root, a missing folder is still named as one (that tells nothing outside).
    missing = with_models(teacher=str(store.home / "no-such-teacher"), recipe="kd")
    with pytest.raises(ValueError, match="is not a folder here"):
        ablation.launch_experiment(store, missing, actor=ADMIN)


def test_hub_ids_and_folders_inside_the_roots_pass(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing is loaded at launch (this machine is offline): the ids are only validated.
    assert ablation.launch_experiment(
        store, with_models(student=HUB_STUDENT, teacher="org/teacher"), actor=ADMIN
    )
    for folder in (store.home / "models" / "teacher", tmp_path / "models" / "teacher"):
        folder.mkdir(parents=True)
    # A workspace-relative folder, and one under SENSEI_MODEL_ROOTS, are folders KD can distil.
    for teacher in ("models/teacher", str(tmp_path / "models" / "teacher")):
        assert ablation.launch_experiment(store, with_models(teacher=teacher, recipe="kd"), actor=ADMIN)
    # A Hub-shaped name that is a folder of the working directory is that folder (transformers
    # would load it from there): outside the roots, it is refused like any other.
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotAllowed, match=r"^student\.model: 'org/name' cannot be loaded"):
        ablation.launch_experiment(store, with_models(student="org/name"), actor=ADMIN)
    monkeypatch.chdir(store.home)
    assert ablation.launch_experiment(store, with_models(student="org/name"), actor=ADMIN)
    assert len(store.list_experiments()) == 4


# ------------------------------------------------------------------------------- pages
def test_the_launch_page_refuses_a_folder_outside_the_roots(store: Store, private: Path) -> None:
    at = app("views/launch.py")
    shown: dict[str, list[str]] = {"yaml": [], "form": []}
    for _ in missing_then_existing(private):
        at.text_area(key="spec_yaml").set_value(with_models(student=str(private)).to_yaml())
        at.button(key="yaml_validate").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert f"student.model: {str(private)!r} cannot be loaded" in at.error[0].value
        at.button(key="yaml_launch").click().run()
        shown["yaml"].append(at.error[0].value)
        at.text_input(key="f.student.model").set_value("../private-model")
        at.button(key="form_launch").click().run()
        shown["form"].append(at.error[0].value)
    for missing, existing in shown.values():
        assert missing == existing and missing.startswith("Refused — nothing was queued.")
    assert "student.model: '../private-model' cannot be loaded" in shown["form"][0]
    assert store.list_jobs() == []


def test_the_teacher_page_refuses_a_local_teacher_outside_the_roots(store: Store, private: Path) -> None:
    shown = []
    for _ in missing_then_existing(private):
        at = AppTest.from_file(APP, default_timeout=60).run()
        at.switch_page("views/teacher.py")
        at.session_state["tp.A.teacher.kind"] = "local"
        at.session_state["tp.A.teacher.model"] = str(private)
        at.run()
        at.button(key="tp.run").click().run(timeout=60)
        assert not at.exception, [e.value for e in at.exception]
        assert f"variant A: teacher.model: {str(private)!r} cannot be loaded" in at.error[0].value
        at.button(key="tp.launch.A").click().run()
        assert at.error[-1].value.startswith(f"teacher.model: {str(private)!r} cannot be loaded")
        shown.append(texts(at))
    assert shown[0] == shown[1]
    assert store.list_jobs() == []


# ----------------------------------------------------------------------------- workers
def _train_row(store: Store, spec: ExperimentSpec) -> JobContext:
    """A train job row written without launch_experiment (its dataset answered by a perfect teacher)."""
    from tests.test_train_job import _setup

    exp_id, _ = _setup(store, spec)
    job_spec = {"experiment": spec.model_dump(mode="json"), "train_size": 16, "seed": 0}
    with store.tx() as conn:
        run_id = store.add_run(conn, exp_id, 16, 0)
        job_id = store.add_job(conn, "train", job_spec, experiment_id=exp_id, run_id=run_id)
    job = store.get_job(job_id)
    assert job is not None
    return JobContext(store=store, job=job, spec=job["spec"])


@pytest.mark.parametrize("escape", ESCAPES)
def test_a_crafted_train_row_is_refused_before_the_student_loads(
    store: Store, private: Path, escape: str
) -> None:
    from engine.training import job as train_job

    ref = ESCAPES[escape](store, private)
    ctx = _train_row(store, with_models(student=ref))
    assert refusals(private, lambda: train_job.main(ctx)).startswith(
        f"student.model: {ref!r} cannot be loaded"
    )


def test_crafted_rows_are_refused_before_a_teacher_or_encoder_loads(store: Store, private: Path) -> None:
    from engine.judges.small import job as small_judge_job
    from engine.training import job as train_job

    # KD: the tiny student's base is built with the teacher's tokenizer, so that loads first.
    kd = _train_row(store, with_models(teacher=str(private), recipe="kd"))
    assert refusals(private, lambda: train_job.main(kd)).startswith("teacher.model: ")
    local = make_ctx(store, with_models(teacher=str(private)))
    assert refusals(private, lambda: teacher_job.main(local)).startswith("teacher.model: ")
    labels = ["accept", "reject"] * 4
    items = [{"text": f"answer {i}", "label": label, "source": "sme"} for i, label in enumerate(labels)]
    spec = {"items": items, "small_judge": {"encoder": str(private)}}
    job_id = store.enqueue("small_judge", spec)
    job = store.get_job(job_id)
    assert job is not None
    judge = JobContext(store=store, job=job, spec=spec)
    assert refusals(private, lambda: small_judge_job.main(judge)).startswith("small_judge.encoder: ")
    variant = Variant("A", with_models(teacher=str(private)))
    rows = [{"input": "Where is order A12345?", "reference": None}]
    assert refusals(private, lambda: run_variant(store, variant, rows)).startswith(
        "variant A: teacher.model: "
    )
    serve = lambda: serving.ensure_model_server(store, "base-x", str(private), field="student.model")  # noqa: E731
    assert refusals(private, serve).startswith("student.model: ")
    assert serving.list_servers(store) == []


@pytest.mark.slow
def test_a_local_teacher_in_the_workspace_answers(
    store: Store, tiny_demo: tuple[Path, list[dict[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(MODEL_ROOTS_VAR)  # the workspace itself is always a model root
    shutil.copytree(tiny_demo[0], store.home / "models" / "teacher")
    spec = with_models(teacher="models/teacher").model_copy(  # relative to the workspace, not the cwd
        update={
            "data": DataSpec(demo_examples=30, test_size=5),
            "ablation": AblationSpec(train_sizes=[16], seeds=[0], zero_shot=False),
        }
    )
    ctx = make_ctx(store, spec)
    teacher_job.main(ctx)
    exp = store.get_experiment(ctx.job["experiment_id"])
    assert exp is not None
    answers = store.get_teacher_responses(exp["dataset_id"], spec.teacher_key())
    assert len(answers) == 30 and all(a["error"] is None for a in answers.values())
