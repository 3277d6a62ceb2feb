"""Artifacts beyond one machine: the workspace's folders mirrored to object storage or a shared path.

``SENSEI_ARTIFACTS`` names where models, checkpoints, exports and W&B files live for every
machine of a team: ``s3://bucket/prefix`` (S3 or an S3-compatible store such as MinIO or
moto; endpoint and keys come from the standard ``AWS_*`` variables, e.g.
``AWS_ENDPOINT_URL``), or a shared folder (``/mnt/shared/sensei`` or ``file:///mnt/…``).
Unset, everything stays in the local workspace, as on one machine.

The remote copy mirrors the workspace layout (``runs/<run_id>/``, ``experiments/<id>/``,
``wandb/``) and the local workspace is its cache. A worker pulls what it needs before it
reads (the experiment's base model, the checkpoint to resume from) and pushes what it makes
as soon as it is complete (each checkpoint as the trainer saves it, then the run's model with
``metadata.json``); Compare and export pull a run's model on demand. A folder is pushed file
by file with its marker file last (``trainer_state.json`` for a checkpoint, ``config.json``
for a base model, ``metadata.json`` for a run), and readers look for that marker, so half an
upload is never taken for a whole one.

Credentials stay in the environment: only :attr:`Artifacts.shown` (the URL, redacted) is ever
logged or shown.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from engine.redaction import redact_url

ENV = "SENSEI_ARTIFACTS"
"""Environment variable: where artifacts live beyond this machine (unset: local only)."""


class ArtifactsError(RuntimeError):
    """``SENSEI_ARTIFACTS`` is unusable, or a transfer failed; the message names the setting."""


def artifacts_url() -> str | None:
    """The ``SENSEI_ARTIFACTS`` setting (``None`` when unset or empty)."""
    return os.environ.get(ENV, "").strip() or None


def _open(url: str) -> tuple[Any, str, bool]:
    """``(filesystem, root path, is_local)`` for a ``SENSEI_ARTIFACTS`` value."""
    shown = redact_url(url)
    if "://" not in url:  # a plain path: a folder shared by every machine (NFS, a mounted volume)
        url = str(Path(url).expanduser().resolve())
    try:
        import fsspec

        protocol = fsspec.core.split_protocol(url)[0] or "file"
        options: dict[str, Any] = {}
        if protocol in ("s3", "s3a"):
            # Listings must be fresh: another machine may have uploaded a checkpoint a moment ago.
            options["use_listings_cache"] = False
            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            if endpoint:
                options["client_kwargs"] = {"endpoint_url": endpoint}
        fs, root = fsspec.core.url_to_fs(url, **options)
    except (ImportError, ValueError) as err:
        raise ArtifactsError(
            f"{ENV}={shown}: {redact_url(str(err))} (expected s3://bucket/prefix, a shared folder or file://…)"
        ) from None
    root = str(root).rstrip("/")
    if not root:
        raise ArtifactsError(f"{ENV}={shown}: name a bucket (s3://bucket/prefix)")
    local = protocol in ("file", "local")
    if local:
        try:
            os.makedirs(root, exist_ok=True)
        except OSError as err:
            raise ArtifactsError(f"{ENV}={shown}: cannot create the shared folder ({err})") from None
    return fs, root, local


class Artifacts:
    """The workspace's artifact folders, with their remote copy when ``SENSEI_ARTIFACTS`` is set.

    Paths are given as local paths under the workspace (``store.runs_dir / run_id / "model"``);
    the remote path is the same relative path under the remote root. Without a remote copy
    every method is a no-op (or a plain local check), so callers need no ``if``.
    """

    def __init__(self, home: str | Path, url: str | None = None):
        self.home = Path(home).resolve()
        self.shown = redact_url(url) if url else str(self.home)
        self._fs: Any = None
        self._root, self._local_fs = "", False
        if url:
            self._fs, self._root, self._local_fs = _open(url)

    @property
    def remote(self) -> bool:
        """Whether artifacts are mirrored beyond this machine."""
        return self._fs is not None

    # ------------------------------------------------------------------ paths
    def _rel(self, path: str | Path) -> str:
        path = Path(path)
        full = path if path.is_absolute() else self.home / path
        try:
            return PurePosixPath(full.resolve().relative_to(self.home)).as_posix()
        except ValueError:
            raise ArtifactsError(
                f"{full} is outside the workspace {self.home}: it has no place in {ENV}"
            ) from None

    def _remote(self, rel: str) -> str:
        return f"{self._root}/{rel}" if rel and rel != "." else self._root

    def _fail(self, verb: str, rel: str, err: BaseException) -> ArtifactsError:
        return ArtifactsError(
            f"{ENV}={self.shown}: cannot {verb} {rel}: {redact_url(str(err)) or type(err).__name__}"
        )

    # -------------------------------------------------------------- transfers
    def _listing(self, rel: str) -> dict[str, int]:
        """Remote files under ``rel`` (or ``rel`` itself): relative path -> size."""
        remote = self._remote(rel)
        try:
            found = self._fs.find(remote, detail=True)
        except FileNotFoundError:
            return {}
        except Exception as err:
            raise self._fail("list", rel, err) from err
        out = {}
        for name, info in found.items():
            if info.get("type", "file") != "file":
                continue
            size = info.get("size")
            out[str(name)[len(self._root) + 1 :]] = int(size if size is not None else self._fs.size(name))
        return out

    def _put(self, local: Path, rel: str) -> None:
        remote = self._remote(rel)
        try:
            if self._local_fs:  # copy then rename: a reader on another machine never sees half a file
                parent, name = remote.rsplit("/", 1)
                os.makedirs(parent, exist_ok=True)
                tmp = f"{parent}/.{name}.{secrets.token_hex(4)}.part"
                shutil.copyfile(local, tmp)
                os.replace(tmp, remote)
            else:
                self._fs.put_file(str(local), remote)
        except Exception as err:
            raise self._fail("upload", rel, err) from err

    def _get(self, rel: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{secrets.token_hex(4)}.part")
        try:
            self._fs.get_file(self._remote(rel), str(tmp))
            os.replace(tmp, local)
        except Exception as err:
            tmp.unlink(missing_ok=True)
            raise self._fail("download", rel, err) from err

    # ------------------------------------------------------------------ public
    def push(self, path: str | Path, *, last: Iterable[str] = ()) -> None:
        """Upload a file, or a folder's files, to the remote copy (no-op without one).

        Args:
            path: A file or folder under the workspace.
            last: File names uploaded after all others, in this order: the folder's
                completion marker (readers trust a folder once its marker is there).
        """
        path = Path(path)
        if not self.remote or not path.exists():
            return
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        files = [p for p in files if p.suffix != ".part"]  # not a download cut short (see _get)
        order = {name: k + 1 for k, name in enumerate(last)}
        for file in sorted(files, key=lambda p: (order.get(p.name, 0), str(p))):
            self._put(file, self._rel(file))

    def pull(self, path: str | Path, *, last: Iterable[str] = (), into: Path | None = None) -> Path:
        """Download a file, or a folder's files, from the remote copy into the workspace.

        A file already here is kept when its size matches (artifacts are written once).
        Without a remote copy, or when it lacks ``path``, nothing happens.

        Args:
            path: A file or folder under the workspace.
            last: File names downloaded after all others, in this order: the folder's
                completion marker, so a download cut short never looks complete.
            into: Download a folder's files here instead (e.g. a temporary folder that the
                caller renames into place once complete).

        Returns:
            ``path`` (which may not exist, when neither copy has it).
        """
        path = Path(path)
        if not self.remote:
            return path
        rel = self._rel(path)
        order = {name: k + 1 for k, name in enumerate(last)}
        listing = self._listing(rel)
        for name in sorted(listing, key=lambda n: (order.get(PurePosixPath(n).name, 0), n)):
            size = listing[name]
            inner = PurePosixPath(name).relative_to(rel).parts if name != rel else ()
            local = into.joinpath(*inner) if into is not None else self.home / name
            if local.is_file() and local.stat().st_size == size:
                continue
            self._get(name, local)
        return path

    def pull_file(self, path: str | Path) -> Path:
        """:meth:`pull` for a single file that, once written, never changes: a local copy
        is used without asking the remote copy (cheap enough for every page render)."""
        path = Path(path)
        return path if path.is_file() else self.pull(path)

    def exists(self, path: str | Path) -> bool:
        """Whether ``path`` exists here or in the remote copy."""
        path = Path(path)
        if path.exists() or not self.remote:
            return path.exists()
        return self.exists_remotely(path)

    def exists_remotely(self, path: str | Path) -> bool:
        """Whether the remote copy has ``path`` (False without one)."""
        if not self.remote:
            return False
        rel = self._rel(path)
        try:
            return bool(self._fs.exists(self._remote(rel)))
        except Exception as err:
            raise self._fail("check", rel, err) from err

    def names(self, path: str | Path) -> dict[str, set[str]]:
        """The remote folder's entries: child name -> names of the files directly in it
        (``{}`` without a remote copy or folder). One listing, for choosing among children."""
        if not self.remote:
            return {}
        rel = self._rel(path)
        out: dict[str, set[str]] = {}
        for name in self._listing(rel):
            parts = PurePosixPath(name).relative_to(rel).parts
            entry = out.setdefault(parts[0], set())
            if len(parts) == 2:
                entry.add(parts[1])
        return out

    def remove(self, path: str | Path) -> None:
        """Delete ``path`` (file or folder) from the remote copy; the local one is the caller's."""
        if not self.remote:
            return
        rel = self._rel(path)
        try:
            self._fs.rm(self._remote(rel), recursive=True)
        except FileNotFoundError:
            pass
        except Exception as err:
            raise self._fail("delete", rel, err) from err


def artifacts(store: Any) -> Artifacts:
    """The artifacts of ``store``'s workspace, per ``SENSEI_ARTIFACTS`` (checked here).

    Raises:
        ArtifactsError: the setting is malformed (unknown protocol, no bucket, ...).
    """
    return Artifacts(store.home, artifacts_url())


LOG_CACHE = "remote"
"""Folder under the workspace's ``logs/`` where the logs of jobs that ran on other machines
are downloaded (the job's own path is kept for the machine that runs it)."""


def job_log(log_path: str | Path) -> Path:
    """Where this machine reads a job's log: its own file when the job ran here, else the
    copy its node uploaded (``SENSEI_ARTIFACTS``), downloaded again whenever it has grown.

    ``log_path`` is ``<workspace>/logs/<job>.log``, the same path on every machine (each has
    its workspace at the same ``SENSEI_HOME``). Without a remote copy, or when it cannot be
    reached, the local path is returned even if it does not exist (a log not written yet).
    """
    path = Path(log_path)
    url = artifacts_url()
    if path.is_file() or url is None:
        return path
    cache = path.parent / LOG_CACHE / path.name
    with contextlib.suppress(ArtifactsError, OSError):  # unreachable: say "no log yet", not crash
        Artifacts(path.parent.parent, url).pull(path, into=cache)
    return cache if cache.is_file() else path


def run_folder(store: Any, run: Mapping[str, Any]) -> Path:
    """A run's folder on this machine.

    On one machine that is the folder the run row names. With ``SENSEI_ARTIFACTS`` the row's
    path belongs to whichever machine queued the run, so each machine uses its own
    workspace's ``runs/<run_id>`` as the cache of the remote copy.
    """
    if artifacts_url():
        return Path(store.runs_dir) / str(run["id"])
    return Path(run["run_dir"])


RUN_FILES = ("spec.json", "curation.json", "model", "metadata.json")
"""What a finished run keeps, in upload order: ``metadata.json`` last marks it complete."""


def push_run(store: Any, run_dir: Path) -> None:
    """Upload a finished run's model and records (not its checkpoints or scratch folders)."""
    arts = artifacts(store)
    for name in RUN_FILES:
        arts.push(run_dir / name, last=("config.json", "adapter_config.json"))


def pull_run(store: Any, run: Mapping[str, Any], *, names: Iterable[str] = RUN_FILES) -> Path:
    """Bring a run's model and records here (a no-op on one machine); returns its folder."""
    run_dir = run_folder(store, run)
    arts = artifacts(store)
    for name in names:
        # Records are written once: a local copy is trusted; a model folder is checked file by file.
        (arts.pull_file if name.endswith(".json") else arts.pull)(run_dir / name)
    return run_dir


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock across processes (released when the file closes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def base_lock(final: Path) -> AbstractContextManager[None]:
    """The lock every process takes to build or fetch an experiment's tiny base ``final``."""
    return file_lock(final.parent / "base_model.lock")


def into_place(final: Path, make: Callable[[Path], Any], marker: str = "config.json") -> bool:
    """Fill a temporary folder beside ``final`` with ``make(tmp)`` and rename it into place
    once ``marker`` is in it: a reader never sees half a folder, and a download cut short
    leaves nothing. Call under :func:`base_lock`. Returns whether ``final`` now exists."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        make(tmp)
        if not (tmp / marker).is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return True


def pull_tiny_base(store: Any, experiment_id: str, name: str = "base_model") -> Path:
    """An experiment's tiny base, fetched from the artifacts when this machine lacks it (under
    :func:`base_lock`, so never beside a train job building or fetching the same folder).
    Returns its path, which exists only when some machine made it."""
    final = Path(store.experiments_dir) / experiment_id / name
    if (final / "config.json").is_file():
        return final
    arts = artifacts(store)
    if arts.remote:
        with base_lock(final):
            if not (final / "config.json").is_file():
                into_place(final, lambda tmp: arts.pull(final, into=tmp))
    return final


def pull_base(store: Any, run_dir: Path) -> str | None:
    """The base of an adapter run trained on its experiment's tiny base on another machine.

    The adapter records its base by the training machine's path
    (``…/experiments/<id>/<name>``); that folder is brought into this workspace. ``None``
    when the run is no such adapter or the recorded folder is here (load it as recorded).
    """
    cfg = run_dir / "model" / "adapter_config.json"
    if not artifacts_url() or not cfg.is_file():
        return None
    recorded = Path(str(json.loads(cfg.read_text()).get("base_model_name_or_path") or ""))
    if recorded.is_dir() or len(recorded.parts) < 3 or recorded.parts[-3] != "experiments":
        return None
    local = pull_tiny_base(store, recorded.parts[-2], recorded.parts[-1])
    return str(local) if (local / "config.json").is_file() else None
