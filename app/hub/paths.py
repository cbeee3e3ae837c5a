"""Where downloaded Hugging Face repos live on disk: one rule, used by downloads and serving.

    <models_dir>/hub/<org>--<name>/<revision>/            a finished download (servable)
    <models_dir>/hub/.partial/<org>--<name>--<revision>/  a download in progress (never served)

A download is moved from ``.partial`` to its final folder by one rename when every file is
complete, so "the final folder exists" means "the weights are all here".
"""

from __future__ import annotations

from pathlib import Path

from app.registry.schema import HF_REPO_PATTERN, check_revision

DEFAULT_REVISION = "main"


def check_repo(repo_id: str, revision: str | None = None) -> tuple[str, str]:
    """Validate a repo id and revision (refusing path tricks); returns them with the default revision."""
    revision = revision or DEFAULT_REVISION
    if not HF_REPO_PATTERN.fullmatch(repo_id) or ".." in repo_id:
        raise ValueError(f"{repo_id!r} is not a Hugging Face repo id (org/name)")
    return repo_id, check_revision(revision)


def download_id(repo_id: str, revision: str | None = None) -> str:
    """A file-name-safe id for one download: ``org--name--revision``."""
    repo_id, revision = check_repo(repo_id, revision)
    return f"{repo_id.replace('/', '--')}--{revision}"


def hub_root(models_dir: Path) -> Path:
    return Path(models_dir) / "hub"


def local_dir(models_dir: Path, repo_id: str, revision: str | None = None) -> Path:
    """The folder of a finished download (it exists only when complete)."""
    repo_id, revision = check_repo(repo_id, revision)
    return hub_root(models_dir) / repo_id.replace("/", "--") / revision


def partial_dir(models_dir: Path, repo_id: str, revision: str | None = None) -> Path:
    """The folder a download writes into until it is complete."""
    return hub_root(models_dir) / ".partial" / download_id(repo_id, revision)


def is_downloaded(models_dir: Path, repo_id: str, revision: str | None = None) -> bool:
    return local_dir(models_dir, repo_id, revision).is_dir()


def record_path(state_dir: Path, repo_id: str, revision: str | None = None) -> Path:
    """The JSON record of a download's progress (written by the downloads manager)."""
    return Path(state_dir) / "downloads" / f"{download_id(repo_id, revision)}.json"
