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
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_stack_env(path: str | os.PathLike) -> dict[str, str]:
    """Parses the `export K=V` lines (bash %q quoting) of a stack.env file."""
    env: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line.startswith("export "):
            continue
        key, _, value = line[len("export "):].partition("=")
        words = shlex.split(value) if value else [""]
        env[key] = words[0] if words else ""
    return env


def merged_env(stack: dict[str, str], base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.update(stack)
    if stack.get("STACK_BIN_DIR"):
        env["PATH"] = stack["STACK_BIN_DIR"] + os.pathsep + env.get("PATH", "")
    return env


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
