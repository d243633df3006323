"""Sample data of a KDL install for the local stack (run by scripts/stack/up.sh --seed).

Usage: seed.py --dir DIR --size tiny|small|none|SIZE [--seed-number N]
Environment: the stack's (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, MONGO_URI,
GITEA_DATA_DIR, MLFLOW_ROOT), as up.sh exports them.

Writes, deterministically for a given seed number:
  PostgreSQL  Gitea-shaped tables (user, repository, issue, comment, action, access_token, ...)
  GITEA_DATA_DIR  git/repositories/<owner>/<repo>.git (real bare repos, made with git fast-import),
              gitea/conf/app.ini, gitea/attachments, gitea/indexers (rebuildable), ssh (host keys),
              lost+found; owned by uid/gid 1000 as in Gitea's volume
  MongoDB     kdl.{projects,users,runtimes,capabilities,userActivity}, admin.{users,roles}
  MLFLOW_ROOT kdl-<project>-mlflow-claim-pvc-<uid>/mlflow.db, written by real MLflow (seed_mlflow.py) for tiny and
              small, by MLflow 2.9's tables directly for benchmark sizes; some in WAL
              mode with -wal/-shm left behind, some with local mlruns/ or artifacts/
  DIR/k8s/objects.json  CRDs and objects for Tests/fixtures/kube_api_double.py
  DIR/seed-summary.json counts of everything above, for tests to compare against.
Sizes: tiny (tests, a few seconds), small, none (empty services, CRDs only), or a total such as
2GiB (benchmarks: bigger repos with random blobs, bigger tables, 50 MLflow projects of which one
is large, 2,000 Kubernetes objects).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

NAMESPACE = "kdl"
BASE_TIME = datetime.datetime(2024, 3, 1, 9, 0, 0, tzinfo=datetime.timezone.utc)
GITEA_UID = 1000
MIB = 1024 * 1024
WORDS = (
    "model data feature pipeline training notebook experiment dataset churn forecast sales anomaly "
    "vision embedding transformer drift metric baseline cluster label inference batch stream spark "
    "pandas schema validation deploy runtime gpu tensor loss accuracy recall precision report fix "
    "refactor update add remove improve retry config docs readme test ci lint bump version release"
).split()
FIRST = "ana bruno carla david elena fernando gloria hector irene javier karla luis marta nacho olga pablo".split()
LAST = "garcia lopez martin sanchez perez gomez ruiz diaz moreno alvarez romero navarro torres dominguez".split()
PROJECT_AREAS = "churn sales-forecast fraud-detection demand vision-qa nlp-tickets pricing recsys energy logistics".split()


@dataclass
class Plan:
    users: int
    projects: int
    repos_per_user: float
    commits_per_repo: int
    blob_bytes: int  # random bytes per repository (spread over commits)
    large_repo_bytes: int
    issues_per_repo: int
    comments_per_issue: int
    actions_per_user: int
    comment_bytes: int
    mlflow_projects: int
    runs_per_experiment: int
    metric_steps: int
    large_mlflow_steps: int
    mlflow_artifact_bytes: int
    activity_per_user: int
    k8s_objects: int  # total objects served (0: what the users and projects give)


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)(i?)B?", text)
    if not m:
        raise ValueError(f"bad size {text!r}")
    unit = {"": 1, "K": 1, "M": 2, "G": 3, "T": 4}[m.group(2)]
    base = 1024 if (m.group(3) or m.group(2)) else 1
    return int(float(m.group(1)) * base ** (unit if m.group(2) else 0))


def make_plan(size: str) -> Plan:
    if size == "tiny":
        return Plan(4, 3, 1.0, 3, 4096, 32 * 1024, 3, 2, 5, 200, 3, 2, 5, 20, 2048, 4, 0)
    if size == "small":
        return Plan(12, 8, 1.5, 8, 64 * 1024, 2 * MIB, 8, 4, 20, 400, 8, 5, 30, 300, 64 * 1024, 20, 0)
    total = parse_size(size)
    if total < 20 * MIB:
        raise ValueError(f"size {size} is below 20MiB: use tiny or small")
    # Budget: ~45% git (a quarter of it one large repository), ~20% Postgres, ~30% MLflow (half of it
    # one large project, a quarter the other 49 stores, a quarter local artifacts), the rest small.
    users = max(20, min(400, total // (5 * MIB)))
    repos = int(users * 1.2)
    git = total * 45 // 100
    large_repo = git // 4
    per_repo = max(64 * 1024, (git - large_repo) // repos)
    pg = total * 20 // 100
    issues_per_repo, comments_per_issue, actions_per_user = 20, 6, 200
    comment_bytes = max(100, pg // (repos * issues_per_repo * comments_per_issue) - 300)
    mlflow = total * 30 // 100
    metric_row = 250  # bytes one metrics row takes in SQLite with MLflow's indexes
    return Plan(
        users=users,
        projects=50,
        repos_per_user=1.2,
        commits_per_repo=10,
        blob_bytes=per_repo,
        large_repo_bytes=large_repo,
        issues_per_repo=issues_per_repo,
        comments_per_issue=comments_per_issue,
        actions_per_user=actions_per_user // 4 if total < 1024 * MIB else actions_per_user,
        comment_bytes=min(comment_bytes, 16 * 1024),
        mlflow_projects=50,
        runs_per_experiment=8,
        metric_steps=max(5, mlflow // 4 // 49 // (3 * 8 * 3 * metric_row)),
        large_mlflow_steps=max(1000, mlflow // 2 // (3 * 8 * 4 * metric_row)),
        mlflow_artifact_bytes=max(4096, mlflow // 4 // 32),  # 16 of 50 projects keep 2 local artifacts
        activity_per_user=10,
        k8s_objects=2000,
    )


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def unix(offset_seconds: int) -> int:
    return int(BASE_TIME.timestamp()) + offset_seconds


def iso(offset_seconds: int) -> str:
    return (BASE_TIME + datetime.timedelta(seconds=offset_seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def dt(offset_seconds: int) -> datetime.datetime:
    return (BASE_TIME + datetime.timedelta(seconds=offset_seconds)).replace(tzinfo=None)


@dataclass
class World:
    """The install's people and projects, shared by every component."""

    rng: random.Random
    plan: Plan
    users: list[dict] = field(default_factory=list)
    projects: list[dict] = field(default_factory=list)
    repos: list[dict] = field(default_factory=list)

    def oid(self):
        from bson import ObjectId

        return ObjectId(self.rng.randbytes(12))

    def uid(self) -> str:
        return str(uuid.UUID(bytes=self.rng.randbytes(16), version=4))

    def text(self, n_bytes: int) -> str:
        out, size = [], 0
        while size < n_bytes:
            word = self.rng.choice(WORDS)
            out.append(word)
            size += len(word) + 1
        return " ".join(out)


def build_world(rng: random.Random, plan: Plan) -> World:
    world = World(rng, plan)
    world.users.append({"name": "kdladmin", "full": "KDL Admin", "email": "admin@kdl.local", "admin": True})
    seen = {"kdladmin"}
    while len(world.users) < plan.users:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        name = f"{first}.{last}"
        if name in seen:
            name = f"{name}{len(world.users)}"
        seen.add(name)
        world.users.append({"name": name, "full": f"{first.title()} {last.title()}", "email": f"{name}@intelygenz.com", "admin": False})
    for index, user in enumerate(world.users):
        user["id"] = index + 1
        user["slug"] = slugify(user["name"])
        user["oid"] = world.oid()
    for index in range(plan.projects):
        area = PROJECT_AREAS[index % len(PROJECT_AREAS)]
        project_id = area if index < len(PROJECT_AREAS) else f"{area}-{index // len(PROJECT_AREAS) + 1}"
        owner = world.users[rng.randrange(len(world.users))]
        members = rng.sample(world.users, k=min(len(world.users), rng.randint(1, 4)))
        if world.users[0] not in members:
            members.insert(0, world.users[0])
        world.projects.append({"id": project_id, "owner": owner, "members": members, "created": index * 86400})
    repo_id = 0
    for project in world.projects:
        repo_id += 1
        world.repos.append({"id": repo_id, "owner": world.users[0], "name": project["id"], "project": project})
    total_repos = max(len(world.projects), int(len(world.users) * plan.repos_per_user))
    while len(world.repos) < total_repos:
        repo_id += 1
        owner = world.users[rng.randrange(len(world.users))]
        name = f"{rng.choice(WORDS)}-{rng.choice(WORDS)}-{repo_id}"
        world.repos.append({"id": repo_id, "owner": owner, "name": name, "project": None})
    return world


# ---------------------------------------------------------------------------------------------
# PostgreSQL (Gitea's database)

GITEA_SCHEMA = """
CREATE TABLE version (id BIGSERIAL PRIMARY KEY, version BIGINT);
CREATE TABLE "user" (
  id BIGSERIAL PRIMARY KEY, lower_name VARCHAR(255) NOT NULL UNIQUE, name VARCHAR(255) NOT NULL UNIQUE,
  full_name VARCHAR(255), email VARCHAR(255) NOT NULL, keep_email_private BOOLEAN, passwd VARCHAR(255) NOT NULL,
  passwd_hash_algo VARCHAR(255) NOT NULL DEFAULT 'argon2', must_change_password BOOLEAN NOT NULL DEFAULT false,
  login_type INTEGER, login_source BIGINT NOT NULL DEFAULT 0, login_name VARCHAR(255), type INTEGER,
  location VARCHAR(255), website VARCHAR(255), rands VARCHAR(32), salt VARCHAR(32), language VARCHAR(5),
  description VARCHAR(255), created_unix BIGINT, updated_unix BIGINT, last_login_unix BIGINT,
  is_active BOOLEAN, is_admin BOOLEAN, is_restricted BOOLEAN NOT NULL DEFAULT false, avatar VARCHAR(2048) NOT NULL,
  num_repos INTEGER, visibility INTEGER NOT NULL DEFAULT 0);
CREATE TABLE email_address (id BIGSERIAL PRIMARY KEY, uid BIGINT NOT NULL REFERENCES "user"(id),
  email VARCHAR(255) NOT NULL UNIQUE, lower_email VARCHAR(255) NOT NULL UNIQUE, is_activated BOOLEAN, is_primary BOOLEAN DEFAULT false);
CREATE TABLE repository (id BIGSERIAL PRIMARY KEY, owner_id BIGINT REFERENCES "user"(id), owner_name VARCHAR(255),
  lower_name VARCHAR(255) NOT NULL, name VARCHAR(255) NOT NULL, description TEXT, website VARCHAR(2048),
  original_service_type INTEGER, original_url VARCHAR(2048), default_branch VARCHAR(255), num_watches INTEGER,
  num_stars INTEGER, num_forks INTEGER, num_issues INTEGER, num_closed_issues INTEGER, num_pulls INTEGER,
  num_closed_pulls INTEGER, is_private BOOLEAN, is_empty BOOLEAN, is_archived BOOLEAN, is_mirror BOOLEAN,
  status INTEGER NOT NULL DEFAULT 0, is_fork BOOLEAN NOT NULL DEFAULT false, fork_id BIGINT, size BIGINT NOT NULL DEFAULT 0,
  topics JSON, object_format_name VARCHAR(6) NOT NULL DEFAULT 'sha1', created_unix BIGINT, updated_unix BIGINT,
  UNIQUE (owner_id, lower_name));
CREATE TABLE access (id BIGSERIAL PRIMARY KEY, user_id BIGINT REFERENCES "user"(id), repo_id BIGINT REFERENCES repository(id),
  mode INTEGER, UNIQUE (user_id, repo_id));
CREATE TABLE collaboration (id BIGSERIAL PRIMARY KEY, repo_id BIGINT NOT NULL REFERENCES repository(id),
  user_id BIGINT NOT NULL REFERENCES "user"(id), mode INTEGER NOT NULL DEFAULT 2, created_unix BIGINT, updated_unix BIGINT,
  UNIQUE (repo_id, user_id));
CREATE TABLE issue (id BIGSERIAL PRIMARY KEY, repo_id BIGINT REFERENCES repository(id), index BIGINT,
  poster_id BIGINT REFERENCES "user"(id), original_author VARCHAR(255), name VARCHAR(255), content TEXT,
  milestone_id BIGINT, priority INTEGER, is_closed BOOLEAN, is_pull BOOLEAN, num_comments INTEGER,
  ref VARCHAR(255), deadline_unix BIGINT, created_unix BIGINT, updated_unix BIGINT, closed_unix BIGINT,
  is_locked BOOLEAN NOT NULL DEFAULT false, UNIQUE (repo_id, index));
CREATE TABLE comment (id BIGSERIAL PRIMARY KEY, type INTEGER, poster_id BIGINT REFERENCES "user"(id),
  issue_id BIGINT REFERENCES issue(id), commit_id BIGINT, line BIGINT, tree_path VARCHAR(4000), content TEXT,
  patch TEXT, created_unix BIGINT, updated_unix BIGINT, commit_sha VARCHAR(64), review_id BIGINT, invalidated BOOLEAN);
CREATE INDEX "IDX_comment_issue_id" ON comment (issue_id);
CREATE TABLE action (id BIGSERIAL PRIMARY KEY, user_id BIGINT REFERENCES "user"(id), op_type INTEGER,
  act_user_id BIGINT REFERENCES "user"(id), repo_id BIGINT REFERENCES repository(id), comment_id BIGINT,
  is_deleted BOOLEAN NOT NULL DEFAULT false, ref_name VARCHAR(255), is_private BOOLEAN NOT NULL DEFAULT false,
  content TEXT, created_unix BIGINT);
CREATE INDEX "IDX_action_user_id" ON action (user_id);
CREATE TABLE access_token (id BIGSERIAL PRIMARY KEY, uid BIGINT REFERENCES "user"(id), name VARCHAR(255),
  token_hash VARCHAR(255) UNIQUE, token_salt VARCHAR(255), token_last_eight VARCHAR(255), scope VARCHAR(255),
  created_unix BIGINT, updated_unix BIGINT);
CREATE TABLE public_key (id BIGSERIAL PRIMARY KEY, owner_id BIGINT NOT NULL REFERENCES "user"(id), name VARCHAR(255) NOT NULL,
  fingerprint VARCHAR(255) NOT NULL, content TEXT NOT NULL, mode INTEGER NOT NULL DEFAULT 2, type INTEGER NOT NULL DEFAULT 1,
  login_source_id BIGINT NOT NULL DEFAULT 0, created_unix BIGINT, updated_unix BIGINT, verified BOOLEAN NOT NULL DEFAULT false);
CREATE TABLE oauth2_application (id BIGSERIAL PRIMARY KEY, uid BIGINT REFERENCES "user"(id), name VARCHAR(255),
  client_id VARCHAR(255) UNIQUE, client_secret VARCHAR(255), confidential_client BOOLEAN NOT NULL DEFAULT true,
  redirect_uris TEXT, created_unix BIGINT, updated_unix BIGINT);
CREATE TABLE webhook (id BIGSERIAL PRIMARY KEY, repo_id BIGINT REFERENCES repository(id), url TEXT, http_method VARCHAR(255),
  content_type INTEGER, secret TEXT, events TEXT, is_active BOOLEAN NOT NULL, type VARCHAR(16), created_unix BIGINT, updated_unix BIGINT);
"""


def copy_block(table: str, columns: list[str], rows) -> tuple[list[str], int]:
    """COPY ... FROM STDIN text-format lines for rows (an iterable of tuples); returns lines and count."""

    def cell(value) -> str:
        if value is None:
            return "\\N"
        if isinstance(value, bool):
            return "t" if value else "f"
        return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")

    lines = [f'COPY "{table}" ({", ".join(columns)}) FROM STDIN;']
    count = 0
    for row in rows:
        lines.append("\t".join(cell(v) for v in row))
        count += 1
    lines.append("\\.")
    return lines, count


def seed_postgres(world: World, summary: dict) -> None:
    rng, plan = world.rng, world.plan
    proc = subprocess.Popen(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdin is not None
    out = proc.stdin
    counts: dict[str, int] = {}

    def emit(table, columns, rows):
        lines, count = copy_block(table, columns, rows)
        for line in lines:
            out.write(line + "\n")
        counts[table] = count

    out.write("BEGIN;\n" + GITEA_SCHEMA + "\n")
    emit("version", ["id", "version"], [(1, 280)])
    emit(
        "user",
        ["id", "lower_name", "name", "full_name", "email", "keep_email_private", "passwd", "passwd_hash_algo", "login_type",
         "type", "rands", "salt", "language", "created_unix", "updated_unix", "last_login_unix", "is_active", "is_admin", "avatar", "num_repos"],
        (
            (u["id"], u["name"].lower(), u["name"], u["full"], u["email"], False,
             hashlib.sha256(f"pw-{u['name']}".encode()).hexdigest() * 2, "pbkdf2$50000$50", 0, 0,
             rng.randbytes(16).hex(), rng.randbytes(16).hex(), "en-US", unix(u["id"] * 60), unix(u["id"] * 60 + 3600),
             unix(86400 * 30 + u["id"]), True, u["admin"], hashlib.md5(u["email"].encode()).hexdigest(),
             sum(1 for r in world.repos if r["owner"] is u))
            for u in world.users
        ),
    )
    emit("email_address", ["id", "uid", "email", "lower_email", "is_activated", "is_primary"],
         ((u["id"], u["id"], u["email"], u["email"].lower(), True, True) for u in world.users))
    issue_rows, comment_rows = [], []
    issue_id = comment_id = 0
    for repo in world.repos:
        for index in range(1, plan.issues_per_repo + 1):
            issue_id += 1
            poster = world.users[rng.randrange(len(world.users))]
            closed = rng.random() < 0.4
            issue_rows.append((issue_id, repo["id"], index, poster["id"], f"{rng.choice(WORDS).title()} {rng.choice(WORDS)} {rng.choice(WORDS)}",
                               world.text(120), 0, closed, rng.random() < 0.2, plan.comments_per_issue,
                               unix(issue_id * 97), unix(issue_id * 97 + 500), unix(issue_id * 97 + 900) if closed else 0))
            for _ in range(plan.comments_per_issue):
                comment_id += 1
                commenter = world.users[rng.randrange(len(world.users))]
                comment_rows.append((comment_id, 0, commenter["id"], issue_id, world.text(plan.comment_bytes),
                                     unix(issue_id * 97 + comment_id), unix(issue_id * 97 + comment_id)))
    emit(
        "repository",
        ["id", "owner_id", "owner_name", "lower_name", "name", "description", "default_branch", "num_watches", "num_stars",
         "num_forks", "num_issues", "num_closed_issues", "num_pulls", "num_closed_pulls", "is_private", "is_empty",
         "is_archived", "is_mirror", "size", "topics", "created_unix", "updated_unix"],
        (
            (r["id"], r["owner"]["id"], r["owner"]["name"], r["name"].lower(), r["name"],
             f"KDL project {r['project']['id']}" if r["project"] else world.text(40), "main", 1, rng.randint(0, 9), 0,
             plan.issues_per_repo, sum(1 for i in issue_rows if i[1] == r["id"] and i[7]), 0, 0, True, False, False, False,
             0, "[]", unix(r["id"] * 3600), unix(r["id"] * 3600 + 60))
            for r in world.repos
        ),
    )
    access_rows, collab_rows = [], []
    for repo in world.repos:
        people = repo["project"]["members"] if repo["project"] else [repo["owner"]]
        for user in {u["id"]: u for u in people + [repo["owner"]]}.values():
            access_rows.append((len(access_rows) + 1, user["id"], repo["id"], 4 if user is repo["owner"] else 2))
            if user is not repo["owner"]:
                collab_rows.append((len(collab_rows) + 1, repo["id"], user["id"], 2, unix(repo["id"] * 3600), unix(repo["id"] * 3600)))
    emit("access", ["id", "user_id", "repo_id", "mode"], access_rows)
    emit("collaboration", ["id", "repo_id", "user_id", "mode", "created_unix", "updated_unix"], collab_rows)
    emit("issue", ["id", "repo_id", "index", "poster_id", "name", "content", "priority", "is_closed", "is_pull", "num_comments",
                   "created_unix", "updated_unix", "closed_unix"], issue_rows)
    emit("comment", ["id", "type", "poster_id", "issue_id", "content", "created_unix", "updated_unix"], comment_rows)
    del issue_rows, comment_rows

    def actions():
        action_id = 0
        for user in world.users:
            for n in range(plan.actions_per_user):
                action_id += 1
                repo = world.repos[rng.randrange(len(world.repos))]
                op = rng.choice([1, 5, 5, 5, 6, 10, 12])
                content = json.dumps({"Commits": [{"Sha1": rng.randbytes(20).hex(), "Message": world.text(60),
                                                   "AuthorEmail": user["email"], "AuthorName": user["full"]}], "Len": 1}) if op == 5 else ""
                yield (action_id, user["id"], op, user["id"], repo["id"], 0, "refs/heads/main", True, content, unix(action_id * 31))

    emit("action", ["id", "user_id", "op_type", "act_user_id", "repo_id", "comment_id", "ref_name", "is_private", "content", "created_unix"], actions())
    emit(
        "access_token",
        ["id", "uid", "name", "token_hash", "token_salt", "token_last_eight", "scope", "created_unix", "updated_unix"],
        ((u["id"], u["id"], "kdl-api", hashlib.sha256(rng.randbytes(32)).hexdigest(), rng.randbytes(5).hex(), rng.randbytes(4).hex(),
          "all", unix(u["id"] * 60), unix(u["id"] * 60)) for u in world.users),
    )
    emit(
        "public_key",
        ["id", "owner_id", "name", "fingerprint", "content", "mode", "type", "created_unix", "updated_unix"],
        ((u["id"], u["id"], f"{u['slug']}-kdl", "SHA256:" + base64.b64encode(hashlib.sha256(u["name"].encode()).digest()).decode().rstrip("="),
          u["ssh_public"], 2, 1, unix(u["id"] * 60), unix(u["id"] * 60)) for u in world.users),
    )
    emit(
        "oauth2_application",
        ["id", "uid", "name", "client_id", "client_secret", "redirect_uris", "created_unix", "updated_unix"],
        ((u["id"], 1, f"codeserver-{u['slug']}", str(uuid.UUID(bytes=rng.randbytes(16))), "$2a$10$" + rng.randbytes(20).hex(),
          json.dumps([f"https://{u['slug']}-code.kdl.local/oauth2/callback"]), unix(u["id"] * 60), unix(u["id"] * 60)) for u in world.users),
    )
    emit("webhook", ["id", "repo_id", "url", "http_method", "content_type", "secret", "events", "is_active", "type", "created_unix", "updated_unix"],
         ((r["id"], r["id"], "http://kdl-server:8080/api/webhooks/gitea", "POST", 1, rng.randbytes(8).hex(), '{"push_only":true}', True, "gitea",
           unix(r["id"] * 3600), unix(r["id"] * 3600)) for r in world.repos if r["project"]))
    for table in counts:
        out.write(f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), (SELECT COALESCE(MAX(id), 1) FROM \"{table}\"));\n")
    out.write("COMMIT;\n" + "".join(f"ANALYZE \"{table}\";\n" for table in counts))
    out.close()
    if proc.wait() != 0:
        raise RuntimeError("psql failed while loading Gitea's tables")
    summary["postgres"] = {"database": os.environ.get("PGDATABASE", "gitea"), "tables": counts}


# ---------------------------------------------------------------------------------------------
# SSH keys (deterministic ed25519 from the seeded RNG)


def ed25519_pair(rng: random.Random, comment: str) -> tuple[str, str]:
    """An OpenSSH ed25519 key pair; the private key's check integers come from rng too, so the
    same seed gives byte-identical keys (cryptography's serializer draws them from os.urandom)."""
    import struct

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    seed = rng.randbytes(32)
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def string(data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + data

    blob = string(b"ssh-ed25519") + string(public)
    check = rng.randbytes(4)
    section = check + check + blob + string(seed + public) + string(comment.encode())
    section += bytes(range(1, 1 + (-len(section) % 8)))
    body = b"openssh-key-v1\0" + string(b"none") + string(b"none") + string(b"") + struct.pack(">I", 1) + string(blob) + string(section)
    encoded = base64.b64encode(body).decode()
    lines = [encoded[i : i + 70] for i in range(0, len(encoded), 70)]
    private = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END OPENSSH PRIVATE KEY-----\n"
    return private, f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}"


# ---------------------------------------------------------------------------------------------
# Gitea /data


def write_file(path: str, data: bytes | str) -> int:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    with open(path, "wb") as out:
        out.write(raw)
    return len(raw)


def write_gitea_hooks(path: str) -> None:
    """The hooks Gitea installs in every repository (its own, not git's samples)."""
    for hook in ("pre-receive", "update", "post-receive"):
        script = f"#!/usr/bin/env bash\n# AUTO GENERATED BY GITEA, DO NOT MODIFY\ndata=$(cat)\nexitcodes=\"\"\nhookname=$(basename $0)\n" \
                 f"GIT_DIR=${{GIT_DIR:-$(dirname $0)/..}}\nfor hook in ${{GIT_DIR}}/hooks/${{hookname}}.d/*; do\n" \
                 f"  test -x \"${{hook}}\" && test -f \"${{hook}}\" || continue\n  echo \"${{data}}\" | \"${{hook}}\"\n  exitcodes=\"${{exitcodes}} $?\"\ndone\n" \
                 f"for i in ${{exitcodes}}; do\n  [ ${{i}} -eq 0 ] || exit ${{i}}\ndone\n"
        write_file(os.path.join(path, "hooks", hook), script)
        write_file(os.path.join(path, "hooks", f"{hook}.d", "gitea"),
                   f"#!/usr/bin/env bash\n# AUTO GENERATED BY GITEA, DO NOT MODIFY\n/usr/local/bin/gitea hook --config=/data/gitea/conf/app.ini {hook}\n")
        os.chmod(os.path.join(path, "hooks", hook), 0o755)
        os.chmod(os.path.join(path, "hooks", f"{hook}.d", "gitea"), 0o755)


def make_repo(path: str, repo: dict, world: World, total_bytes: int) -> dict:
    """A bare repository built with git fast-import: fixed dates, so the same seed gives the same commits."""
    rng, plan = world.rng, world.plan
    subprocess.run(["git", "init", "-q", "--bare", "--template=", "-b", "main", path], check=True)
    write_gitea_hooks(path)
    commits = plan.commits_per_repo if total_bytes < 64 * MIB else max(plan.commits_per_repo, total_bytes // (8 * MIB))
    per_commit = total_bytes // commits
    owner = repo["owner"]
    proc = subprocess.Popen(["git", "-c", "fastimport.unpackLimit=0", "fast-import", "--quiet", "--done"], cwd=path, stdin=subprocess.PIPE,
                            env=dict(os.environ, GIT_DIR=path))
    assert proc.stdin is not None
    out = proc.stdin

    def data(raw: bytes) -> None:
        out.write(f"data {len(raw)}\n".encode())
        out.write(raw)
        out.write(b"\n")

    for n in range(commits):
        when = unix(repo["id"] * 3600 + n * 600)
        out.write(b"commit refs/heads/main\n")
        out.write(f"committer {owner['full']} <{owner['email']}> {when} +0000\n".encode())
        data(f"{rng.choice(WORDS)}: {world.text(40)}".encode())
        if n == 0:
            readme = f"# {repo['name']}\n\n{world.text(300)}\n"
            out.write(b"M 100644 inline README.md\n")
            data(readme.encode())
            out.write(b"M 100644 inline requirements.txt\n")
            data(b"mlflow==2.9.2\npandas==2.1.4\nscikit-learn==1.3.2\n")
        out.write(f"M 100644 inline src/{rng.choice(WORDS)}_{n}.py\n".encode())
        data(f"# {world.text(80)}\nimport mlflow\n\n\ndef step_{n}():\n    return {n}\n".encode())
        if per_commit > 0:
            out.write(f"M 100644 inline data/blob_{n:04d}.bin\n".encode())
            data(rng.randbytes(per_commit))
    out.write(b"done\n")
    out.close()
    if proc.wait() != 0:
        raise RuntimeError(f"git fast-import failed for {path}")
    head = subprocess.run(["git", "--git-dir", path, "rev-parse", "refs/heads/main"], check=True, capture_output=True, text=True).stdout.strip()
    write_file(os.path.join(path, "description"), f"{repo['name']}\n")
    return {"head": head, "commits": commits}


def seed_gitea_data(world: World, root: str, summary: dict) -> None:
    rng, plan = world.rng, world.plan
    repos = {}
    for index, repo in enumerate(world.repos):
        size = plan.large_repo_bytes if index == len(world.projects) - 1 or (index == 0 and not world.projects) else plan.blob_bytes
        path = os.path.join(root, "git", "repositories", repo["owner"]["name"].lower(), repo["name"].lower() + ".git")
        repos[f"{repo['owner']['name'].lower()}/{repo['name'].lower()}"] = make_repo(path, repo, world, size)
    keys = "\n".join(f'command="/usr/local/bin/gitea --config=/data/gitea/conf/app.ini serv key-{u["id"]}",no-port-forwarding,'
                     f'no-X11-forwarding,no-agent-forwarding,no-pty,restrict {u["ssh_public"]}' for u in world.users)
    write_file(os.path.join(root, "git", ".ssh", "authorized_keys"), keys + "\n")
    write_file(os.path.join(root, "gitea", "conf", "app.ini"), f"""APP_NAME = KDL Gitea
RUN_MODE = prod
RUN_USER = git

[repository]
ROOT = /data/git/repositories

[server]
APP_DATA_PATH = /data/gitea
DOMAIN = gitea.kdl.local
SSH_DOMAIN = gitea.kdl.local
HTTP_PORT = 3000
ROOT_URL = https://gitea.kdl.local/
DISABLE_SSH = false
SSH_PORT = 22
LFS_START_SERVER = true

[database]
DB_TYPE = postgres
HOST = postgres:5432
NAME = gitea
USER = gitea
PASSWD = {rng.randbytes(12).hex()}
SSL_MODE = disable

[indexer]
ISSUE_INDEXER_PATH = /data/gitea/indexers/issues.bleve
REPO_INDEXER_ENABLED = true
REPO_INDEXER_PATH = /data/gitea/indexers/repos.bleve

[session]
PROVIDER = file
PROVIDER_CONFIG = /data/gitea/sessions

[security]
INSTALL_LOCK = true
SECRET_KEY = {rng.randbytes(32).hex()}
INTERNAL_TOKEN = {base64.urlsafe_b64encode(rng.randbytes(48)).decode()}

[oauth2]
JWT_SECRET = {base64.urlsafe_b64encode(rng.randbytes(32)).decode().rstrip("=")}

[log]
ROOT_PATH = /data/gitea/log
""")
    for n in range(3):
        write_file(os.path.join(root, "gitea", "attachments", f"{n}", f"{n}", world.uid()), rng.randbytes(2048))
    write_file(os.path.join(root, "gitea", "avatars", hashlib.md5(b"kdladmin").hexdigest()), rng.randbytes(1024))
    write_file(os.path.join(root, "gitea", "sessions", "a", "b", rng.randbytes(8).hex()), rng.randbytes(64))
    write_file(os.path.join(root, "gitea", "log", "gitea.log"), "2024/03/01 09:00:00 ...s/install/setting.go:21:PreloadSettings() [I] AppPath: /usr/local/bin/gitea\n")
    for index_name in ("issues.bleve", "repos.bleve"):
        base = os.path.join(root, "gitea", "indexers", index_name)
        write_file(os.path.join(base, "index_meta.json"), '{"storage":"boltdb","index_type":"scorch"}')
        write_file(os.path.join(base, "store", "root.bolt"), rng.randbytes(8192))
        write_file(os.path.join(base, "store", "000000000001.zap"), rng.randbytes(16384))
    for algo in ("ed25519", "rsa", "ecdsa"):
        private, public = ed25519_pair(rng, "root@gitea-0")
        write_file(os.path.join(root, "ssh", f"ssh_host_{algo}_key"), private)
        write_file(os.path.join(root, "ssh", f"ssh_host_{algo}_key.pub"), public + "\n")
    os.makedirs(os.path.join(root, "lost+found"), exist_ok=True)
    write_file(os.path.join(root, "lost+found", "#1835009"), rng.randbytes(512))
    files = total = 0
    for directory, dirs, names in os.walk(root):
        os.chown(directory, GITEA_UID, GITEA_UID)
        for name in names:
            path = os.path.join(directory, name)
            os.chown(path, GITEA_UID, GITEA_UID, follow_symlinks=False)
            files += 1
            total += os.lstat(path).st_size
    summary["gitea"] = {
        "data_dir": root,
        "repo_count": len(repos),
        "repos": repos,
        "files": files,
        "bytes": total,
        "excluded": ["gitea/indexers", "ssh", "lost+found"],
    }


# ---------------------------------------------------------------------------------------------
# MongoDB


def seed_mongo(world: World, summary: dict) -> None:
    import pymongo

    rng, plan = world.rng, world.plan
    client = pymongo.MongoClient(os.environ["MONGO_URI"], serverSelectionTimeoutMS=10000)
    kdl, admin = client["kdl"], client["admin"]
    admin_oid = world.users[0]["oid"]
    admin_users = [
        {"_id": admin_oid, "userId": world.uid(), "user": "kdladmin", "db": "admin",
         "credentials": {"SCRAM-SHA-256": {"iterationCount": 15000, "salt": base64.b64encode(rng.randbytes(28)).decode(),
                                           "storedKey": base64.b64encode(rng.randbytes(32)).decode(),
                                           "serverKey": base64.b64encode(rng.randbytes(32)).decode()}},
         "roles": [{"role": "root", "db": "admin"}]},
        {"_id": world.oid(), "userId": world.uid(), "user": "kdl-server", "db": "admin",
         "roles": [{"role": "readWrite", "db": "kdl"}, {"role": "dbAdmin", "db": "kdl"}]},
    ]
    admin["users"].insert_many(admin_users)
    admin["roles"].insert_many([
        {"_id": "admin.kdlBackup", "role": "kdlBackup", "db": "admin",
         "privileges": [{"resource": {"db": "kdl", "collection": ""}, "actions": ["find", "listCollections"]}], "roles": [{"role": "backup", "db": "admin"}]},
    ])
    users = []
    for user in world.users:
        users.append({
            "_id": user["oid"], "email": user["email"], "username": user["name"], "usernameSlug": user["slug"],
            "deleted": False, "accessLevel": "ADMIN" if user["admin"] else rng.choice(["VIEWER", "MANAGER"]),
            "creationDate": dt(user["id"] * 60), "lastActivity": dt(86400 * 20 + user["id"]),
            "sshKey": {"public": user["ssh_public"], "private": "<stored in the Secret " + user["slug"] + "-ssh-keys>",
                       "creationDate": dt(user["id"] * 60 + 5)},
            "apiTokens": [{"_id": world.oid(), "name": "kdl-cli", "creationDate": dt(86400 + user["id"]), "lastUsedDate": None}],
        })
    kdl["users"].insert_many(users)
    projects = []
    for project in world.projects:
        projects.append({
            "_id": project["id"], "name": project["id"].replace("-", " ").title(), "description": world.text(80),
            "creationDate": dt(project["created"]), "lastActivationDate": dt(project["created"] + 7200).isoformat() + "Z",
            "favorite": False, "archived": False, "error": None, "area": project["id"].split("-")[0],
            "repositoryType": "INTERNAL", "repoName": project["id"], "externalRepoUrl": None,
            "members": [{"userId": m["oid"], "accessLevel": "ADMIN" if m["admin"] else "VIEWER", "addedDate": dt(project["created"] + 60)}
                        for m in project["members"]],
            "createdBy": admin_oid,
            "minioAccessKey": {"accessKey": "project-" + project["id"], "secretKey": "<in minio>"},
        })
    kdl["projects"].insert_many(projects)
    runtimes = [
        {"_id": f"runtime-{n}", "name": name, "desc": world.text(50), "labels": labels,
         "dockerImage": f"konstellation/kdl-py{version}-{flavour}", "dockerTag": "3.9.0", "runtimePod": ""}
        for n, (name, labels, version, flavour) in enumerate([
            ("Python 3.10 CPU", ["python", "cpu"], "3.10", "cpu"), ("Python 3.10 GPU", ["python", "gpu", "cuda"], "3.10", "gpu"),
            ("Python 3.11 Spark", ["python", "spark"], "3.11", "spark")])
    ]
    kdl["runtimes"].insert_many(runtimes)
    capabilities = [
        {"_id": "default-cpu", "name": "Default CPU", "default": True, "node_selectors": {}, "tolerations": [], "affinities": {}},
        {"_id": "gpu-t4", "name": "GPU (T4)", "default": False, "node_selectors": {"nvidia.com/gpu.product": "Tesla-T4"},
         "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}], "affinities": {}},
    ]
    kdl["capabilities"].insert_many(capabilities)
    activity_types = ["CREATE_PROJECT", "ADD_MEMBER", "UPDATE_PROJECT_SETTINGS", "START_TOOLS", "STOP_TOOLS", "REGENERATE_SSH_KEYS"]
    batch, activity_count = [], 0
    for user in world.users:
        for n in range(plan.activity_per_user):
            project = world.projects[rng.randrange(len(world.projects))]
            batch.append({"_id": world.oid(), "date": dt(86400 * 10 + activity_count * 13), "userId": user["oid"],
                          "type": rng.choice(activity_types),
                          "vars": [{"key": "PROJECT_ID", "value": project["id"]}, {"key": "N", "value": str(n)}]})
            activity_count += 1
            if len(batch) >= 1000:
                kdl["userActivity"].insert_many(batch)
                batch = []
    if batch:
        kdl["userActivity"].insert_many(batch)
    summary["mongo"] = {
        "kdl": {name: kdl[name].count_documents({}) for name in ("projects", "users", "runtimes", "capabilities", "userActivity")},
        "admin": {name: admin[name].count_documents({}) for name in ("users", "roles")},
        "admin_user_id": str(admin_oid),
    }
    client.close()


# ---------------------------------------------------------------------------------------------
# MLflow stores

MLFLOW_SCHEMA = """
CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num));
CREATE TABLE experiments (experiment_id INTEGER NOT NULL, name VARCHAR(256) NOT NULL, artifact_location VARCHAR(256),
  lifecycle_stage VARCHAR(32), creation_time BIGINT, last_update_time BIGINT,
  CONSTRAINT experiment_pk PRIMARY KEY (experiment_id), UNIQUE (name),
  CONSTRAINT experiments_lifecycle_stage CHECK (lifecycle_stage IN ('active', 'deleted')));
CREATE TABLE experiment_tags (key VARCHAR(250) NOT NULL, value VARCHAR(5000), experiment_id INTEGER NOT NULL,
  CONSTRAINT experiment_tag_pk PRIMARY KEY (key, experiment_id), FOREIGN KEY(experiment_id) REFERENCES experiments (experiment_id));
CREATE TABLE runs (run_uuid VARCHAR(32) NOT NULL, name VARCHAR(250), source_type VARCHAR(20), source_name VARCHAR(500),
  entry_point_name VARCHAR(50), user_id VARCHAR(256), status VARCHAR(9), start_time BIGINT, end_time BIGINT,
  deleted_time BIGINT, source_version VARCHAR(50), lifecycle_stage VARCHAR(20), artifact_uri VARCHAR(200), experiment_id INTEGER,
  CONSTRAINT run_pk PRIMARY KEY (run_uuid), FOREIGN KEY(experiment_id) REFERENCES experiments (experiment_id),
  CONSTRAINT status CHECK (status IN ('SCHEDULED', 'FAILED', 'FINISHED', 'RUNNING', 'KILLED')),
  CONSTRAINT runs_lifecycle_stage CHECK (lifecycle_stage IN ('active', 'deleted')));
CREATE TABLE metrics (key VARCHAR(250) NOT NULL, value FLOAT NOT NULL, timestamp BIGINT NOT NULL, run_uuid VARCHAR(32) NOT NULL,
  step BIGINT DEFAULT '0' NOT NULL, is_nan BOOLEAN DEFAULT '0' NOT NULL,
  CONSTRAINT metric_pk PRIMARY KEY (key, timestamp, step, run_uuid, value, is_nan), FOREIGN KEY(run_uuid) REFERENCES runs (run_uuid));
CREATE INDEX index_metrics_run_uuid ON metrics (run_uuid);
CREATE TABLE latest_metrics (key VARCHAR(250) NOT NULL, value FLOAT NOT NULL, timestamp BIGINT, step BIGINT NOT NULL,
  is_nan BOOLEAN NOT NULL, run_uuid VARCHAR(32) NOT NULL,
  CONSTRAINT latest_metric_pk PRIMARY KEY (key, run_uuid), FOREIGN KEY(run_uuid) REFERENCES runs (run_uuid));
CREATE INDEX index_latest_metrics_run_uuid ON latest_metrics (run_uuid);
CREATE TABLE params (key VARCHAR(250) NOT NULL, value VARCHAR(8000) NOT NULL, run_uuid VARCHAR(32) NOT NULL,
  CONSTRAINT param_pk PRIMARY KEY (key, run_uuid), FOREIGN KEY(run_uuid) REFERENCES runs (run_uuid));
CREATE INDEX index_params_run_uuid ON params (run_uuid);
CREATE TABLE tags (key VARCHAR(250) NOT NULL, value VARCHAR(8000), run_uuid VARCHAR(32) NOT NULL,
  CONSTRAINT tag_pk PRIMARY KEY (key, run_uuid), FOREIGN KEY(run_uuid) REFERENCES runs (run_uuid));
CREATE INDEX index_tags_run_uuid ON tags (run_uuid);
CREATE TABLE registered_models (name VARCHAR(256) NOT NULL, creation_time BIGINT, last_updated_time BIGINT, description VARCHAR(5000),
  CONSTRAINT registered_model_pk PRIMARY KEY (name), UNIQUE (name));
CREATE TABLE model_versions (name VARCHAR(256) NOT NULL, version INTEGER NOT NULL, creation_time BIGINT, last_updated_time BIGINT,
  description VARCHAR(5000), user_id VARCHAR(256), current_stage VARCHAR(20), source VARCHAR(500), run_id VARCHAR(32),
  status VARCHAR(20), status_message VARCHAR(500), run_link VARCHAR(500), storage_location VARCHAR(500),
  CONSTRAINT model_version_pk PRIMARY KEY (name, version), FOREIGN KEY(name) REFERENCES registered_models (name) ON UPDATE cascade);
CREATE TABLE datasets (dataset_uuid VARCHAR(36) NOT NULL, experiment_id INTEGER NOT NULL, name VARCHAR(500) NOT NULL,
  digest VARCHAR(36) NOT NULL, dataset_source_type VARCHAR(36) NOT NULL, dataset_source TEXT NOT NULL, dataset_schema TEXT,
  dataset_profile TEXT, CONSTRAINT dataset_pk PRIMARY KEY (experiment_id, name, digest),
  FOREIGN KEY(experiment_id) REFERENCES experiments (experiment_id));
CREATE TABLE inputs (input_uuid VARCHAR(36) NOT NULL, source_type VARCHAR(36) NOT NULL, source_id VARCHAR(36) NOT NULL,
  destination_type VARCHAR(36) NOT NULL, destination_id VARCHAR(36) NOT NULL,
  CONSTRAINT inputs_pk PRIMARY KEY (source_type, source_id, destination_type, destination_id));
"""
MLFLOW_ALEMBIC_HEAD = "acf3f17fdcc7"  # MLflow 2.9's schema head


def mlflow_rows(world: World, project: dict, steps: int, experiments: int, runs_per_experiment: int):
    """Yields (table, row) for one project's store, in insert order."""
    rng = world.rng
    yield "alembic_version", (MLFLOW_ALEMBIC_HEAD,)
    yield "experiments", (0, "Default", "mlflow-artifacts:/0", "active", unix(project["created"]), unix(project["created"]))
    for e in range(1, experiments + 1):
        created = unix(project["created"] + e * 3600)
        yield "experiments", (e, f"{project['id']}-{rng.choice(WORDS)}-{e}", f"s3://kdl-{project['id']}/mlflow-artifacts/{e}",
                              "deleted" if e == experiments and experiments > 2 else "active", created, created)
        yield "experiment_tags", ("mlflow.note.content", world.text(60), e)
        for r in range(runs_per_experiment):
            run = rng.randbytes(16).hex()
            start = (created + r * 900) * 1000
            member = project["members"][rng.randrange(len(project["members"]))]
            yield "runs", (run, f"{rng.choice(WORDS)}-{rng.choice(WORDS)}-{r}", "LOCAL", f"/home/{member['slug']}/repos/{project['id']}/train.py",
                           "", member["name"], rng.choice(["FINISHED", "FINISHED", "FAILED", "RUNNING"]), start, start + 600000, None,
                           rng.randbytes(20).hex(), "active", f"s3://kdl-{project['id']}/mlflow-artifacts/{e}/{run}/artifacts", e)
            for key, value in (("learning_rate", str(rng.choice([0.1, 0.01, 0.001]))), ("max_depth", str(rng.randint(3, 12))),
                               ("model", rng.choice(["xgboost", "random_forest", "lightgbm"]))):
                yield "params", (key, value, run)
            for key, value in (("mlflow.user", member["name"]), ("mlflow.source.type", "LOCAL"),
                               ("mlflow.runName", f"run-{r}"), ("mlflow.source.git.commit", rng.randbytes(20).hex())):
                yield "tags", (key, value, run)
            for key in ("loss", "accuracy", "val_loss"):
                value = 0.0
                for step in range(steps):
                    value = rng.random()
                    yield "metrics", (key, value, start + step * 1000, run, step, 0)
                yield "latest_metrics", (key, value, start + steps * 1000, steps - 1, 0, run)
    yield "registered_models", (f"{project['id']}-model", unix(project["created"]) * 1000, unix(project["created"]) * 1000, world.text(30))
    yield "model_versions", (f"{project['id']}-model", 1, unix(project["created"]) * 1000, unix(project["created"]) * 1000, "",
                             "kdladmin", "Production", f"s3://kdl-{project['id']}/mlflow-artifacts/1/model", None, "READY", "", "", "")


def seed_mlflow_store(path: str, world: World, project: dict, steps: int, wal: bool) -> dict:
    experiments = 3 if steps < 1000 else 4
    runs_per_experiment = world.plan.runs_per_experiment
    counts: dict[str, int] = {}
    db = sqlite3.connect(path)
    db.executescript(MLFLOW_SCHEMA)
    if wal:
        db.execute("PRAGMA journal_mode=WAL")
    pending: dict[str, list] = {}

    def flush(table: str) -> None:
        rows = pending.pop(table, [])
        if rows:
            db.executemany(f"INSERT INTO {table} VALUES ({','.join('?' * len(rows[0]))})", rows)

    with db:
        for table, row in mlflow_rows(world, project, steps, experiments, runs_per_experiment):
            if table != "metrics" and "metrics" in pending:
                flush("metrics")  # keep the parent rows first, as MLflow writes them
            pending.setdefault(table, []).append(row)
            counts[table] = counts.get(table, 0) + 1
            if len(pending[table]) >= 5000 or table != "metrics":
                flush(table)
        for table in list(pending):
            flush(table)
    db.close()
    if wal:
        # A live MLflow server: the last run's writes sit in mlflow.db-wal, not yet checkpointed.
        pid = os.fork()
        if pid == 0:
            try:
                child = sqlite3.connect(path)
                child.execute("PRAGMA wal_autocheckpoint=0")
                with child:
                    child.execute("INSERT INTO experiment_tags VALUES ('kdl.wal-only', 'written after the last checkpoint', 1)")
                    child.execute("INSERT INTO metrics VALUES ('wal_metric', 1.0, 1, (SELECT run_uuid FROM runs LIMIT 1), 0, 0)")
            finally:
                os._exit(0)  # no close: the -wal and -shm files stay, as a running server leaves them
        os.waitpid(pid, 0)
        counts["experiment_tags"] = counts.get("experiment_tags", 0) + 1
        counts["metrics"] = counts.get("metrics", 0) + 1
    return counts


MLFLOW_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".venv-mlflow", "bin", "python")
SEED_MLFLOW = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seed_mlflow.py")


def real_mlflow_stores(specs: list[dict]) -> list[dict]:
    """Has real MLflow (seed_mlflow.py in .venv-mlflow) write the stores; returns their row counts per table."""
    if not os.access(MLFLOW_PY, os.X_OK):
        raise RuntimeError(f"missing {os.path.normpath(MLFLOW_PY)}: run scripts/setup.sh")
    done = subprocess.run([MLFLOW_PY, SEED_MLFLOW], input=json.dumps(specs), capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"seed_mlflow.py failed: {done.stderr.strip()[-600:]}")
    return json.loads(done.stdout)


def seed_mlflow(world: World, root: str, summary: dict) -> None:
    """tiny and small: every store written by real MLflow. SIZE (benchmarks): MLflow 2.9's tables written here
    directly, as MLflow's own client would take minutes per million metric rows."""
    rng, plan = world.rng, world.plan
    stores, specs = [], []
    real = summary["size"] in ("tiny", "small")
    projects = list(world.projects)
    while len(projects) < plan.mlflow_projects:
        projects.append({**projects[len(projects) % len(world.projects)], "id": f"{projects[len(projects) % len(world.projects)]['id']}-x{len(projects)}"})
    for index, project in enumerate(projects[: plan.mlflow_projects]):
        claim = f"kdl-{project['id']}-mlflow-claim-pvc-{world.uid()}"
        directory = os.path.join(root, claim)
        os.makedirs(directory)
        large = index == 0 and plan.large_mlflow_steps > plan.metric_steps * 10
        steps = plan.large_mlflow_steps if large else plan.metric_steps
        wal = index % 3 == 1
        local = None
        if index % 3 == 2:
            local = "mlruns" if index % 2 == 0 else "artifacts"
        if real:
            specs.append({"path": os.path.join(directory, "mlflow.db"), "project": project["id"],
                          "members": [m["slug"] for m in project["members"]], "experiments": 3,
                          "runs_per_experiment": plan.runs_per_experiment, "steps": steps, "wal": wal, "local": local,
                          "artifact_bytes": plan.mlflow_artifact_bytes, "seed": rng.randrange(1 << 30)})
            counts = {}
        else:
            counts = seed_mlflow_store(os.path.join(directory, "mlflow.db"), world, project, steps, wal)
            if local:
                write_local_artifacts(rng, plan, directory, local)
        stores.append({"project": project["id"], "dir": claim, "tables": counts, "wal": wal, "local_artifacts": local,
                       "large": large, "writer": "mlflow" if real else "seed.py"})
    if real:
        for store, counts in zip(stores, real_mlflow_stores(specs)):
            store["tables"] = counts
    for store in stores:
        files = set(os.listdir(os.path.join(root, store["dir"])))
        counts = store["tables"]
        store.update({"experiments": counts.get("experiments", 0), "runs": counts.get("runs", 0),
                      "metrics": counts.get("metrics", 0),
                      "wal_files_present": "mlflow.db-wal" in files and "mlflow.db-shm" in files})
    # Not an MLflow store: a claim of another kind and a stray folder (the scan must skip both).
    write_file(os.path.join(root, f"kdl-{world.projects[0]['id']}-filebrowser-claim-pvc-{world.uid()}", "notes.txt"), "not mlflow\n")
    summary["mlflow"] = {"root": root, "project_count": len(stores), "projects": stores}


def write_local_artifacts(rng: random.Random, plan: Plan, directory: str, local: str) -> None:
    """Two runs' artifacts in mlruns/ or artifacts/ beside a store seed.py wrote."""
    for n in range(2):
        run = rng.randbytes(16).hex()
        base = os.path.join(directory, local, "1", run) if local == "mlruns" else os.path.join(directory, local, run)
        write_file(os.path.join(base, "meta.yaml"), f"run_id: {run}\nexperiment_id: '1'\nlifecycle_stage: active\n")
        write_file(os.path.join(base, "artifacts", "model", "MLmodel"), "flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n")
        write_file(os.path.join(base, "artifacts", "model", "model.pkl"), rng.randbytes(plan.mlflow_artifact_bytes))


# ---------------------------------------------------------------------------------------------
# Kubernetes objects

CRDS = [
    {"group": "project.konstellation.io", "version": "v1", "plural": "kdlprojects", "kind": "KDLProject", "singular": "kdlproject"},
    {"group": "kdl.konstellation.io", "version": "v1alpha1", "plural": "usertools", "kind": "UserTools", "singular": "usertools"},
]


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def last_applied(obj: dict) -> str:
    trimmed = {k: v for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in trimmed["metadata"].items() if k in ("name", "namespace", "labels")}
    return json.dumps({**trimmed, "metadata": {"annotations": {}, **meta}}, separators=(",", ":"))


def seed_k8s(world: World, directory: str, summary: dict) -> None:
    rng, plan = world.rng, world.plan
    items: list[dict] = []
    for index, project in enumerate(world.projects):
        obj = {
            "apiVersion": "project.konstellation.io/v1", "kind": "KDLProject",
            "metadata": {"name": f"kdlproject-{project['id']}", "namespace": NAMESPACE, "labels": {"app": f"kdlproject-{project['id']}"},
                         "creationTimestamp": iso(project["created"]), "finalizers": ["helm.sdk.operatorframework.io/uninstall-release"]},
            "spec": {
                "projectId": project["id"],
                "domain": "kdl.local",
                "mlflow": {"image": {"repository": "konstellation/mlflow", "tag": "v0.15.0", "pullPolicy": "IfNotPresent"},
                           "env": {"ARTIFACTS_BUCKET": f"kdl-{project['id']}", "MLFLOW_S3_ENDPOINT_URL": "http://minio:9000"},
                           "volume": {"storageClassName": "microk8s-hostpath", "size": "1Gi"},
                           "ingress": {"enabled": True, "className": "nginx"}},
                "filebrowser": {"image": {"repository": "filebrowser/filebrowser", "tag": "v2", "pullPolicy": "IfNotPresent"},
                                "env": {"AWS_S3_BUCKET": f"kdl-{project['id']}"}},
            },
            "status": {"conditions": [{"type": "Initialized", "status": "True", "lastTransitionTime": iso(project["created"] + 5)},
                                      {"type": "Deployed", "status": "True", "reason": "InstallSuccessful",
                                       "lastTransitionTime": iso(project["created"] + 30)}],
                       "deployedRelease": {"name": f"kdlproject-{project['id']}", "manifest": "---\n# Source: project/templates/mlflow.yaml\n"}},
        }
        if index % 2 == 0:
            obj["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": last_applied(obj)}
        items.append(obj)
    for user in world.users:
        slug = user["slug"]
        usertools_uid = str(uuid.UUID(bytes=hashlib.md5(f"usertools/{slug}".encode()).digest()))
        items.append({
            "apiVersion": "kdl.konstellation.io/v1alpha1", "kind": "UserTools",
            "metadata": {"name": f"usertools-{slug}", "namespace": NAMESPACE, "labels": {"app": f"usertools-{slug}"}, "uid": usertools_uid,
                         "creationTimestamp": iso(user["id"] * 60 + 10)},
            "spec": {"username": user["name"], "usernameSlug": slug, "sharedVolume": {"name": "received-data", "path": "/shared"},
                     "kdlUserTools": {"image": {"repository": "konstellation/kdl-user-tools", "tag": "v1.2.0"}},
                     "vscodeRuntime": {"image": {"repository": "konstellation/kdl-py3.10-cpu", "tag": "3.9.0"}},
                     "podLabels": {}, "tolerations": [], "nodeSelector": {}, "affinity": {}},
            "status": {"conditions": [{"type": "Deployed", "status": "True", "reason": "InstallSuccessful", "lastTransitionTime": iso(user["id"] * 60 + 40)}]},
        })
        items.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                      "metadata": {"name": f"{slug}-ssh-keys", "namespace": NAMESPACE, "labels": {"app": "kdl-server", "kdl.konstellation.io/user": slug},
                                   "creationTimestamp": iso(user["id"] * 60 + 5)},
                      "data": {"KDL_USER_PRIVATE_SSH_KEY": b64(user["ssh_private"]), "KDL_USER_PUBLIC_SSH_KEY": b64(user["ssh_public"])}})
        items.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                      "metadata": {"name": f"codeserver-oauth2-secrets-{slug}", "namespace": NAMESPACE, "creationTimestamp": iso(user["id"] * 60 + 6)},
                      "data": {"DEPLOYMENT_SECRET_NAME": b64(f"codeserver-oauth2-credentials-{slug}"),
                               "GITEA_REDIRECT_URIS": b64(f"https://{slug}-code.kdl.local/oauth2/callback"),
                               "GITEA_APPLICATION_NAME": b64(f"codeserver-{slug}")}})
        items.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                      "metadata": {"name": f"codeserver-oauth2-credentials-{slug}", "namespace": NAMESPACE, "creationTimestamp": iso(user["id"] * 60 + 7),
                                   "ownerReferences": [{"apiVersion": "kdl.konstellation.io/v1alpha1", "kind": "UserTools", "name": f"usertools-{slug}",
                                                        "uid": usertools_uid, "controller": True, "blockOwnerDeletion": True}]},
                      "data": {"OAUTH2_PROXY_CLIENT_ID": b64(world.uid()), "OAUTH2_PROXY_CLIENT_SECRET": b64(rng.randbytes(24).hex()),
                               "OAUTH2_PROXY_COOKIE_SECRET": b64(rng.randbytes(16).hex())}})
    unrelated = [
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
         "metadata": {"name": "postgres", "namespace": NAMESPACE, "labels": {"app.kubernetes.io/name": "postgres"}},
         "data": {"POSTGRES_DB": b64("gitea"), "POSTGRES_PASSWORD": b64(rng.randbytes(12).hex())}},
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
         "metadata": {"name": "kdl-server-token-x7k2p", "namespace": NAMESPACE,
                      "annotations": {"kubernetes.io/service-account.name": "kdl-server", "kubernetes.io/service-account.uid": world.uid()}},
         "data": {"token": b64("eyJhbGciOiJSUzI1NiJ9." + rng.randbytes(64).hex()), "namespace": b64(NAMESPACE), "ca.crt": b64("-----BEGIN CERTIFICATE-----\n")}},
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
         "metadata": {"name": "backup-secrets", "namespace": NAMESPACE, "labels": {"app": "backup"}},
         "data": {"AWS_ACCESS_KEY_ID": b64("AKIA" + rng.randbytes(8).hex().upper()), "AWS_SECRET_ACCESS_KEY": b64(rng.randbytes(20).hex()),
                  "BUCKET_NAME": b64("kdl-backups")}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt", "namespace": NAMESPACE},
         "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kdl-server-config", "namespace": NAMESPACE, "labels": {"app": "kdl-server"}},
         "data": {"KDL_SERVER_MONGODB_NAME": "kdl", "GITEA_URL": "http://gitea:3000", "PROJECT_MLFLOW_STORAGE_SIZE": "1Gi"}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "kdl-server", "namespace": NAMESPACE}},
    ]
    for release in range(1, 4):
        unrelated.append({"apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
                          "metadata": {"name": f"sh.helm.release.v1.kdl-server.v{release}", "namespace": NAMESPACE,
                                       "labels": {"name": "kdl-server", "owner": "helm", "status": "deployed" if release == 3 else "superseded",
                                                  "version": str(release)}},
                          "data": {"release": b64(b64(rng.randbytes(2048)))}})
    items.extend(unrelated)
    filler = 0
    while plan.k8s_objects and len(items) < plan.k8s_objects:
        filler += 1
        items.append({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": f"kdl-job-config-{filler:05d}", "namespace": NAMESPACE, "labels": {"app": "kdl-jobs"}},
                      "data": {"config.yaml": world.text(200)}})
    # One object in another namespace: a namespaced list must not return it.
    items.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": "alice-ssh-keys", "namespace": "other"},
                  "data": {"KDL_USER_PUBLIC_SSH_KEY": b64("ssh-ed25519 AAAA other")}})
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "objects.json"), "w", encoding="utf-8") as out:
        json.dump({"crds": CRDS, "items": items}, out)
    per_resource: dict[str, int] = {}
    for item in items:
        if item["metadata"]["namespace"] != NAMESPACE:
            continue
        plural = {"Secret": "secrets", "ConfigMap": "configmaps", "ServiceAccount": "serviceaccounts", "KDLProject": "kdlprojects",
                  "UserTools": "usertools"}[item["kind"]]
        per_resource[plural] = per_resource.get(plural, 0) + 1
    summary["k8s"] = {
        "namespace": NAMESPACE,
        "objects": per_resource,
        "total": sum(per_resource.values()),
        "kdl_secrets": len(world.users) * 3,
        "ssh_key_secrets": sorted(f"{u['slug']}-ssh-keys" for u in world.users),
        "unrelated_secrets": sorted(o["metadata"]["name"] for o in unrelated if o["kind"] == "Secret"),
    }


def write_crds_only(directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "objects.json"), "w", encoding="utf-8") as out:
        json.dump({"crds": CRDS, "items": []}, out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="the stack directory (DIR of up.sh)")
    parser.add_argument("--size", required=True, help="tiny, small, none, or a total such as 2GiB")
    parser.add_argument("--seed-number", type=int, default=1, help="the same number gives the same data")
    args = parser.parse_args()
    os.umask(0o022)  # the data trees look like a volume's: directories 755, files 644
    k8s_dir = os.path.join(args.dir, "k8s")
    if args.size == "none":
        write_crds_only(k8s_dir)
        return 0
    plan = make_plan(args.size)
    rng = random.Random(args.seed_number)
    world = build_world(rng, plan)
    for user in world.users:
        user["ssh_private"], user["ssh_public"] = ed25519_pair(rng, f"{user['slug']}@kdl")
    summary: dict = {"size": args.size, "seed_number": args.seed_number,
                     "users": [u["name"] for u in world.users], "projects": [p["id"] for p in world.projects]}
    for name, step in (("k8s", lambda: seed_k8s(world, k8s_dir, summary)),
                       ("gitea-data", lambda: seed_gitea_data(world, os.environ["GITEA_DATA_DIR"], summary)),
                       ("mlflow", lambda: seed_mlflow(world, os.environ["MLFLOW_ROOT"], summary)),
                       ("postgres", lambda: seed_postgres(world, summary)),
                       ("mongo", lambda: seed_mongo(world, summary))):
        started = time.monotonic()
        step()
        print(f"seed: step={name} seconds={time.monotonic() - started:.1f}", file=sys.stderr)
    tmp = os.path.join(args.dir, "seed-summary.json.tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(summary, out, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(args.dir, "seed-summary.json"))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, ValueError, OSError) as error:
        print(f"seed: {error}", file=sys.stderr)
        sys.exit(1)
