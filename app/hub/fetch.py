"""The transfer of one download, run as its own process (``python -m app.hub.fetch``).

Why a process: cancelling must stop a transfer at once, and a Python thread blocked in a socket
read cannot be interrupted (it would finish its read or wait for the timeout); a process can be
terminated. The parent (app.hub.downloads) writes the plan as one JSON line on stdin and keeps
stdin open: end-of-file means the parent died, and this process exits rather than keep writing
files that the restarted parent will resume itself.

Why not ``hf_hub_download``: in huggingface_hub 2.x it downloads into a per-process temporary
file that it deletes on failure, so an interrupted file starts again from zero. Here each file
goes to ``<name>.incomplete`` in the partial folder through the client's own ``http_get``, which
asks for an HTTP Range from the bytes already there (across failures, cancels of the process
and restarts alike) and retries dropped connections itself; a complete file is checked against
the hub's sha256 (LFS files) and renamed to its name.

Exit status 0: every file is complete. Otherwise the last stdout line is ``{"error": "..."}``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from pathlib import Path

# Written (and so visible on disk as progress) and lost on termination in pieces of this size;
# huggingface_hub's default of 10 MiB would make progress jump in 10 MiB steps.
CHUNK_BYTES = 256 * 1024
EXIT_PARENT_GONE = 70


def incomplete_path(folder: Path, name: str) -> Path:
    """Where a file being downloaded lives until it is complete."""
    return folder / f"{name}.incomplete"


def fetch_file(plan: dict, entry: dict, headers: dict[str, str]) -> None:
    """Download one file of the plan into its folder, continuing from any bytes already there."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.file_download import http_get

    from app.hub.repo_files import check_filename

    name, size = check_filename(entry["name"]), entry["size"]
    folder = Path(plan["folder"])
    dest = folder / name
    if dest.is_file() and (size is None or dest.stat().st_size == size):
        return
    part = incomplete_path(folder, name)
    part.parent.mkdir(parents=True, exist_ok=True)
    # Pinned to the commit the plan was made from: a branch that moves mid-download cannot mix versions.
    url = hf_hub_url(plan["repo_id"], name, revision=plan["commit"], endpoint=plan["endpoint"])
    with open(part, "ab") as out:
        have = out.tell()
        if size is not None and have > size:  # not a prefix of this file: start it again
            out.truncate(0)
            have = 0
        http_get(url, out, resume_size=have, headers=dict(headers), expected_size=size, displayed_filename=name)
    if entry.get("sha256") and _sha256(part) != entry["sha256"]:
        part.unlink()
        raise ValueError(f"{name}: content does not match the hub's sha256 (removed; resume downloads it again)")
    os.replace(part, dest)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 * 1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def _exit_when_parent_dies() -> None:
    # os.read, not sys.stdin: a daemon thread holding the stdin buffer's lock aborts interpreter exit.
    while os.read(sys.stdin.fileno(), 4096):
        pass  # returns b"" only at end-of-file: the parent closed the pipe or died
    os._exit(EXIT_PARENT_GONE)


def _message(exc: BaseException, plan: dict, name: str) -> str:
    from app.hub.errors import HubError, translate

    translated = translate(exc, plan["repo_id"], plan["revision"])
    if type(translated) is HubError:  # not a hub answer: say what failed, in one line
        text = str(exc).splitlines()[0] if str(exc) else ""
        return f"{name}: {type(exc).__name__}: {text}"
    return f"{name}: {translated}"


def main() -> int:
    plan = json.loads(sys.stdin.buffer.readline())
    threading.Thread(target=_exit_when_parent_dies, daemon=True).start()
    from huggingface_hub import constants
    from huggingface_hub.utils import build_hf_headers

    constants.DOWNLOAD_CHUNK_SIZE = CHUNK_BYTES
    # token None: the client's own lookup (HF_TOKEN, saved login), as HfApi does in the parent.
    headers = build_hf_headers(token=plan.get("token"))
    name = "?"
    try:
        for entry in plan["files"]:
            name = entry["name"]
            fetch_file(plan, entry, headers)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as data
        print(json.dumps({"error": _message(exc, plan, name)}), flush=True)
        return 1
    print(json.dumps({"ok": True}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
