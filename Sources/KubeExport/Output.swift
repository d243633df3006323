import Foundation

/// Where exported bytes go. Buffered: callers write small pieces, the sink writes large blocks.
public protocol ExportSink: AnyObject {
    func write(_ bytes: [UInt8]) throws
    /// Flushes buffered bytes and makes the output final (for a file: fsync and rename into place).
    func finish() throws
}

/// Collects everything in memory; for tests.
public final class MemorySink: ExportSink {
    public private(set) var bytes: [UInt8] = []
    public private(set) var finished = false
    public init() {}
    public func write(_ bytes: [UInt8]) throws { self.bytes.append(contentsOf: bytes) }
    public func finish() throws { finished = true }
    public var text: String { String(decoding: bytes, as: UTF8.self) }
}

/// Writes to a file descriptor (stdout) or atomically to a file: a private temporary file (0600, since the
/// export may hold Secrets) in the target's folder, renamed over the target only when the export finished.
public final class FileOutput: ExportSink {
    private let fd: Int32
    private let displayPath: String
    private let temporaryPath: String?
    private let finalPath: String?
    private var buffer: [UInt8] = []
    private var done = false
    static let blockSize = 1 << 16

    /// Standard output; nothing to rename.
    public static func standardOutput() -> FileOutput {
        FileOutput(fd: STDOUT_FILENO, displayPath: "standard output", temporaryPath: nil, finalPath: nil)
    }

    /// Creates the temporary file next to `path`.
    public static func atomic(path: String) throws -> FileOutput {
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent().path
        var template = Array("\(dir)/.\(url.lastPathComponent).tmp-XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        guard fd >= 0 else {
            throw KubeExportError.output(path: path, reason: String(cString: strerror(errno)))
        }
        fchmod(fd, 0o600)
        return FileOutput(fd: fd, displayPath: path, temporaryPath: cPathString(template), finalPath: path)
    }

    private init(fd: Int32, displayPath: String, temporaryPath: String?, finalPath: String?) {
        self.fd = fd
        self.displayPath = displayPath
        self.temporaryPath = temporaryPath
        self.finalPath = finalPath
    }

    deinit {
        // Not finished: an error stopped the export; leave no partial file behind.
        if !done, let temporaryPath {
            close(fd)
            unlink(temporaryPath)
        }
    }

    public func write(_ bytes: [UInt8]) throws {
        buffer.append(contentsOf: bytes)
        if buffer.count >= Self.blockSize { try flush() }
    }

    private func flush() throws {
        try buffer.withUnsafeBytes { try Self.writeAll(fd: fd, $0, path: displayPath) }
        buffer.removeAll(keepingCapacity: true)
    }

    public func finish() throws {
        try flush()
        guard let temporaryPath, let finalPath else { return }
        guard fsync(fd) == 0 else { throw KubeExportError.output(path: displayPath, reason: String(cString: strerror(errno))) }
        close(fd)
        done = true
        guard rename(temporaryPath, finalPath) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporaryPath)
            throw KubeExportError.output(path: displayPath, reason: reason)
        }
        let dir = open(URL(fileURLWithPath: finalPath).deletingLastPathComponent().path, O_RDONLY)
        if dir >= 0 {
            fsync(dir)
            close(dir)
        }
    }

    static func writeAll(fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws {
        var offset = 0
        while offset < bytes.count {
            let written = Foundation.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                throw KubeExportError.output(path: path, reason: String(cString: strerror(errno)))
            }
            offset += written
        }
    }
}

/// The text of a NUL-terminated path buffer filled in by mkstemp/mkdtemp.
func cPathString(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
