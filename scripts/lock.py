"""The lock files of the two install paths (pip constraints), and the check that an install obeys them.

    .venv/bin/python scripts/lock.py write cpu|gpu             resolve llmbox[KIND,dev] (pip --dry-run)
                                                               and write scripts/constraints-KIND.txt
    .venv/bin/python scripts/lock.py check KIND --report FILE  every package of a pip --report is pinned
    .venv/bin/python scripts/lock.py check KIND --installed    same for what that interpreter's venv holds

Any Python with pip runs it (the venv's has one; Debian's python3 may not).

One owner of the lock format: scripts/install.sh passes the file to pip (-c) and then runs
``check``. Versions are compared as public versions (PEP 440 ignores local labels, so pip itself
treats torch 2.13.0+cpu as 2.13.0); on GPU hosts a ``+cpu`` build is refused outright, the way a
venv switched from cpu to gpu goes wrong. Standard library only: it runs before the venv has llmbox.

Where the resolve looks: the CPU lock uses this machine's pip configuration (the CPU torch wheel
comes from a local folder or PyTorch's CPU index); the GPU lock asks PyPI alone, as a GPU host does,
so no CPU build can slip in. Packages both paths share are held at the CPU path's tested versions
where the GPU stack allows it (``SHARED_EXCEPT`` lists those it does not).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("cpu", "gpu")
# The venv's own tooling (ensurepip's copies), and llmbox itself (the editable project).
NOT_LOCKED = {"pip", "setuptools", "wheel", "llmbox"}
# Shared packages the GPU path resolves on its own: the engine and what its build pins exactly.
SHARED_EXCEPT = {"vllm", "torch", "torchvision", "torchaudio", "torchcodec", "triton", "xgrammar", "apache-tvm-ffi",
                 "protobuf", "grpcio-reflection", "setuptools"}


def lock_path(kind: str) -> Path:
    return ROOT / "scripts" / f"constraints-{kind}.txt"


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def public(version: str) -> str:
    return version.split("+", 1)[0]


def read_lock(path: Path) -> dict[str, str]:
    """{normalised name: version} of a constraints file (name==version lines; comments ignored)."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[normalise(name)] = version.strip()
    return pins


def problems(kind: str, lock: dict[str, str], found: dict[str, str], strict: bool = True) -> list[str]:
    """What in ``found`` ({name: version}) the lock does not allow. Not strict (an installed venv):
    a package the lock does not name is left alone (an earlier install's leftover breaks nothing)."""
    wrong = []
    for name, version in sorted(found.items()):
        if name in NOT_LOCKED:
            continue
        if kind == "gpu" and version.endswith("+cpu"):
            wrong.append(f"{name} {version} is a CPU build (a GPU host needs {name} {public(version)} from PyPI: "
                         "is a CPU wheel folder or index in this machine's pip configuration?)")
        elif name not in lock:
            if strict:
                wrong.append(f"{name} {version} is not in the lock")
        elif public(version) != public(lock[name]):
            wrong.append(f"{name} {version}, the lock says {lock[name]}")
    return wrong


def from_report(path: Path) -> dict[str, str]:
    report = json.loads(path.read_text())
    return {normalise(item["metadata"]["name"]): item["metadata"]["version"] for item in report["install"]}


def installed() -> dict[str, str]:
    """What is installed in the running interpreter's environment (its site-packages only)."""
    import sysconfig
    from importlib import metadata

    site = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    return {normalise(d.metadata["Name"]): d.version for d in metadata.distributions(path=site) if d.metadata["Name"]}


def resolve(kind: str, constraints: Path | None) -> dict[str, str]:
    """pip's dry-run resolve of llmbox[KIND,dev], nothing installed."""
    env = dict(os.environ)
    if kind == "gpu":  # PyPI only: local CPU wheel folders would put a CPU torch in the GPU lock
        env = {k: v for k, v in env.items() if not k.startswith("PIP_") or k in ("PIP_CERT", "PIP_DEFAULT_TIMEOUT")}
        env["PIP_CONFIG_FILE"] = os.devnull
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp, "report.json")
        argv = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                "--report", str(report), f"{ROOT}[{kind},dev]"]
        if constraints is not None:
            argv[4:4] = ["-c", str(constraints)]
        subprocess.run(argv, env=env, check=True)
        return from_report(report)


def write(kind: str) -> Path:
    shared = None
    if kind == "gpu":  # hold the shared packages at the CPU path's tested versions
        cpu = read_lock(lock_path("cpu"))
        shared = Path(tempfile.mkstemp(suffix=".txt")[1])
        shared.write_text("".join(f"{n}=={v}\n" for n, v in sorted(cpu.items()) if n not in SHARED_EXCEPT))
    try:
        pins = resolve(kind, shared)
    finally:
        if shared is not None:
            shared.unlink()
    pip = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True).stdout.split()[1]
    header = [
        f"# llmbox's lock for {kind.upper()} hosts: llmbox[{kind},dev] as resolved by `.venv/bin/python scripts/lock.py write {kind}`",
        f"# on {datetime.date.today()} (pip {pip}, CPython {platform.python_version()}, {sys.platform} {platform.machine()}).",
        "# scripts/install.sh installs with `pip -c` of this file and then checks the venv against it.",
        "# Regenerate it (never edit by hand) when pyproject.toml changes: the CPU lock first, then the GPU one.",
    ]
    lines = [f"{name}=={public(version)}" for name, version in sorted(pins.items()) if name not in NOT_LOCKED - {"setuptools"}]
    path = lock_path(kind)
    path.write_text("\n".join(header + lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write")
    w.add_argument("kind", choices=KINDS)
    c = sub.add_parser("check")
    c.add_argument("kind", choices=KINDS)
    source = c.add_mutually_exclusive_group(required=True)
    source.add_argument("--report", type=Path)
    source.add_argument("--installed", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "write":
        print(f"wrote {write(args.kind)}")
        return 0
    lock = read_lock(lock_path(args.kind))
    found = from_report(args.report) if args.report else installed()
    wrong = problems(args.kind, lock, found, strict=args.report is not None)
    if wrong:
        print(f"{len(wrong)} package(s) differ from {lock_path(args.kind).name}:", file=sys.stderr)
        for line in wrong:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"{len(found)} packages, all as {lock_path(args.kind).name} pins them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
