"""docs/architecture.md's "Writing a component", end to end: the example component file of the doc, dropped into a
copy of backup/components/ (no other file touched), is backed up by the real backup.sh and helpers into the stack's
S3 (encrypted), listed in the manifest, verified by restore.sh and restored into an empty folder."""
from __future__ import annotations

import filecmp
import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import manifest_schema
from restore_support import ROOT, job_env, run_restore, s3_client, tree_digest


def example_component() -> str:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    match = re.search(r"<!-- component-example -->\n```bash\n(.*?)```", doc, re.S)
    assert match, "docs/architecture.md lost its component example"
    return match.group(1)


def differing(a: Path, b: Path) -> list[str]:
    """Files present on one side only or with other contents, relative to the two roots."""
    cmp = filecmp.dircmp(a, b)
    found = [f"only in {'copy' if side is cmp.right_only else 'repo'}: {name}"
             for side in (cmp.left_only, cmp.right_only) for name in side]
    found += [f"differs: {name}" for name in cmp.diff_files + cmp.funny_files]
    for sub in cmp.common_dirs:
        found += [f"{sub}/{entry}" for entry in differing(a / sub, b / sub)]
    return found


def test_a_component_dropped_into_components_is_backed_up_verified_and_restored(stack, bin_dir, tmp_path):
    copy = tmp_path / "backup"
    shutil.copytree(ROOT / "backup", copy)
    (copy / "components" / "notes.sh").write_text(example_component())
    assert differing(ROOT / "backup", copy) == ["components/only in copy: notes.sh"]

    notes = tmp_path / "notes"
    (notes / "2024").mkdir(parents=True)
    (notes / "2024" / "minutes.md").write_text("# KDL platform review\n")
    (notes / "todo.txt").write_bytes(bytes(range(256)) * 64)
    identity = tmp_path / "identity.txt"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True).stdout.strip()
    prefix = f"recipe-{uuid.uuid4().hex[:8]}"
    work = tmp_path / "work"
    work.mkdir()
    env = dict(job_env(stack, bin_dir, work, prefix), NOTES_PATH=str(notes), BACKUP_AGE_RECIPIENTS=recipient)

    backup = subprocess.run([str(copy / "backup.sh")], env=env, capture_output=True, text=True, timeout=300)
    assert backup.returncode == 0, backup.stderr[-3000:]
    s3 = s3_client(stack)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=stack["BACKUP_S3_BUCKET"], Prefix=f"{prefix}/")["Contents"]]
    [set_id] = {k.split("/")[1] for k in keys if k.endswith("/manifest.json")}
    manifest = manifest_schema.check(json.loads(
        s3.get_object(Bucket=stack["BACKUP_S3_BUCKET"], Key=f"{prefix}/{set_id}/manifest.json")["Body"].read()))
    # Registered by its file alone: in the default selection, after the four shipped components (order 50).
    assert [c["name"] for c in manifest["components"]] == ["gitea", "mongodb", "mlflow", "kubernetes", "notes"]
    [component] = [c for c in manifest["components"] if c["name"] == "notes"]
    assert component["status"] == "success" and manifest["status"] == "success"
    [obj] = component["objects"]
    assert (obj["key"], obj["format"], obj["encrypted"], obj["verified"]) == ("notes/notes.tar.zst.age", "tar+zstd", True, True)
    assert component["details"]["tar"]["files"] == 2 and component["details"]["dir"] == str(notes)

    restore_env = dict(env, TMPDIR=str(work))
    verify = run_restore(restore_env, "verify", set_id, "--identity", str(identity))
    assert verify.returncode == 0, verify.stderr[-3000:]
    objects = sum(len(c["objects"]) for c in manifest["components"])
    assert f"verify: set {set_id} ok: {objects} objects" in verify.stdout and f"format checked: {objects};" in verify.stdout
    # The restore driver runs the copy's restore.sh, which found the component the same way.
    target = tmp_path / "restored"
    target.mkdir()
    restore = subprocess.run([str(copy / "restore.sh"), "restore", "notes", set_id, "--identity", str(identity), "--yes"],
                             env=dict(restore_env, NOTES_PATH=str(target)), capture_output=True, text=True, timeout=300)
    assert restore.returncode == 0, restore.stderr[-3000:]
    assert f"plan: notes: extract notes/notes.tar.zst into {target}" in restore.stdout
    assert tree_digest(target) == tree_digest(notes)
    # The shipped restore.sh, without the file, does not know the component.
    unknown = run_restore(restore_env, "restore", "notes", set_id, "--identity", str(identity), "--yes")
    assert unknown.returncode == 64 and "unknown component: notes" in unknown.stderr
