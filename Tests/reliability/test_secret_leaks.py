"""Secret leaks (runs last): every argument list, stdout and stderr the suite recorded, every manifest and every
stored object in the bucket (all of the suite's sets are encrypted) is scanned for the known secret values: the S3
secret key, the Postgres passwords, the Mongo password inside the URI, the webhook URL token, the Secrets' SSH
private keys, and the age identity. Each value is looked for as is, URL-encoded and base64-encoded (at the three
alignments), so a Secret's data or a URL in a log cannot hide it.
"""
import base64
import json
from pathlib import Path
from urllib.parse import quote

import pytest

MIN_LENGTH = 12


def forms(value: str) -> set[bytes]:
    raw = value.encode()
    found = {raw, quote(value, safe="").encode()}
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw)[4 if shift else 0:]
        # Drop the characters that depend on what surrounds the value.
        found.add(encoded[: len(encoded) - 4].rstrip(b"="))
    return {f for f in found if len(f) >= MIN_LENGTH}


def seeded_private_keys(rstack) -> dict[str, str]:
    """The SSH private keys of the seeded *-ssh-keys Secrets (one distinctive line of each)."""
    objects = Path(rstack["STACK_DIR"]) / "k8s" / "objects.json"
    found = {}
    for item in json.loads(objects.read_text()).get("items", []):
        data = item.get("data") or {}
        if item.get("kind") == "Secret" and "KDL_USER_PRIVATE_SSH_KEY" in data:
            key = base64.b64decode(data["KDL_USER_PRIVATE_SSH_KEY"]).decode(errors="replace")
            body = [line for line in key.splitlines() if line and not line.startswith("-----")]
            if body:
                found[f"SSH private key of Secret {item['metadata']['name']}"] = max(body, key=len)
    return found


@pytest.mark.reliability
def test_no_secret_value_anywhere(jobs, rstack, recorder, secrets, scanned_blobs, results):
    catalogue = dict(secrets)
    catalogue.update(seeded_private_keys(rstack))
    assert any("SSH private key" in name for name in catalogue), "no seeded Secret with a private key to look for"
    needles = {form: name for name, value in catalogue.items() for form in forms(value)}
    hits = []
    scanned_files = scanned_bytes = 0

    def scan(label: str, data: bytes):
        nonlocal scanned_bytes
        scanned_bytes += len(data)
        for needle, name in needles.items():
            if needle in data:
                hits.append(f"{name} in {label}")

    for path in sorted(Path(recorder.dir).iterdir()):
        scanned_files += 1
        scan(path.name, path.read_bytes())
    for label, data in scanned_blobs:
        scanned_files += 1
        scan(label, data)
    objects = 0
    for key in sorted(jobs.bucket.keys("")):
        objects += 1
        scan(f"s3://{jobs.bucket.name}/{key}", jobs.bucket.get(key))
    # The notifications the capture server received (their bodies; the URL path is where the token belongs).
    for request in jobs.capture.requests():
        scan(f"notification {request['path'].split('/')[2] if request['path'].count('/') > 2 else ''}",
             request["body"].encode() + json.dumps({k: v for k, v in request["headers"].items()}).encode())
    results.record("secret-leaks", "known secret values looked for", len(catalogue))
    results.record("secret-leaks", "logs, argument lists, stdout/stderr files scanned", scanned_files)
    results.record("secret-leaks", "stored objects scanned (encrypted sets and manifests)", objects)
    results.record("secret-leaks", "MiB scanned", round(scanned_bytes / (1 << 20), 1))
    results.record("secret-leaks", "leaked secrets (hits)", len(hits), "0")
    assert scanned_files > 0 and objects > 0, "nothing was scanned"
    assert not hits, "\n".join(sorted(set(hits))[:50])
