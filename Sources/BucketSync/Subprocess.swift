import BackupKit
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Held while a pipe is made close-on-exec and while a child is spawned: a child spawned from another thread
/// between `pipe` and `fcntl` would inherit that pipe's ends (and a reader would never see EOF).
let spawnLock = NSLock()

/// One child process (posix_spawn) whose stdin, stdout and fd 3 are pipe ends of ours. Used for the
/// `zstd | age` stages: a pack costs one spawn, never one per object, and a secret (the index identity)
/// reaches age through fd 3, never through an argument or a file.
final class Subprocess {
    let pid: pid_t
    let name: String

    /// Starts `arguments` (looked up on PATH) with `stdin`, `stdout` and `fd3` (descriptors the child gets;
    /// nil: /dev/null for 0 and 1, nothing for 3) and stderr inherited.
    init(_ arguments: [String], stdin: Int32?, stdout: Int32?, fd3: Int32? = nil) throws {
        name = arguments.first ?? "?"
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let stdin { posix_spawn_file_actions_adddup2(&actions, stdin, 0) } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        if let stdout { posix_spawn_file_actions_adddup2(&actions, stdout, 1) } else {
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        }
        if let fd3 { posix_spawn_file_actions_adddup2(&actions, fd3, 3) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // The child starts with default signal handling (the helper ignores SIGPIPE and traps TERM).
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for number in [SIGPIPE, SIGTERM, SIGINT] { sigaddset(&defaults, number) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF))
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var child: pid_t = 0
        let program = arguments.first ?? "?"
        let status = spawnLock.withLock { posix_spawnp(&child, program, &actions, &attributes, argv, environ) }
        guard status == 0 else {
            throw BucketSyncError.unavailable("cannot start \(name): \(String(cString: strerror(status)))")
        }
        pid = child
    }

    /// Waits for the child; its exit status (128 + N when killed by signal N).
    func wait() -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { return 127 }
        }
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }

    func kill() {
        _ = Glibc.kill(pid, SIGKILL)
    }
}

/// A pipe whose ends close on exec (each child gets only the ends dup2'd to it).
struct Pipe2 {
    var read: Int32
    var write: Int32

    init() throws {
        var fds: [Int32] = [0, 0]
        // pipe2 is not exported to Swift: pipe, then FD_CLOEXEC, with no spawn in between (spawnLock).
        let made = spawnLock.withLock { () -> Bool in
            guard pipe(&fds) == 0 else { return false }
            for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
            return true
        }
        guard made else {
            throw BucketSyncError.io("cannot create a pipe: \(String(cString: strerror(errno)))")
        }
        read = fds[0]
        write = fds[1]
    }
}

/// Writes all of `bytes` to `descriptor` (retrying short writes and EINTR).
func writeAll(_ descriptor: Int32, _ bytes: UnsafeRawBufferPointer, what: String) throws {
    var offset = 0
    while offset < bytes.count {
        let count = Glibc.write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
        if count < 0 {
            if errno == EINTR { continue }
            throw BucketSyncError.io("writing to \(what): \(String(cString: strerror(errno)))")
        }
        offset += count
    }
}
