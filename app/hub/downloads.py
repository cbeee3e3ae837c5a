"""Downloads of hub repos into the models folder: progress, cancel, resume, restart-proof.

- Where: a download writes into ``paths.partial_dir`` and its folder is renamed to
  ``paths.local_dir`` only when every file is complete, so a partial download is never served.
- What: the files vLLM loads (repo_files.select_files), pinned to the commit the download began from.
- How: one child process per download (app.hub.fetch; see there why a process), at most
  ``max_active`` at once, the rest ``queued``. Progress is the size of the files on disk, so it
  is right after a restart too. Cancel terminates the process and removes the partial folder; a
  failed download keeps its bytes and ``resume`` continues from them (HTTP Range).
- Records: one JSON file per download under ``<state_dir>/downloads/<id>.json``, written
  atomically (temp file + rename), so ``list()`` and ``resume_unfinished()`` survive restarts.
  The API process is their single writer.
- The HF token goes to huggingface_hub only (the child gets it on its stdin): never into a
  record, an event, a log line or an error message.

Record: ``{id, repo_id, revision, commit, pipeline_tag, state, error, files: [{name, size, done, sha256}],
bytes_done, bytes_total, percent, rate_bps, eta_s, created_at, started_at, updated_at,
finished_at, local_path}``; states ``queued | running | completed | failed | cancelled``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from huggingface_hub import HfApi

from app.hub import paths
from app.hub.errors import BadRepoId, DownloadError, NotEnoughDisk, translate
from app.hub.fetch import incomplete_path
from app.hub.repo_files import check_filename, select_files
from app.settings import PROJECT_ROOT, without_secrets

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")
POLL_S = 0.2  # how often progress is read from disk
SAVE_EVERY_S = 1.0  # how often a running download's record is written
RATE_WINDOW_S = 5.0  # transfer rate is averaged over this much recent time
STOP_GRACE_S = 3.0  # after SIGTERM, how long a transfer process gets before SIGKILL
DEFAULT_MIN_FREE_BYTES = 2 * 1024**3  # disk left free after a download, for logs, caches, the next edit

EventSink = Callable[[str, dict], None]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _gb(n: float) -> str:
    return f"{n / 1024**3:.2f} GiB"


class _Job:
    """A running transfer: its process, the thread watching it, recent progress samples."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.stopped = False  # set by cancel()/shutdown(): they, not the watcher, decide the outcome
        self.samples: deque[tuple[float, int]] = deque()
        self.saved_at = 0.0
        self.thread: threading.Thread | None = None


class DownloadManager:
    """Starts, tracks, cancels and resumes downloads of hub repos (thread-safe)."""

    def __init__(self, models_dir: Path, state_dir: Path, endpoint: str | None = None, token: str | None = None,
                 on_event: EventSink | None = None, min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
                 max_active: int = 2) -> None:
        self.models_dir = Path(models_dir)
        self.records_dir = Path(state_dir) / "downloads"
        self.records_dir.mkdir(parents=True, exist_ok=True)
        self.min_free_bytes = min_free_bytes
        self.max_active = max_active
        self._api = HfApi(endpoint=endpoint, token=token)
        self._token = token
        self._on_event = on_event
        self._lock = threading.RLock()
        self._jobs: dict[str, _Job] = {}
        self._events: list[tuple[str, dict]] = []
        self._closed = False
        self._records = self._load()

    # --- public API ---------------------------------------------------------------------------
    def start(self, repo_id: str, revision: str = paths.DEFAULT_REVISION) -> dict:
        """Start downloading a repo (or return its record if already running or downloaded).

        Raises BadRepoId, RepoNotFound, GatedRepo, HubUnreachable, NotEnoughDisk (HubError subclasses).
        """
        repo_id, revision = self._check(repo_id, revision)
        did = paths.download_id(repo_id, revision)
        with self._lock:
            self._check_open()
            record = self._records.get(did)
            if record and record["state"] in ACTIVE:
                return copy.deepcopy(record)
            if paths.is_downloaded(self.models_dir, repo_id, revision):
                return self._already_downloaded(did, repo_id, revision)
            failed = record is not None and record["state"] == "failed"
        if failed:  # continue from its bytes rather than start over
            return self.resume(did)
        plan = self._plan(repo_id, revision)  # network: outside the lock
        with self._lock:
            self._check_open()
            record = self._records.get(did)
            if record and record["state"] in ACTIVE:  # a concurrent start() won the race
                return copy.deepcopy(record)
            partial = paths.partial_dir(self.models_dir, repo_id, revision)
            if partial.exists() and (record is None or record.get("commit") != plan["commit"]):
                shutil.rmtree(partial)  # bytes of another commit must not be taken for this one
            record = {"id": did, "repo_id": repo_id, "revision": revision, **plan, "state": "queued",
                      "error": None, "bytes_done": 0, "percent": 0.0, "rate_bps": 0.0, "eta_s": None,
                      "created_at": _now(), "started_at": None, "updated_at": _now(), "finished_at": None,
                      "local_path": None}
            self._refresh(record)
            self._check_disk(record)
            self._records[did] = record
            self._save(record)
            self._schedule()
            result = copy.deepcopy(record)
        self._flush_events()
        return result

    def list(self) -> list[dict]:
        """Every known download, oldest first."""
        with self._lock:
            return [copy.deepcopy(r) for r in sorted(self._records.values(), key=lambda r: r["created_at"])]

    def get(self, download_id: str) -> dict:
        """One download's record; KeyError if unknown."""
        with self._lock:
            return copy.deepcopy(self._record(download_id))

    def cancel(self, download_id: str) -> dict:
        """Stop a download now and remove its partial data (a completed download is left alone)."""
        with self._lock:
            record = self._record(download_id)
            if record["state"] in ("completed", "cancelled"):
                return copy.deepcopy(record)
            job = self._jobs.pop(download_id, None)
            if job:
                job.stopped = True
            record["state"] = "cancelled"  # before the lock is released, so nothing reschedules it
        if job:
            self._stop(job)
        shutil.rmtree(paths.partial_dir(self.models_dir, record["repo_id"], record["revision"]), ignore_errors=True)
        with self._lock:
            record.update(finished_at=_now(), rate_bps=0.0, eta_s=None, error=None)
            self._refresh(record)
            self._save(record)
            self._event("download_cancelled", record)
            self._schedule()
            result = copy.deepcopy(record)
        self._flush_events()
        return result

    def resume(self, download_id: str) -> dict:
        """Continue a failed or cancelled download from the bytes on disk (cancelled ones start over)."""
        with self._lock:
            self._check_open()
            record = self._record(download_id)
            if record["state"] in ACTIVE or record["state"] == "completed":
                return copy.deepcopy(record)
            self._refresh(record)
            self._check_disk(record)
            record.update(state="queued", error=None, finished_at=None, updated_at=_now())
            self._save(record)
            self._schedule()
            result = copy.deepcopy(record)
        self._flush_events()
        return result

    def resume_unfinished(self) -> list[dict]:
        """Continue the downloads that were queued or running when the process stopped (call at startup)."""
        resumed = []
        with self._lock:
            self._check_open()
            for record in sorted(self._records.values(), key=lambda r: r["created_at"]):
                if record["state"] not in ACTIVE or record["id"] in self._jobs:
                    continue
                self._refresh(record)
                try:
                    self._check_disk(record)
                except NotEnoughDisk as exc:
                    self._fail(record, str(exc))
                    continue
                record.update(state="queued", updated_at=_now())
                self._save(record)
                resumed.append(record)
            self._schedule()
            result = [copy.deepcopy(r) for r in resumed]
        self._flush_events()
        return result

    def shutdown(self) -> None:
        """Stop every transfer; their records say ``queued`` so the next resume_unfinished() continues them."""
        with self._lock:
            self._closed = True
            jobs = list(self._jobs.items())
            self._jobs.clear()
            for _, job in jobs:
                job.stopped = True
        for _, job in jobs:
            self._stop(job)
        with self._lock:
            for did, _ in jobs:
                record = self._records[did]
                record.update(state="queued", rate_bps=0.0, eta_s=None)
                self._refresh(record)
                self._save(record)

    # --- planning and checks --------------------------------------------------------------------
    @staticmethod
    def _check(repo_id: str, revision: str | None) -> tuple[str, str]:
        try:
            return paths.check_repo(repo_id, revision)
        except ValueError as exc:
            raise BadRepoId(str(exc)) from None

    def _check_open(self) -> None:
        if self._closed:
            raise DownloadError("the download manager is shut down")

    def _plan(self, repo_id: str, revision: str) -> dict:
        """The commit and files (name, size, sha256) to fetch, from model_info(files_metadata=True)."""
        try:
            info = self._api.model_info(repo_id, revision=revision, files_metadata=True)
        except Exception as exc:  # noqa: BLE001 - becomes a HubError with a readable reason
            raise self._redacted(translate(exc, repo_id, revision)) from None
        siblings = {s.rfilename: s for s in info.siblings or []}
        files = []
        for name in select_files(list(siblings)):
            try:
                check_filename(name)
            except ValueError as exc:
                raise DownloadError(f"{repo_id}: {exc}") from None
            sibling = siblings[name]
            files.append({"name": name, "size": sibling.size, "done": 0,
                          "sha256": sibling.lfs.sha256 if sibling.lfs else None})
        if not files:
            raise DownloadError(f"{repo_id}@{revision} has no files to download")
        if info.gated:
            # The metadata of a gated repo is public, its files are not: refuse now (GatedRepo)
            # rather than start a transfer that fails at its first file.
            try:
                self._api.file_exists(repo_id, files[0]["name"], revision=revision)
            except Exception as exc:  # noqa: BLE001
                raise self._redacted(translate(exc, repo_id, revision)) from None
        return {"commit": info.sha or revision, "files": files, "pipeline_tag": info.pipeline_tag,
                "bytes_total": sum(f["size"] or 0 for f in files)}

    def _check_disk(self, record: dict) -> None:
        self.models_dir.mkdir(parents=True, exist_ok=True)
        remaining = record["bytes_total"] - record["bytes_done"]
        free = shutil.disk_usage(self.models_dir).free
        if remaining + self.min_free_bytes > free:
            raise NotEnoughDisk(
                f"not enough disk space for {record['repo_id']}@{record['revision']}: {_gb(remaining)} still to "
                f"download plus a {_gb(self.min_free_bytes)} margin, but only {_gb(free)} is free in {self.models_dir}")

    def _already_downloaded(self, did: str, repo_id: str, revision: str) -> dict:
        record = self._records.get(did)
        if record is None or record["state"] != "completed":
            final = paths.local_dir(self.models_dir, repo_id, revision)
            files = [{"name": str(p.relative_to(final)), "size": p.stat().st_size, "done": p.stat().st_size,
                      "sha256": None} for p in sorted(final.rglob("*")) if p.is_file()]
            total = sum(f["size"] for f in files)
            record = {"id": did, "repo_id": repo_id, "revision": revision, "commit": None, "state": "completed",
                      "error": None, "files": files, "bytes_done": total, "bytes_total": total, "percent": 100.0,
                      "rate_bps": 0.0, "eta_s": 0, "created_at": _now(), "started_at": None,
                      "updated_at": _now(), "finished_at": _now(), "local_path": str(final)}
            self._records[did] = record
            self._save(record)
        return copy.deepcopy(record)

    # --- running transfers ------------------------------------------------------------------------
    def _schedule(self) -> None:
        """Start queued downloads, oldest first, while fewer than max_active run."""
        if self._closed:
            return
        for record in sorted(self._records.values(), key=lambda r: r["created_at"]):
            if len(self._jobs) >= self.max_active:
                return
            if record["state"] == "queued":
                self._spawn(record)

    def _spawn(self, record: dict) -> None:
        partial = paths.partial_dir(self.models_dir, record["repo_id"], record["revision"])
        partial.mkdir(parents=True, exist_ok=True)
        # Without the secrets of this process: the token travels only through the stdin pipe below.
        env = {**without_secrets(os.environ), "HF_HUB_DISABLE_PROGRESS_BARS": "1",
               # fetch uses plain HTTP (http_get) so that files resume from our .incomplete files;
               # Xet transfers would bypass them (and the test stand-in does not speak Xet).
               "HF_HUB_DISABLE_XET": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
        plan = {"repo_id": record["repo_id"], "revision": record["revision"], "commit": record["commit"],
                "endpoint": self._api.endpoint, "folder": str(partial), "token": self._token,
                "files": [{"name": f["name"], "size": f["size"], "sha256": f["sha256"]} for f in record["files"]]}
        with open(self.records_dir / f"{record['id']}.log", "ab") as log_file:
            proc = subprocess.Popen([sys.executable, "-m", "app.hub.fetch"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=log_file, env=env, cwd=str(PROJECT_ROOT))
        proc.stdin.write(json.dumps(plan).encode() + b"\n")  # the token travels only through this pipe
        proc.stdin.flush()  # stdin stays open: its end tells the child that this process died
        job = _Job(proc)
        self._jobs[record["id"]] = job
        record.update(state="running", error=None, started_at=record["started_at"] or _now(), updated_at=_now())
        self._save(record)
        log.info("download %s started: %d files, %s", record["id"], len(record["files"]), _gb(record["bytes_total"]))
        self._event("download_started", record)
        job.thread = threading.Thread(target=self._watch, args=(record["id"], job), name=f"download-{record['id']}",
                                      daemon=True)
        job.thread.start()

    def _watch(self, did: str, job: _Job) -> None:
        """Follow one transfer process: progress while it runs, the outcome when it exits."""
        while job.proc.poll() is None:
            with self._lock:
                if not job.stopped:
                    self._progress(self._records[did], job)
            time.sleep(POLL_S)
        output = job.proc.stdout.read().decode(errors="replace").strip().splitlines()
        job.proc.stdout.close()
        with self._lock:
            if job.stopped:
                return
            self._jobs.pop(did, None)
            record = self._records[did]
            self._refresh(record)
            if job.proc.returncode == 0 and record["bytes_done"] == record["bytes_total"]:
                self._complete(record)
            else:
                self._fail(record, self._child_error(output, job.proc.returncode))
            self._schedule()
        self._flush_events()
        job.proc.stdin.close()

    def _stop(self, job: _Job) -> None:
        """Terminate a transfer process (SIGKILL if it lingers) and wait for its watcher."""
        if job.proc.poll() is None:
            job.proc.terminate()
            try:
                job.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                job.proc.kill()
                job.proc.wait()
        job.proc.stdin.close()
        if job.thread and job.thread is not threading.current_thread():
            job.thread.join(timeout=STOP_GRACE_S + 2)

    def _complete(self, record: dict) -> None:
        partial = paths.partial_dir(self.models_dir, record["repo_id"], record["revision"])
        final = paths.local_dir(self.models_dir, record["repo_id"], record["revision"])
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # finished meanwhile by other means: keep that one
            shutil.rmtree(partial, ignore_errors=True)
        else:
            os.rename(partial, final)  # one rename: the final folder appears complete or not at all
        record.update(state="completed", percent=100.0, rate_bps=0.0, eta_s=0, finished_at=_now(),
                      updated_at=_now(), local_path=str(final), error=None)
        self._save(record)
        log.info("download %s completed: %s", record["id"], final)
        self._event("download_completed", record)

    def _fail(self, record: dict, error: str) -> None:
        record.update(state="failed", error=error, rate_bps=0.0, eta_s=None, finished_at=_now(), updated_at=_now())
        self._save(record)
        log.warning("download %s failed: %s", record["id"], error)
        self._event("download_failed", record)

    def _child_error(self, output: list[str], returncode: int) -> str:
        for line in reversed(output):
            try:
                error = json.loads(line).get("error")
            except (ValueError, AttributeError):
                continue
            if error:
                return self._redact(error)
        return f"the transfer process exited with status {returncode}"

    # --- progress --------------------------------------------------------------------------------
    def _refresh(self, record: dict) -> None:
        """Bytes done per file and overall, read from the files on disk."""
        if record["state"] == "completed":
            return
        partial = paths.partial_dir(self.models_dir, record["repo_id"], record["revision"])
        for f in record["files"]:
            size = f["size"] or 0
            done = partial / f["name"]
            if not done.is_file():
                done = incomplete_path(partial, f["name"])
            f["done"] = min(size, done.stat().st_size) if done.is_file() else 0
        record["bytes_done"] = sum(f["done"] for f in record["files"])
        total = record["bytes_total"]
        record["percent"] = round(100.0 * record["bytes_done"] / total, 1) if total else 0.0
        record["updated_at"] = _now()

    def _progress(self, record: dict, job: _Job) -> None:
        self._refresh(record)
        now = time.monotonic()
        job.samples.append((now, record["bytes_done"]))
        while len(job.samples) > 2 and now - job.samples[0][0] > RATE_WINDOW_S:
            job.samples.popleft()
        (t0, b0), (t1, b1) = job.samples[0], job.samples[-1]
        rate = (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
        record["rate_bps"] = round(rate, 1)
        remaining = record["bytes_total"] - record["bytes_done"]
        record["eta_s"] = round(remaining / rate, 1) if rate > 0 else None
        if now - job.saved_at >= SAVE_EVERY_S:
            job.saved_at = now
            self._save(record)

    # --- records, events, secrets ------------------------------------------------------------------
    def _record(self, download_id: str) -> dict:
        try:
            return self._records[download_id]
        except KeyError:
            raise KeyError(f"no download {download_id!r}") from None

    def _load(self) -> dict[str, dict]:
        records = {}
        for path in sorted(self.records_dir.glob("*.json")):
            try:
                record = json.loads(path.read_text())
                paths.check_repo(record["repo_id"], record["revision"])
            except (OSError, ValueError, KeyError) as exc:
                log.warning("ignoring unreadable download record %s: %s", path, exc)
                continue
            if record["state"] != "completed":  # no transfer runs yet: no rate, progress as on disk
                record.update(rate_bps=0.0, eta_s=None)
                self._refresh(record)
            records[record["id"]] = record
        return records

    def _save(self, record: dict) -> None:
        path = paths.record_path(self.records_dir.parent, record["repo_id"], record["revision"])
        tmp = path.with_suffix(".json.tmp")
        with open(tmp, "w") as f:
            json.dump(record, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _event(self, kind: str, record: dict) -> None:
        # Queued here and delivered by _flush_events() once the lock is released, so a slow or
        # re-entrant callback cannot stall or deadlock the downloads.
        self._events.append((kind, {"id": record["id"], "repo_id": record["repo_id"],
                                    "revision": record["revision"], "bytes": record["bytes_total"],
                                    "bytes_done": record["bytes_done"], "error": record["error"]}))

    def _flush_events(self) -> None:
        with self._lock:
            events, self._events = self._events, []
        for kind, data in events:
            if self._on_event is None:
                continue
            try:
                self._on_event(kind, data)
            except Exception:  # noqa: BLE001 - an event sink must not break downloads
                log.exception("download event handler failed for %s", kind)

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def _redacted(self, exc: Exception) -> Exception:
        exc.args = tuple(self._redact(a) if isinstance(a, str) else a for a in exc.args)
        return exc


PROGRESS_KEYS = ("state", "percent", "bytes_done", "bytes_total", "rate_bps", "eta_s", "error")


def progress(state_dir: Path, repo_id: str, revision: str | None) -> dict | None:
    """A download's progress as its record says (for processes that do not run the downloads:
    the model manager shows it on /v1/models); None when there is no record."""
    try:
        record = json.loads(paths.record_path(Path(state_dir), repo_id, revision).read_text())
    except (OSError, ValueError):
        return None
    return {k: record.get(k) for k in PROGRESS_KEYS}
