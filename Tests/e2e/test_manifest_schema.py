"""backup/lib/schema.jq (what restore.sh validates with, the image having no other JSON Schema validator) agrees
with Python's jsonschema on backup/manifest.schema.json: every sample manifest passes both, and each mutation of
them fails both (or passes both)."""
from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import manifest_schema
import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "Tests" / "fixtures" / "sets").glob("*/manifest.json")) + sorted(
    (ROOT / "Tests" / "fixtures" / "manifests").glob("*.json"))


def jq_violation(manifest: dict, tmp_path: Path) -> str:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(manifest))
    return subprocess.run(["jq", "-r", "--slurpfile", "schema", str(ROOT / "backup" / "manifest.schema.json"),
                           "-f", str(ROOT / "backup" / "lib" / "schema.jq"), str(path)],
                          capture_output=True, text=True, check=True).stdout.strip()


def mutations(m: dict):
    """(name, mutated manifest) pairs, each breaking or keeping one rule of the schema."""
    def edit(name, fn):
        c = copy.deepcopy(m)
        fn(c)
        return name, c
    def obj(c):
        """The first stored object; a manifest with none gets one to break."""
        found = [o for comp in c["components"] for o in comp["objects"]]
        if not found:
            c["components"][0]["objects"].append({"key": "gitea/postgres.dump", "bytes": 1, "sha256": "0" * 64,
                                                  "format": "pg_dump-custom", "encrypted": False, "verified": True})
            found = c["components"][0]["objects"]
        return found[0]
    yield edit("format", lambda c: c.update(format="kdl-backup/v2"))
    yield edit("id", lambda c: c.update(id="yesterday"))
    yield edit("startedAt", lambda c: c.update(startedAt="2025-01-01 02:00:00"))
    yield edit("fractional finishedAt (allowed)", lambda c: c.update(finishedAt="2025-01-01T02:00:00.25Z"))
    yield edit("status", lambda c: c.update(status="ok"))
    yield edit("extra field", lambda c: c.update(cluster="prod"))
    yield edit("platform kdl6 (allowed)", lambda c: c.update(platform="kdl6"))
    yield edit("unknown platform", lambda c: c.update(platform="kdl7"))
    yield edit("missing tools", lambda c: c.pop("tools"))
    yield edit("tool version number", lambda c: c["tools"].update({"zstd": 1.5}))
    yield edit("recipient", lambda c: c.update(encryption={"type": "age", "recipients": ["AGE-SECRET-KEY-1XYZ"]}))
    yield edit("no recipients", lambda c: c.update(encryption={"type": "age", "recipients": []}))
    yield edit("component status", lambda c: c["components"][0].update(status="partial"))
    yield edit("component name", lambda c: c["components"][0].update(name="Gitea DB"))
    yield edit("negative seconds", lambda c: c["components"][0].update(seconds=-1))
    yield edit("details array", lambda c: c["components"][0].update(details=[]))
    yield edit("key with ..", lambda c: obj(c).update(key="gitea/../../etc/passwd"))
    yield edit("absolute key", lambda c: obj(c).update(key="/gitea/postgres.dump"))
    yield edit("key with a newline", lambda c: obj(c).update(key="gitea/x\ny"))
    yield edit("fractional bytes", lambda c: obj(c).update(bytes=1.5))
    yield edit("sha256", lambda c: obj(c).update(sha256="ABC"))
    yield edit("format", lambda c: obj(c).update(format="tar+gzip"))
    yield edit("encrypted as text", lambda c: obj(c).update(encrypted="true"))
    yield edit("object extra field", lambda c: obj(c).update(url="s3://x"))


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_both_validators_accept_the_samples_and_agree_on_every_mutation(sample, tmp_path):
    manifest = json.loads(sample.read_text())
    assert manifest_schema.errors(manifest) == []
    assert jq_violation(manifest, tmp_path) == ""
    for name, mutated in mutations(manifest):
        python_says = manifest_schema.errors(mutated)
        jq_says = jq_violation(mutated, tmp_path)
        assert bool(python_says) == bool(jq_says), f"{name}: jsonschema {python_says} vs schema.jq {jq_says!r}"
        if name.endswith("(allowed)"):
            assert not python_says, name
        else:
            assert python_says, f"{name}: the schema lets it through"
