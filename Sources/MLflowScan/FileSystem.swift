import BackupKit
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A file name or path as the kernel has it: bytes, which need not be UTF-8.
/// Shown to people (and in JSON) through `text`, which replaces invalid sequences with U+FFFD.
struct RawPath: Hashable, Comparable, Sendable {
    var bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }
    init(_ text: String) { self.bytes = Array(text.utf8) }

    /// Lossy UTF-8 text for display.
    var text: String { String(decoding: bytes, as: UTF8.self) }

    /// True when `bytes` is well-formed UTF-8, so `text` is exact.
    var isValidUTF8: Bool { String(validating: bytes, as: UTF8.self) != nil }

    /// The last component (the whole path when it has no slash).
    var lastComponent: RawPath {
        var trimmed = bytes[...]
        while trimmed.count > 1, trimmed.last == UInt8(ascii: "/") { trimmed = trimmed.dropLast() }
        if let slash = trimmed.lastIndex(of: UInt8(ascii: "/")), trimmed.count > 1 {
            return RawPath(Array(trimmed[(slash + 1)...]))
        }
        return RawPath(Array(trimmed))
    }

    func appending(_ name: RawPath) -> RawPath {
        var out = bytes
        if out.last != UInt8(ascii: "/") { out.append(UInt8(ascii: "/")) }
        out.append(contentsOf: name.bytes)
        return RawPath(out)
    }

    func appending(_ name: String) -> RawPath { appending(RawPath(name)) }

    /// `self` with `suffix` added to its last component (`mlflow.db` → `mlflow.db-wal`).
    func withSuffix(_ suffix: String) -> RawPath { RawPath(bytes + Array(suffix.utf8)) }

    func withCString<R>(_ body: (UnsafePointer<CChar>) throws -> R) rethrows -> R {
        var terminated = bytes.map { CChar(bitPattern: $0) }
        terminated.append(0)
        return try terminated.withUnsafeBufferPointer { try body($0.baseAddress!) }  // never empty: has the NUL
    }

    static func < (a: RawPath, b: RawPath) -> Bool { a.bytes.lexicographicallyPrecedes(b.bytes) }
}

/// What `lstat`/`stat` say about a path, reduced to what the scan needs.
struct FileInfo: Sendable {
    enum Kind: Sendable { case file, directory, symlink, other }
    var kind: Kind
    var size: Int64
    var device: UInt64
    var inode: UInt64
}

/// An `errno` with its text, for messages.
struct SystemError: Error, CustomStringConvertible, Sendable {
    var code: Int32
    /// A more precise text than strerror's, when the caller has one.
    var text: String?
    var description: String { text ?? String(cString: strerror(code)) }
    static var current: SystemError { SystemError(code: errno) }
}

/// Byte-path wrappers over the POSIX calls the scan uses; they never follow a symlink unless asked.
enum FileSystem {
    static func info(_ path: RawPath, followSymlink: Bool = false) -> Result<FileInfo, SystemError> {
        var st = stat()
        let rc = path.withCString { followSymlink ? stat($0, &st) : lstat($0, &st) }
        guard rc == 0 else { return .failure(.current) }
        let kind: FileInfo.Kind
        switch st.st_mode & S_IFMT {
        case S_IFREG: kind = .file
        case S_IFDIR: kind = .directory
        case S_IFLNK: kind = .symlink
        default: kind = .other
        }
        return .success(FileInfo(kind: kind, size: Int64(st.st_size), device: UInt64(st.st_dev), inode: UInt64(st.st_ino)))
    }

    /// The names in a directory (without `.` and `..`), sorted by bytes.
    static func list(_ path: RawPath) -> Result<[RawPath], SystemError> {
        guard let dir = path.withCString({ opendir($0) }) else { return .failure(.current) }
        defer { closedir(dir) }
        var names: [RawPath] = []
        errno = 0
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw -> [UInt8] in
                let bytes = raw.bindMemory(to: UInt8.self)
                return Array(bytes.prefix { $0 != 0 })
            }
            if name != [UInt8(ascii: ".")] && name != [UInt8(ascii: "."), UInt8(ascii: ".")] {
                names.append(RawPath(name))
            }
            errno = 0
        }
        if errno != 0 { return .failure(.current) }
        return .success(names.sorted())
    }

    /// The canonical absolute path, symlinks resolved.
    static func realPath(_ path: RawPath) -> Result<RawPath, SystemError> {
        guard let resolved = path.withCString({ realpath($0, nil) }) else { return .failure(.current) }
        defer { free(resolved) }
        let length = strlen(resolved)
        return .success(
            RawPath(Array(UnsafeRawBufferPointer(start: resolved, count: length).bindMemory(to: UInt8.self))))
    }

    /// True when `path` (canonical) is `root` (canonical) or below it.
    static func isInside(_ path: RawPath, root: RawPath) -> Bool {
        if path == root { return true }
        let prefix = root.bytes.last == UInt8(ascii: "/") ? root.bytes : root.bytes + [UInt8(ascii: "/")]
        return path.bytes.starts(with: prefix)
    }

    static func makeDirectory(_ path: RawPath) -> Result<Void, SystemError> {
        let rc = path.withCString { mkdir($0, 0o700) }
        if rc == 0 || errno == EEXIST { return .success(()) }
        return .failure(.current)
    }

    static func remove(_ path: RawPath) {
        _ = path.withCString { unlink($0) }
    }

    static func rename(_ from: RawPath, to: RawPath) -> Result<Void, SystemError> {
        let rc = from.withCString { source in to.withCString { posixRename(source, $0) } }
        return rc == 0 ? .success(()) : .failure(.current)
    }

    /// A file we create and write in order; closed when released if `close()` was not called.
    final class Output {
        private var fd: Int32

        fileprivate init(fd: Int32) { self.fd = fd }

        deinit { if fd >= 0 { _ = posixClose(fd) } }

        /// Writes all of `bytes` (retrying short writes and EINTR).
        func write(_ bytes: UnsafeRawBufferPointer) -> Result<Void, SystemError> {
            var done = 0
            while done < bytes.count {
                let count = posixWrite(fd, bytes.baseAddress.map { $0 + done }, bytes.count - done)
                if count < 0 {
                    if errno == EINTR { continue }
                    return .failure(.current)
                }
                done += count
            }
            return .success(())
        }

        /// Closes the file, reporting a failed close (on some file systems the first sign of a failed write).
        func close() -> Result<Void, SystemError> {
            let rc = posixClose(fd)
            fd = -1
            return rc == 0 ? .success(()) : .failure(.current)
        }
    }

    /// Creates `path`, which must not exist, for writing (mode 0644 less the umask, as SQLite creates files).
    static func createExclusive(_ path: RawPath) -> Result<Output, SystemError> {
        let fd = path.withCString { open($0, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644) }
        guard fd >= 0 else { return .failure(.current) }
        return .success(Output(fd: fd))
    }

    /// Streams a file through SHA-256 in 1 MiB reads; returns the digest and the byte count.
    static func sha256(_ path: RawPath) -> Result<(digest: String, bytes: Int64), SystemError> {
        let fd = path.withCString { open($0, O_RDONLY | O_CLOEXEC) }
        guard fd >= 0 else { return .failure(.current) }
        defer { close(fd) }
        var digest = SHA256Digest()
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var total: Int64 = 0
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                return .failure(.current)
            }
            if count == 0 { break }
            buffer.withUnsafeBytes { digest.update(UnsafeRawBufferPointer(rebasing: $0.prefix(count))) }
            total += Int64(count)
        }
        return .success((digest.finalize().hexString, total))
    }
}

private func posixRename(_ from: UnsafePointer<CChar>, _ to: UnsafePointer<CChar>) -> Int32 {
    rename(from, to)
}

private func posixClose(_ fd: Int32) -> Int32 {
    close(fd)
}

private func posixWrite(_ fd: Int32, _ bytes: UnsafeRawPointer?, _ count: Int) -> Int {
    write(fd, bytes, count)
}
