"""Shared machinery of the reliability suite: bounded runs whose output is kept for the secret-leak scan,
crash detection, the kill harness (a container's SIGTERM then SIGKILL), a cuttable TCP proxy that makes a
service unavailable, the S3 fault proxy, per-process memory sampling, and set checks straight against S3.

Every process a run starts carries KDL_REL_RUN=<token> in its environment; like a container's cgroup, the
token finds all of them (even those that changed process group or were re-parented) to kill or to measure.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BACKUP_SH = ROOT / "backup" / "backup.sh"
RESTORE_SH = ROOT / "backup" / "restore.sh"
FIXTURES = ROOT / "Tests" / "fixtures"
PYTHON = str(ROOT / ".venv" / "bin" / "python")

# What a Swift trap, a crash or an unhandled script error looks like on stderr.
CRASH_PATTERNS = re.compile(
    r"Fatal error:|Swift runtime failure|Illegal instruction|Segmentation fault|core dumped|Trace/breakpoint|"
    r"Current stack trace|Stack dump:|\*\*\* Signal|Traceback \(most recent call last\)|unbound variable|"
    r"syntax error near|command not found"
)
SYSEXITS = {0, 1, 3, 64, 66, 69, 74, 75, 77}

# nx-27017 has no authentication, so runs that carry a Mongo password are those whose MongoDB is refused or cut:
# exactly where an error message would echo the connection string.
MONGO_PASSWORD = "M0ngoPass-c81f5d2e9a7b364e"


def mongo_uri_with_password(uri: str) -> str:
    return uri.replace("mongodb://", f"mongodb://kdl-backup:{MONGO_PASSWORD}@", 1)


def parse_env_file(path) -> dict:
    """`export K=V` lines (bash-quoted values) as a dict."""
    env = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):]
        name, sep, value = line.partition("=")
        if sep:
            parts = shlex.split(value)
            env[name] = parts[0] if parts else ""
    return env


# ---------------------------------------------------------------------------------------------- runs


@dataclass
class Run:
    """One finished (or stopped) process run."""

    name: str
    argv: list
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    killed: bool = False
    peak_rss: dict = field(default_factory=dict)  # program name -> peak KiB seen

    def crash(self) -> str | None:
        """A description when the run crashed, trapped or hung; None when it ended by itself."""
        if self.timed_out:
            return f"hung: still running after its bound ({self.seconds:.0f}s)"
        if self.returncode < 0 and not self.killed:
            return f"died of signal {-self.returncode}"
        match = CRASH_PATTERNS.search(self.stderr)
        if match:
            line = next((l for l in self.stderr.splitlines() if match.group(0) in l), match.group(0))
            return f"crash output: {line.strip()[:200]}"
        return None

    def stderr_lines(self) -> list[str]:
        return [l for l in self.stderr.splitlines() if l.strip()]


class Recorder:
    """Keeps every run's argv, environment names, stdout and stderr under DIR for the leak scan."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.counter = itertools.count(1)
        self.lock = threading.Lock()

    def path(self, name: str, suffix: str) -> Path:
        with self.lock:
            n = next(self.counter)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80]
        return self.dir / f"{n:05d}-{safe}.{suffix}"

    def save(self, run: Run) -> None:
        base = self.path(run.name, "run")
        # The argument list is kept too: a secret must never be passed as an argument.
        base.with_suffix(".argv").write_text("\n".join(map(str, run.argv)) + "\n")
        base.with_suffix(".stdout").write_text(run.stdout)
        base.with_suffix(".stderr").write_text(run.stderr)

    def save_bytes(self, name: str, data: bytes) -> Path:
        path = self.path(name, "bin")
        path.write_bytes(data)
        return path


def marked_pids(token: str) -> list[int]:
    """PIDs of live processes whose environment carries KDL_REL_RUN=token."""
    needle = f"KDL_REL_RUN={token}".encode() + b"\0"
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if needle in handle.read() + b"\0":
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def process_rss(pid: int) -> tuple[str, int] | None:
    """(program name, VmRSS KiB) of PID, or None when it is gone or a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    rss = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    if not rss:
        return None
    argv0 = os.path.basename(cmdline[0].decode(errors="replace")) if cmdline and cmdline[0] else "?"
    # Interpreted programs are named by their script (bash backup.sh, python mongodump).
    if argv0 in ("bash", "sh", "python", "python3", "python3.11") and len(cmdline) > 1 and cmdline[1]:
        script = cmdline[1].decode(errors="replace")
        if not script.startswith("-"):
            argv0 = os.path.basename(script)
    return argv0, int(rss.group(1))


class Sampler(threading.Thread):
    """Samples the RSS of every process of a run every INTERVAL seconds; keeps each program's peak."""

    def __init__(self, token: str, interval: float = 0.1):
        super().__init__(daemon=True)
        self.token = token
        self.interval = interval
        self.peaks: dict[str, int] = {}
        self.stop_event = threading.Event()

    def run(self):
        while not self.stop_event.is_set():
            for pid in marked_pids(self.token):
                got = process_rss(pid)
                if got:
                    name, rss = got
                    if rss > self.peaks.get(name, 0):
                        self.peaks[name] = rss
            self.stop_event.wait(self.interval)

    def stop(self) -> dict:
        self.stop_event.set()
        self.join(5)
        return dict(self.peaks)


def kill_marked(token: str, sig=signal.SIGKILL) -> int:
    """Sends SIG to every process of a run (what a container runtime does at the end of the grace period)."""
    count = 0
    for pid in marked_pids(token):
        try:
            os.kill(pid, sig)
            count += 1
        except ProcessLookupError:
            pass
    return count


class Runner:
    """Starts bounded runs, records their output, detects crashes; the kill harness."""

    def __init__(self, recorder: Recorder):
        self.recorder = recorder

    def run(self, name: str, argv: list, env: dict, timeout: float = 120, stdin: bytes | None = None,
            kill_after: float | None = None, grace: float = 3.0, sample: bool = False, cwd=None,
            on_line=None) -> Run:
        """Runs ARGV with ENV (nothing inherited) for at most TIMEOUT seconds.

        kill_after: send SIGTERM to the main process after that many seconds, then SIGKILL to every process
        of the run GRACE seconds later if any is still there (Kubernetes' terminationGracePeriodSeconds).
        on_line: called with each stderr line as it arrives (to strike at a given step of the run).
        """
        token = uuid.uuid4().hex
        env = {k: str(v) for k, v in env.items()}
        env["KDL_REL_RUN"] = token
        sampler = Sampler(token) if sample else None
        started = time.monotonic()
        process = subprocess.Popen(
            [str(a) for a in argv], env=env, cwd=cwd, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )
        if sampler:
            sampler.start()
        out: dict = {}

        def pump(stream, key):
            if key == "stderr" and on_line:
                chunks = []
                for line in iter(stream.readline, b""):
                    chunks.append(line)
                    on_line(line.decode(errors="replace"))
                out[key] = b"".join(chunks)
            else:
                out[key] = stream.read()

        threads = [threading.Thread(target=pump, args=(process.stdout, "stdout"), daemon=True),
                   threading.Thread(target=pump, args=(process.stderr, "stderr"), daemon=True)]
        for t in threads:
            t.start()
        if stdin is not None:
            try:
                process.stdin.write(stdin)
                process.stdin.close()
            except BrokenPipeError:
                pass
        timed_out = killed = False
        if kill_after is not None:
            try:
                process.wait(kill_after)
            except subprocess.TimeoutExpired:
                killed = True
                process.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + grace
                while time.monotonic() < deadline and (process.poll() is None or marked_pids(token)):
                    time.sleep(0.05)
                kill_marked(token)
        try:
            process.wait(max(1.0, timeout - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            timed_out = True
            kill_marked(token)
            process.wait(10)
        # Anything of the run still alive (daemonised, orphaned) is debris of this run: stop it.
        kill_marked(token)
        for t in threads:
            t.join(10)
        peaks = sampler.stop() if sampler else {}
        run = Run(
            name=name, argv=list(argv), returncode=process.returncode,
            stdout=out.get("stdout", b"").decode(errors="replace"), stderr=out.get("stderr", b"").decode(errors="replace"),
            seconds=time.monotonic() - started, timed_out=timed_out, killed=killed, peak_rss=peaks,
        )
        self.recorder.save(run)
        return run


# ---------------------------------------------------------------------------------------------- ids


class BackupIds:
    """Unique, increasing set ids (UTC YYYYMMDDTHHMMSSZ), never in the future by more than a few seconds."""

    def __init__(self):
        self.last = datetime(2000, 1, 1, tzinfo=timezone.utc)
        self.lock = threading.Lock()

    def next(self) -> str:
        with self.lock:
            now = datetime.now(timezone.utc).replace(microsecond=0)
            self.last = max(now, self.last + timedelta(seconds=1))
            return self.last.strftime("%Y%m%dT%H%M%SZ")


def id_time(set_id: str) -> datetime:
    return datetime.strptime(set_id, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)


# ---------------------------------------------------------------------------------------------- proxies


class CutProxy:
    """A TCP proxy on 127.0.0.1 in front of one service; cut() makes the service unavailable: live connections
    are reset and new ones refused with a reset, until restore()."""

    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, int(upstream_port))
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = self.server.getsockname()[1]
        self.is_cut = False
        self.lock = threading.Lock()
        self.live: set[socket.socket] = set()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()
        except OSError:
            pass

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.is_cut:
                self._reset(client)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
                upstream.settimeout(None)
            except OSError:
                self._reset(client)
                continue
            with self.lock:
                self.live.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source, sink):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            try:
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            with self.lock:
                self.live.discard(source)

    def cut(self) -> None:
        with self.lock:
            self.is_cut = True
            live, self.live = list(self.live), set()
        for sock in live:
            self._reset(sock)

    def restore(self) -> None:
        self.is_cut = False

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.server.close()


class FaultProxy:
    """Tests/fixtures/fault_proxy.py (owned by the S3 helpers) in front of S3, with a seed and a rate."""

    def __init__(self, upstream: str, seed: int, rate: float, faults: str, directory: Path, stall_seconds: float = 2,
                 match: str | None = None):
        directory.mkdir(parents=True, exist_ok=True)
        self.port_file = directory / f"fault-proxy-{seed}.port"
        self.log_path = directory / f"fault-proxy-{seed}.log"
        argv = [PYTHON, str(FIXTURES / "fault_proxy.py"), "--listen-port", "0", "--upstream", upstream,
                "--seed", str(seed), "--rate", str(rate), "--faults", faults, "--stall-seconds", str(stall_seconds),
                "--port-file", str(self.port_file)]
        if match:
            argv += ["--match", match]
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not self.port_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fault proxy did not start: {self.log_path.read_text()[-500:]}")
            time.sleep(0.05)
        self.port = int(self.port_file.read_text().strip())
        self.url = f"http://127.0.0.1:{self.port}"

    def injected(self) -> dict:
        """Faults injected so far, by kind (from the proxy's log)."""
        counts: dict[str, int] = {}
        for line in self.log_path.read_text().splitlines():
            m = re.match(r"fault_proxy: (slowdown|500|reset|stall|slow|truncate) ", line)
            if m:
                counts[m.group(1)] = counts.get(m.group(1), 0) + 1
        return counts

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.log.close()


# ---------------------------------------------------------------------------------------------- S3 checks


class Bucket:
    """Direct (boto3) access to the stack's S3, for checking what a run left behind."""

    def __init__(self, stack: dict):
        import boto3
        from botocore.config import Config

        self.name = stack["BACKUP_S3_BUCKET"]
        self.client = boto3.client(
            "s3", endpoint_url=stack["AWS_ENDPOINT_URL_S3"], region_name=stack.get("AWS_REGION", "us-east-1"),
            aws_access_key_id=stack["AWS_ACCESS_KEY_ID"], aws_secret_access_key=stack["AWS_SECRET_ACCESS_KEY"],
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}),
        )

    def keys(self, prefix: str) -> dict[str, int]:
        """key -> size under PREFIX."""
        found = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = item["Size"]
        return found

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=data)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.name, Key=key)

    def multipart_uploads(self, prefix: str) -> list[str]:
        answer = self.client.list_multipart_uploads(Bucket=self.name, Prefix=prefix)
        return [u["Key"] for u in answer.get("Uploads", [])]

    def sets(self, prefix: str) -> dict[str, dict]:
        """id -> {"complete": bool, "keys": {rel: size}} under PREFIX/."""
        sets: dict[str, dict] = {}
        for key, size in self.keys(prefix + "/").items():
            rest = key[len(prefix) + 1:]
            set_id, _, rel = rest.partition("/")
            if not re.fullmatch(r"\d{8}T\d{6}Z", set_id):
                continue
            entry = sets.setdefault(set_id, {"complete": False, "keys": {}})
            entry["keys"][rel] = size
            if rel == "manifest.json":
                entry["complete"] = True
        return sets

    def manifest(self, prefix: str, set_id: str) -> dict:
        return json.loads(self.get(f"{prefix}/{set_id}/manifest.json"))

    def check_set(self, prefix: str, set_id: str) -> list[str]:
        """Data-loss problems of a complete set: each object the manifest lists must exist with its size and sha256."""
        problems = []
        manifest = self.manifest(prefix, set_id)
        for component in manifest.get("components", []):
            for obj in component.get("objects", []) or []:
                key = f"{prefix}/{set_id}/{obj['key']}"
                try:
                    data = self.get(key)
                except Exception as error:  # noqa: BLE001 - any failure to read is the finding
                    problems.append(f"{key}: listed in the manifest but unreadable: {error}")
                    continue
                if len(data) != obj.get("bytes"):
                    problems.append(f"{key}: {len(data)} bytes, manifest says {obj.get('bytes')}")
                if hashlib.sha256(data).hexdigest() != obj.get("sha256"):
                    problems.append(f"{key}: sha256 differs from the manifest")
        return problems


def wait_port(port: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def log_fields(stderr: str) -> list[dict]:
    """The logfmt lines of a run's stderr as dicts (quoted values unescaped)."""
    lines = []
    for line in stderr.splitlines():
        if not line.startswith("ts="):
            continue
        fields = {}
        for m in re.finditer(r'([A-Za-z_][A-Za-z0-9_.-]*)=("(?:[^"\\]|\\.)*"|\S*)', line):
            value = m.group(2)
            if value.startswith('"'):
                value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            fields[m.group(1)] = value
        lines.append(fields)
    return lines


def eprint(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- state


def pg_state(env: dict, database: str | None = None) -> dict:
    """table -> "rows:md5 of the ordered rows" for every user table of the database."""
    sql = r"""
SELECT format('SELECT %L, count(*), coalesce(md5(string_agg(t::text, ''|'' ORDER BY t::text)), '''') FROM %I.%I t',
              table_schema || '.' || table_name, table_schema, table_name)
  FROM information_schema.tables
 WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE' ORDER BY 1 \gexec
"""
    run_env = {k: v for k, v in env.items() if k.startswith("PG")}
    run_env["PATH"] = "/usr/bin:/bin"
    if database:
        run_env["PGDATABASE"] = database
    out = subprocess.run(["psql", "-X", "-q", "-t", "-A", "-F", "\t", "-v", "ON_ERROR_STOP=1"], input=sql, env=run_env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    state = {}
    for line in out.splitlines():
        if line.strip():
            name, rows, digest = line.split("\t")
            state[name] = f"{rows}:{digest}"
    return state


def tree_state(root, exclude=()) -> dict:
    """relative path (bytes, as stored) -> file sha256 / symlink target / 'dir' for everything under ROOT."""
    root = os.fsencode(str(root))
    state = {}
    for top, dirs, files in os.walk(root):
        rel_top = os.path.relpath(top, root)
        rel_top = b"" if rel_top == b"." else rel_top + b"/"
        dirs[:] = [d for d in dirs if (rel_top + d).decode(errors="surrogateescape") not in exclude]
        for name in dirs + files:
            path = os.path.join(top, name)
            rel = rel_top + name
            if os.path.islink(path):
                state[rel] = b"link:" + os.readlink(path)
            elif os.path.isdir(path):
                state[rel] = b"dir"
            else:
                with open(path, "rb") as handle:
                    state[rel] = hashlib.sha256(handle.read()).hexdigest().encode()
    return state


def sqlite_dump(path) -> str:
    return subprocess.run(["sqlite3", str(path), ".dump"], capture_output=True, text=True, timeout=60, check=True).stdout


def mlflow_state(root) -> dict:
    """folder name -> sqlite .dump of its mlflow.db, for every store directly under ROOT."""
    state = {}
    for db in sorted(Path(root).glob("*/mlflow.db")):
        state[db.parent.name] = hashlib.sha256(sqlite_dump(db).encode()).hexdigest()
    return state


def mongo_state(uri: str, databases=("kdl", "admin")) -> dict:
    """"db.collection" -> "count:sha256 of the sorted documents"."""
    import pymongo
    from bson import json_util

    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=10000)
    try:
        state = {}
        for db in databases:
            for name in sorted(client[db].list_collection_names()):
                docs = sorted(json_util.dumps(d, sort_keys=True) for d in client[db][name].find())
                digest = hashlib.sha256("\n".join(docs).encode()).hexdigest()
                state[f"{db}.{name}"] = f"{len(docs)}:{digest}"
        return state
    finally:
        client.close()


def diff_states(name: str, before: dict, after: dict, limit: int = 5) -> list[str]:
    """Human lines for what differs between two state dicts."""
    problems = []
    for key in sorted(set(before) | set(after), key=str)[:100000]:
        if before.get(key) != after.get(key):
            problems.append(f"{name}: {key!r}: {before.get(key)!r} != {after.get(key)!r}")
            if len(problems) >= limit:
                problems.append(f"{name}: ...")
                break
    return problems
