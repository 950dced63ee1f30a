"""Optuna storages of the ledger: opening one from ``--storage``, the URL a run records, and the
study a run uses in it."""

from __future__ import annotations

from pathlib import Path

import optuna

from autoprune.errors import UserError

JOURNAL_SUFFIXES = (".journal", ".log", ".jsonl")


def default_storage(run_dir: Path) -> str:
    return f"sqlite:///{(run_dir / 'study.db').resolve()}"


def storage_url(storage: str | None, run_dir: Path) -> str:
    """The storage a run uses, as a URL with absolute paths and no password (for provenance):
    the run directory's SQLite file, a journal file, or an SQLAlchemy URL."""
    if not storage:
        return default_storage(Path(run_dir))
    path = storage.removeprefix("journal:")
    if storage.startswith("journal:") or ("://" not in storage and path.endswith(JOURNAL_SUFFIXES)):
        return f"journal:{Path(path).expanduser().resolve()}"
    if storage.startswith("sqlite:///") and not storage.startswith("sqlite:////"):
        rest = storage.removeprefix("sqlite:///")
        if rest and rest != ":memory:":
            return f"sqlite:///{Path(rest).expanduser().resolve()}"
    try:
        from sqlalchemy.engine import make_url

        return make_url(storage).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL: recorded as given
        return storage


def run_study_name(run_dir: Path, storage: str | None, *, resume: bool) -> str:
    """The study a run uses when ``--study-name`` is not given: named after the run directory;
    on resume, the study of that name in the storage, else the only one it holds."""
    own = Path(run_dir).expanduser().resolve().name or "autoprune"
    if not resume or (not storage and not (Path(run_dir) / "study.db").is_file()):
        return own
    url = storage or default_storage(Path(run_dir))
    try:
        names = optuna.get_all_study_names(storage=open_storage(url))
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any storage failure is a user-facing config problem
        raise UserError(f"cannot open Optuna storage {url!r}: {str(exc).splitlines()[0]}") from None
    if own in names or not names:
        return own
    if len(names) == 1:
        return names[0]
    shown = ", ".join(sorted(names)[:6]) + (", ..." if len(names) > 6 else "")
    raise UserError(f"--resume: {url} holds {len(names)} studies ({shown}) and none is named {own!r}; "
                    "say which with --study-name")


def open_storage(url: str) -> str | optuna.storages.BaseStorage:
    """An Optuna storage for ``--storage``: a journal file (``journal:PATH``, or a path ending in
    .journal/.log/.jsonl), or an SQLAlchemy URL. SQLite waits up to a minute for a lock instead of
    five seconds, so searches sharing one file queue rather than fail."""
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    path = url.removeprefix("journal:")
    if url.startswith("journal:") or ("://" not in url and path.endswith(JOURNAL_SUFFIXES)):
        target = Path(path).expanduser()
        if target.is_dir() or not target.parent.is_dir():
            raise UserError(f"--storage {url}: a journal file needs an existing directory to live in, and not to be a directory")
        return JournalStorage(JournalFileBackend(str(target)))
    if url.startswith("sqlite:"):
        try:
            return RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
        except Exception as exc:  # noqa: BLE001 - any storage failure is a user-facing config problem
            raise UserError(f"cannot open Optuna storage {url!r}: {str(exc).splitlines()[0]}") from None
    return url


def study_exists(url: str, study_name: str) -> bool:
    """Whether ``url`` holds a study of that name; a storage that cannot be opened is a UserError."""
    return _study_exists(open_storage(url), study_name, url)


def _study_exists(storage: str | optuna.storages.BaseStorage, study_name: str, url: str) -> bool:
    try:
        names = optuna.get_all_study_names(storage=storage)
    except Exception as exc:  # noqa: BLE001 - any storage failure is a user-facing config problem
        raise UserError(f"cannot open Optuna storage {url!r}: {str(exc).splitlines()[0]}") from None
    return study_name in names
