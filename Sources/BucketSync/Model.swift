import BackupKit
import Foundation
import S3

/// One line of `<id>/minio/<bucket>.index.jsonl.zst[.age]`: an object of the bucket and where its bytes are.
public struct IndexEntry: Codable, Sendable, Equatable {
    public var key: String
    public var size: Int64
    public var etag: String
    public var lastModified: String
    public var contentType: String?
    public var metadata: [String: String]
    /// The stored blob (relative to the prefix: `blobs/...`), and the record's offset and length in its plaintext.
    public var blob: String
    public var offset: Int64
    public var length: Int64
    /// SHA-256 of the object's bytes.
    public var sha256: String
}

/// One line of `<id>/minio/<bucket>.blobs.jsonl` (plaintext: blob keys, sizes and digests of stored bytes only):
/// what s3-prune keeps and `restore.sh verify` checks.
public struct BlobEntry: Codable, Sendable, Equatable {
    public var key: String
    public var bytes: Int64
    public var sha256: String
}

extension BlobEntry {
    /// A set's `<bucket>.blobs.jsonl`, checked against the sha256 its manifest recorded: blob key → entry.
    static func loadList(client: S3Client, _ location: S3Location, sha256: String) throws -> [String: BlobEntry] {
        let body = try client.getData(bucket: location.bucket, key: location.key)
        guard SHA256Digest.hash(body).hexString == sha256 else {
            throw BucketSyncError.integrity("\(location): sha256 does not match the manifest")
        }
        var blobs: [String: BlobEntry] = [:]
        for line in body.split(separator: 0x0a) where !line.isEmpty {
            let entry = try JSONLine.decode(BlobEntry.self, line, what: "\(location)")
            blobs[entry.key] = entry
        }
        return blobs
    }
}

/// The header line of a record inside a blob's plaintext: the object's own description, so a blob read alone
/// can be restored. The bytes follow, then a line `{"sha256":"..."}`.
struct RecordHeader: Codable, Equatable {
    var key: String
    var size: Int64
    var contentType: String?
    var metadata: [String: String]
    var etag: String
}

struct RecordTrailer: Codable, Equatable {
    var sha256: String
}

/// What one stored object of the set is, printed for backup.sh's manifest (one JSON line each).
public struct StoredObject: Codable, Sendable, Equatable {
    public var key: String
    public var bytes: Int64
    public var sha256: String
    public var format: String
    public var encrypted: Bool
}

enum JSONLine {
    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        var bytes = [UInt8](try encoder.encode(value))
        bytes.append(0x0a)
        return bytes
    }

    static func decode<T: Decodable>(_ type: T.Type, _ line: some Collection<UInt8>, what: String) throws -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(line))
        } catch {
            throw BucketSyncError.integrity("\(what): a line is not what bucket-sync writes")
        }
    }
}

/// S3's key order (bytes of the UTF-8 form), which ListObjectsV2 returns and the index keeps.
func keyPrecedes(_ a: String, _ b: String) -> Bool {
    a.utf8.lexicographicallyPrecedes(b.utf8)
}

/// Buffered reads of a pipe: lines and exact byte counts, in bounded memory.
final class StreamReader {
    let descriptor: Int32
    let what: String
    private var buffer = [UInt8](repeating: 0, count: 1 << 20)
    private var start = 0
    private var end = 0
    private(set) var consumed: Int64 = 0

    init(descriptor: Int32, what: String) {
        self.descriptor = descriptor
        self.what = what
    }

    private func fill() throws -> Bool {
        if start > 0 {
            buffer.withUnsafeMutableBufferPointer { raw in
                _ = memmove(raw.baseAddress!, raw.baseAddress! + start, end - start)
            }
            end -= start
            start = 0
        }
        if end == buffer.count { buffer += [UInt8](repeating: 0, count: buffer.count) }
        while true {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress! + end, $0.count - end) }
            if count < 0 && errno == EINTR { continue }
            if count < 0 { throw BucketSyncError.io("reading \(what): \(String(cString: strerror(errno)))") }
            end += count
            return count > 0
        }
    }

    /// The next line without its newline; nil at the end. A line longer than 16 MiB is damage.
    func readLine() throws -> [UInt8]? {
        var scanned = 0  // bytes after `start` known to hold no newline (fill may move `start`)
        while true {
            if let newline = buffer[(start + scanned)..<end].firstIndex(of: 0x0a) {
                let line = Array(buffer[start..<newline])
                consumed += Int64(newline + 1 - start)
                start = newline + 1
                return line
            }
            scanned = end - start
            guard scanned < 16 << 20 else { throw BucketSyncError.integrity("\(what): a line longer than 16 MiB") }
            if try !fill() {
                guard start == end else { throw BucketSyncError.integrity("\(what): ends inside a line") }
                return nil
            }
        }
    }

    /// Hands exactly `count` bytes to `body` in pieces; the stream ending first is damage.
    func read(_ count: Int64, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        var left = count
        while left > 0 {
            if start == end, try !fill() { throw BucketSyncError.integrity("\(what): ends inside an object") }
            let take = min(Int64(end - start), left)
            try buffer.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[start..<start + Int(take)])) }
            start += Int(take)
            left -= take
            consumed += take
        }
    }

    /// Reads to the end (so the writer is never cut off by a closed pipe).
    func drain() throws {
        start = 0
        end = 0
        while try fill() { start = end }
    }
}

/// A SHA-256 a closure can update (the digest itself is noncopyable).
final class RunningDigest {
    private var digest: SHA256Digest? = SHA256Digest()

    func update(_ bytes: UnsafeRawBufferPointer) { digest?.update(bytes) }

    /// The digest's bytes; once.
    func finalize() -> [UInt8] { digest.take()?.finalize() ?? [] }
}
