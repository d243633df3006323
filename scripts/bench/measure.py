#!/usr/bin/env python3
"""Runs a command and measures it for the benchmarks: wall seconds, exit status, CPU seconds of its process
tree (user + system, from wait4), the peak RSS (VmHWM) of every process in the tree and the bytes under a
folder, both sampled every 0.1 s. Usage: measure.py OUT.json DISK_DIR CMD... (CMD's stderr goes to OUT.json.log).
"""
import json, os, subprocess, sys, time

out, disk, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
def children():
    table = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
                table.setdefault(int(fields[1]), []).append(int(pid))
            except OSError:
                pass
    return table
def tree(root):
    table, found, todo = children(), [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(table.get(pid, []))
    return found
def hwm(pid):
    try:
        name, kib = "?", 0
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("Name:"):
                    name = line.split(None, 1)[1].strip()
                elif line.startswith("VmHWM:"):
                    kib = int(line.split()[1])
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            args = handle.read().split(b"\0")
        if name in ("python3", "python", "bash") and len(args) > 1:
            name = f"{name} {os.path.basename(args[1].decode(errors='replace'))}"
        return name, kib
    except OSError:
        return None, 0
def disk_bytes(path):
    """(all bytes, bytes of MLflow snapshots: files under a folder named snapshot)."""
    total = snapshots = 0
    for base, _, files in os.walk(path):
        for name in files:
            try:
                size = os.lstat(os.path.join(base, name)).st_blocks * 512
            except OSError:
                continue
            total += size
            if "/snapshot/" in base + "/":
                snapshots += size
    return total, snapshots
start = time.monotonic()
process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(out + ".log", "w"))
peak, by_name, peak_disk, peak_snapshots = 0, {}, (0, 0), 0
returncode, cpu = None, 0.0
def reaped():
    """wait4's rusage counts the command and every descendant it waited for: the process tree's CPU."""
    global returncode, cpu
    pid, status, usage = os.wait4(process.pid, os.WNOHANG)
    if pid == 0:
        return False
    returncode, cpu = os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime
    return True
while not reaped():
    for pid in tree(process.pid):
        name, kib = hwm(pid)
        if name:
            by_name[name] = max(by_name.get(name, 0), kib)
    total, snapshots = disk_bytes(disk)
    peak_disk = max(peak_disk, (total, snapshots))
    peak_snapshots = max(peak_snapshots, snapshots)
    time.sleep(0.1)
seconds = time.monotonic() - start
top = max(by_name.items(), key=lambda item: item[1]) if by_name else ("?", 0)
json.dump({"seconds": seconds, "status": returncode, "cpu_seconds": round(cpu, 2), "peak_rss_kib": top[1], "peak_rss_process": top[0],
           "rss_by_process": dict(sorted(by_name.items(), key=lambda item: -item[1])), "peak_disk_bytes": peak_disk[0],
           "peak_disk_snapshot_bytes": peak_disk[1], "peak_snapshot_bytes": peak_snapshots},
          open(out, "w"), indent=1)
