"""Shared pytest fixtures: the local KDL stack and the built helpers.

  stack      (session) dict of the stack's env file (scripts/stack/up.sh): the stack named by
             KDL_STACK_ENV when set (scripts/test.sh starts one), else one started here with
             `--seed tiny` in a temporary folder and stopped at the end of the session.
  bin_dir    (session) Path of the helper binaries: KDL_BIN_DIR, else .build/release or .build/debug.
  stack_env  os.environ merged with the stack's env, STACK_BIN_DIR (the mongodump/mongorestore
             test doubles) first on PATH; a fresh dict per test, free to change.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "Tests" / "fixtures"))

from stack_env import load_stack_env, merged_env  # noqa: E402


@pytest.fixture(scope="session")
def stack():
    named = os.environ.get("KDL_STACK_ENV")
    if named:
        if not Path(named).is_file():
            pytest.fail(f"KDL_STACK_ENV={named} does not exist: is the stack up (scripts/stack/up.sh)?")
        yield load_stack_env(named)
        return
    directory = tempfile.mkdtemp(prefix="kdl-pytest-stack.")
    try:
        up = subprocess.run([str(ROOT / "scripts/stack/up.sh"), "--dir", directory, "--seed", "tiny"],
                            capture_output=True, text=True, timeout=300)
        if up.returncode != 0:
            pytest.fail(f"scripts/stack/up.sh failed ({up.returncode}): {up.stderr.strip()[-2000:]}")
        yield load_stack_env(Path(directory) / "stack.env")
    finally:
        subprocess.run([str(ROOT / "scripts/stack/down.sh"), "--dir", directory], capture_output=True, timeout=120)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    named = os.environ.get("KDL_BIN_DIR")
    if named:
        return Path(named)
    for candidate in (ROOT / ".build" / "release", ROOT / ".build" / "debug"):
        if (candidate / "s3-put").exists():
            return candidate
    pytest.fail("no helper binaries: set KDL_BIN_DIR or run `swift build` (scripts/test.sh does both)")


@pytest.fixture
def stack_env(stack) -> dict[str, str]:
    return merged_env(stack)
