"""Imports read server files only under the data roots: the workspace's ``uploads/`` and
``data/`` and the folders an admin lists in ``SENSEI_DATA_ROOTS``.

An absolute path elsewhere, a ``..`` escape and a symlink that leads out are refused by the
engine (preview, validation, queueing and the worker) and by the Data page, in the same words
whether or not the file exists; an upload still imports; a file over the limit is refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.context import JobContext
from engine.data import import_job
from engine.data.import_job import queue_import
from engine.data.roots import MAX_IMPORT_MB, PathNotAllowed, data_roots, resolve_data_path
from engine.demo.task import generate_examples
from engine.specs import TaskSpec
from engine.store import Store
from engine.ui import data as dv
from tests.actors import ADMIN
from tests.inline_jobs import run_queued
from tests.test_data_page import button, open_page, texts

TASK = TaskSpec(name="tickets")


def jsonl(path: Path, n: int = 30) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"prompt": r["input"], "completion": r["reference"]} for r in generate_examples(n, seed=1)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A readable file outside every data root (the workspace is ``tmp_path/workspace``)."""
    return jsonl(tmp_path / "elsewhere" / "secret.jsonl")


def same_refusal(path: Path, attempt: Callable[[Path], object]) -> str:
    """``attempt(path)``'s refusal while the file exists, then after it is deleted: asserts
    they are the same words (nothing tells whether it exists) and returns them."""
    messages = []
    for _ in range(2):
        with pytest.raises(PathNotAllowed) as err:
            attempt(path)
        messages.append(str(err.value))
        path.unlink(missing_ok=True)
    assert messages[0] == messages[1]
    return messages[0]


def escapes(store: Store, outside: Path) -> dict[str, Path]:
    """Three ways out of ``uploads/``: an absolute path, a ``..`` path, a symlink."""
    uploads = store.home / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    link = uploads / "link.jsonl"
    link.symlink_to(outside)
    dots = uploads / ".." / ".." / outside.relative_to(store.home.parent)
    return {"absolute": outside, "dots": dots, "symlink": link}


def test_roots_are_uploads_data_and_the_declared_folders(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENSEI_DATA_ROOTS", os.pathsep.join([str(tmp_path / "shared"), "team", ""]))
    home = store.home.resolve()
    assert data_roots(store) == [
        home / "uploads",
        home / "data",
        (tmp_path / "shared").resolve(),
        home / "team",  # relative: to the workspace
    ]
    inside = jsonl(store.home / "data" / "train.jsonl")
    assert resolve_data_path(store, "data/train.jsonl") == inside.resolve()
    assert resolve_data_path(store, inside) == inside.resolve()
    assert resolve_data_path(store, tmp_path / "shared" / "later.jsonl")  # need not exist yet
    with pytest.raises(PathNotAllowed):
        resolve_data_path(store, store.home / "sensei.db")  # the workspace itself is not a root


@pytest.mark.parametrize("how", ["absolute", "dots", "symlink"])
def test_a_path_out_of_the_roots_is_refused_the_same_whether_it_exists(
    store: Store, outside: Path, how: str
) -> None:
    path = escapes(store, outside)[how]
    # The file behind the path is deleted between the two attempts, not the link itself.
    message = same_refusal(outside, lambda _: resolve_data_path(store, path))
    assert message == (
        f"{path}: only files under the data roots can be read ({store.home.resolve() / 'uploads'}, "
        f"{store.home.resolve() / 'data'}); upload the file instead, or ask an admin to add its "
        "folder to SENSEI_DATA_ROOTS"
    )


def test_a_symlink_that_stays_inside_is_fine_and_a_folder_linking_out_is_not(
    store: Store, outside: Path
) -> None:
    target = jsonl(store.home / "data" / "real.jsonl")
    link = store.home / "uploads" / "alias.jsonl"
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    assert resolve_data_path(store, link) == target.resolve()
    folder = store.home / "data" / "saved"
    folder.mkdir()
    (folder / "data-00000.arrow").symlink_to(outside)
    with pytest.raises(PathNotAllowed):
        resolve_data_path(store, folder)


def test_preview_validation_and_queueing_refuse_outside_paths(store: Store, outside: Path) -> None:
    preview = dv.preview_source(store, outside)
    assert preview.error and "only files under the data roots" in preview.error and preview.rows.empty
    assert dv.source_format(store, outside) is None  # not even sniffed
    jsonl(outside)
    same_refusal(outside, lambda p: dv.check_import(store, p, task=TASK))
    jsonl(outside)
    same_refusal(outside, lambda p: queue_import(store, p, task=TASK, actor=ADMIN))
    assert store.list_jobs() == []


def test_the_worker_refuses_a_crafted_import_row(store: Store, outside: Path) -> None:
    spec = import_job.ImportJobSpec(path=str(outside), task=TASK).model_dump(mode="json")
    job_id = store.enqueue(import_job.KIND, spec)  # not through queue_import
    job = store.get_job(job_id)
    assert job is not None
    same_refusal(outside, lambda _: import_job.main(JobContext(store=store, job=job, spec=spec)))
    assert store.list_datasets() == []


def test_an_upload_still_imports(store: Store, tmp_path: Path) -> None:
    data = jsonl(tmp_path / "mine.jsonl").read_bytes()
    path = dv.save_upload(store, "mine.jsonl", data, actor=ADMIN)
    assert dv.check_import(store, path, task=TASK).report.rows_valid == 30
    job_id = queue_import(store, path, task=TASK, test_size=5, actor=ADMIN)
    assert run_queued(store, "import") == [job_id]
    (ds,) = store.list_datasets()
    assert ds["name"] == "mine" and ds["n_train"] + ds["n_test"] == 30


def test_a_file_over_the_limit_is_refused_with_its_name_and_the_limit(store: Store) -> None:
    big = store.home / "data" / "huge.jsonl"
    big.parent.mkdir(parents=True)
    with big.open("wb") as fh:  # sparse: the size is real, the disk is not used
        fh.truncate(MAX_IMPORT_MB * 2**20 + 1)
    words = f"huge.jsonl: {MAX_IMPORT_MB:,} MB is more than the {MAX_IMPORT_MB} MB an import reads"
    for attempt in (
        lambda: dv.check_import(store, big, task=TASK),
        lambda: queue_import(store, big, task=TASK, actor=ADMIN),
    ):
        with pytest.raises(ValueError, match=words):
            attempt()
    assert store.list_jobs() == []


# -------------------------------------------------------------------------------- page
def test_the_data_page_names_the_roots_and_refuses_other_paths(store: Store, outside: Path) -> None:
    at = open_page()
    assert f"Only files under the data roots can be read: `{store.home.resolve() / 'uploads'}`" in texts(at)
    shown = []
    for _ in range(2):
        at.text_input(key="upload_path").set_value(str(outside)).run()
        assert not at.exception, [e.value for e in at.exception]
        assert "only files under the data roots can be read" in at.error[0].value
        assert not at.dataframe and not [b for b in at.button if b.label == "Validate"]
        shown.append(texts(at))
        outside.unlink(missing_ok=True)  # the second time the file is gone: same page
    assert shown[0] == shown[1]

    inside = jsonl(store.home / "data" / "tickets.jsonl")
    at.text_input(key="upload_path").set_value("data/tickets.jsonl").run()
    assert not at.error and at.dataframe  # previewed
    button(at, "Validate").click().run()
    assert "All 30 rows are valid" in texts(at) and inside.exists()
