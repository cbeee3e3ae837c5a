"""Each secret only in the processes that use it (review L5): the :8000 API keys only in the deploy
driver (it hands the router their hashes), the HF token only in the management API. The UI, the Ray
head and everything under it (GCS, raylet, Serve's router and manager, the engines) have neither.

Reads /proc/<pid>/environ of every process of the box's units inside the container, and looks for
the scenario's known secret values (molecule's vault), not for variable names only."""

from __future__ import annotations

import json
import shlex

import pytest

from tests.infra.system.conftest import ENABLED, SKIP_REASON, expected

if not ENABLED:
    pytest.skip(SKIP_REASON, allow_module_level=True)

# Which secrets each unit's processes may hold (main process and children alike).
ALLOWED = {"ray-head": set(), "llmbox-api": {"hf_token"}, "llmbox-ui": set(), "llmbox-deploy": {"api_key"}}

# Runs inside the container as root: for every process in one of the units, which secret values
# its environment holds (by name of the secret, never the value).
SCAN = r"""
import json, os, re, sys
secrets = json.loads(sys.argv[1])
units = set(sys.argv[2].split(","))
found = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        cgroup = open(f"/proc/{pid}/cgroup").read()
        environ = open(f"/proc/{pid}/environ", "rb").read()
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        continue
    names = re.findall(r"/([^/\s]+)\.service$", cgroup, re.M)
    unit = next((n for n in names if n in units), None)
    if unit is None:
        continue
    held = sorted(name for name, values in secrets.items() if any(v.encode() in environ for v in values))
    found.append({"pid": int(pid), "unit": unit, "cmd": cmd, "held": held})
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def secrets(settings) -> dict[str, list[str]]:
    values = {"api_key": list(settings["llmbox_app_api_keys"]), "hf_token": [settings["llmbox_app_hf_token"]]}
    assert all(v for vs in values.values() for v in vs) and values["api_key"], (
        "the scenario's vault must set API keys and an HF token, so that this test looks for something")
    return values


@pytest.fixture(scope="module")
def processes(container, secrets) -> list[dict]:
    units = [u for u in ALLOWED if u != "llmbox-ui" or expected()["llmbox_app_ui_enabled"]]
    out = container.run(f"python3 -c {shlex.quote(SCAN)} {shlex.quote(json.dumps(secrets))} {','.join(units)}")
    assert out.rc == 0, out.stderr
    return json.loads(out.stdout)


def test_every_long_running_unit_has_processes(processes):
    units = {p["unit"] for p in processes}
    wanted = {"ray-head", "llmbox-api"} | ({"llmbox-ui"} if expected()["llmbox_app_ui_enabled"] else set())
    assert wanted <= units, f"no processes found for {wanted - units}"
    # Ray's processes are many (GCS, raylet, dashboard, Serve's controller, router, manager, engine).
    assert sum(p["unit"] == "ray-head" for p in processes) >= 4, [p["cmd"] for p in processes]


def test_no_process_holds_a_secret_it_does_not_use(processes):
    wrong = [p for p in processes if set(p["held"]) - ALLOWED[p["unit"]]]
    assert not wrong, "secrets where they must not be:\n" + "\n".join(
        f"  {p['unit']} pid {p['pid']} ({p['cmd']}): {p['held']}" for p in wrong)


def test_the_management_api_has_the_hf_token(processes):
    """Not a vacuous pass: the value is found where it belongs."""
    assert any("hf_token" in p["held"] for p in processes if p["unit"] == "llmbox-api")


def test_the_deploy_unit_loads_the_keys_and_not_the_hf_token(container, secrets):
    """The deploy is a oneshot (its driver exited): check what systemd gives it."""
    show = container.run("systemctl show llmbox-deploy --property=EnvironmentFiles").stdout
    files = [line.split()[0] for line in show.removeprefix("EnvironmentFiles=").splitlines() if line.strip()]
    files = [f.removeprefix("EnvironmentFiles=") for f in files]
    text = "".join(container.file(f).content_string for f in files)
    assert all(k in text for k in secrets["api_key"]), files
    assert secrets["hf_token"][0] not in text, files
