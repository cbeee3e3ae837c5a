"""Provisioning tests (tests/infra).

Two kinds live here:
- unit tests of the roles' Python logic (registry sync decisions, /proc/devices parsing): plain,
  fast, no LXC; ./test.sh runs them with the app's venv;
- system tests of a provisioned container (system/): Molecule's verify step runs them with the
  tool venv (testinfra through lxc-attach); skipped when no container is under test.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROLES = ROOT / "roles"
