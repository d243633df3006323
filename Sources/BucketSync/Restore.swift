import BackupKit
import Foundation
import S3

public struct RestoreOptions: Sendable {
    /// `s3://BACKUP/PREFIX/ID`: the set.
    public var set: S3Location
    /// nil: every bucket of the set.
    public var buckets: [String]?
    /// The age identity file (an encrypted set).
    public var identityFile: String?
    public var dryRun = false
    /// verify: read nothing into MinIO; without an identity only check the blobs' existence and sizes.
    public var verifyOnly = false
    /// Objects below this are buffered and written 16 at a time; larger ones stream through a multipart upload.
    public var largeThreshold: Int64 = 4 << 20
    /// Two blobs at a time, each uploading one object with 2 × 5 MiB parts in flight: with the runtime's 25 MiB and
    /// a 4 MiB batch each, within 64 MiB (2 × 8 MiB parts measured 65 MiB).
    public var parallelBlobs = 2
    public var putOptions = BackupOptions.putOptions(partMiB: 5, concurrency: 2)

    public init(set: S3Location, buckets: [String]?, identityFile: String?) {
        self.set = set
        self.buckets = buckets
        self.identityFile = identityFile
    }
}

/// One bucket's line of `bucket-sync restore` and `verify`.
public struct BucketReport: Codable, Sendable, Equatable {
    public var bucket: String
    public var objects = 0
    public var bytes: Int64 = 0
    public var blobs = 0
    /// restore: objects in the target the set does not hold (left alone); nil when not looked at.
    public var extraInTarget: Int?
    public var createdBucket: Bool?
    public var action: String
}

/// The `minio` component of one set: the stored index and blob list of each bucket.
struct SetContents {
    struct Bucket {
        var name: String
        var indexKey: String
        var indexSHA256: String
        var encrypted: Bool
        var blobsKey: String
        var blobsSHA256: String
    }

    var buckets: [Bucket]

    static func load(client: S3Client, set: S3Location) throws -> SetContents {
        let body = try client.getData(bucket: set.bucket, key: set.key + "/manifest.json")
        guard let manifest = try? JSONSerialization.jsonObject(with: body) as? [String: Any],
            let components = manifest["components"] as? [[String: Any]]
        else { throw BucketSyncError.integrity("\(set)/manifest.json is not a manifest") }
        guard let minio = components.first(where: { $0["name"] as? String == "minio" }) else {
            throw BucketSyncError.noInput("set \(set) has no minio component")
        }
        var index: [String: (String, String, Bool)] = [:]
        var lists: [String: (String, String)] = [:]
        for object in minio["objects"] as? [[String: Any]] ?? [] {
            guard let key = object["key"] as? String, let sha = object["sha256"] as? String, key.hasPrefix("minio/") else { continue }
            let name = String(key.dropFirst("minio/".count))
            if let range = name.range(of: ".index.jsonl") {
                index[String(name[..<range.lowerBound])] = (key, sha, object["encrypted"] as? Bool ?? false)
            } else if name.hasSuffix(".blobs.jsonl") {
                lists[String(name.dropLast(".blobs.jsonl".count))] = (key, sha)
            }
        }
        let buckets = index.keys.sorted().compactMap { name -> Bucket? in
            guard let entry = index[name], let list = lists[name] else { return nil }
            return Bucket(name: name, indexKey: entry.0, indexSHA256: entry.1, encrypted: entry.2, blobsKey: list.0, blobsSHA256: list.1)
        }
        return SetContents(buckets: buckets)
    }
}

/// Where one object's record sits in a blob.
struct Wanted {
    var offset: Int64
    var length: Int64
    var sha256: [UInt8]
}

/// `bucket-sync restore` and `verify`. Blob workers share only immutable settings and thread-safe clients.
public final class BucketRestore: @unchecked Sendable {
    let store: S3Client
    let target: S3Client?
    let options: RestoreOptions
    let log: Log
    let emit: (BucketReport) throws -> Void

    public init(store: S3Client, target: S3Client?, options: RestoreOptions, log: Log, emit: @escaping (BucketReport) throws -> Void) {
        self.store = store
        self.target = target
        self.options = options
        self.log = log
        self.emit = emit
    }

    var prefixRoot: String {
        let parts = options.set.key.split(separator: "/", omittingEmptySubsequences: false)
        return parts.dropLast().joined(separator: "/").isEmpty ? "" : parts.dropLast().joined(separator: "/") + "/"
    }

    public func run() throws {
        let contents = try SetContents.load(client: store, set: options.set)
        var chosen = contents.buckets
        if let wanted = options.buckets {
            let missing = wanted.filter { name in !chosen.contains { $0.name == name } }
            guard missing.isEmpty else {
                throw BucketSyncError.noInput("set \(options.set) holds no bucket \(missing.joined(separator: ", ")) (it has: \(chosen.map(\.name).joined(separator: " ")))")
            }
            chosen = chosen.filter { wanted.contains($0.name) }
        }
        if chosen.contains(where: \.encrypted), options.identityFile == nil, !(options.verifyOnly) {
            throw BucketSyncError.usage("the set is encrypted: give --identity FILE")
        }
        for bucket in chosen { try run(bucket) }
    }

    func run(_ bucket: SetContents.Bucket) throws {
        let blobs = try BlobEntry.loadList(
            client: store, S3Location(bucket: options.set.bucket, key: options.set.key + "/" + bucket.blobsKey), sha256: bucket.blobsSHA256)
        var report = BucketReport(bucket: bucket.name, action: options.verifyOnly ? "verify" : (options.dryRun ? "plan" : "restore"))
        report.blobs = blobs.count
        for blob in blobs.values {
            let head = try store.headObject(bucket: options.set.bucket, key: prefixRoot + blob.key)
            guard head.size == blob.bytes else {
                throw BucketSyncError.integrity("blob \(prefixRoot + blob.key) holds \(head.size) bytes, the set recorded \(blob.bytes)")
            }
        }
        if options.verifyOnly && bucket.encrypted && options.identityFile == nil {
            try emit(report)
            return
        }
        // The index: which record of which blob each object is (48 bytes per object in memory).
        var wanted: [String: [Wanted]] = [:]
        let index = try DecodedDownload(
            client: store, location: S3Location(bucket: options.set.bucket, key: options.set.key + "/" + bucket.indexKey),
            expectedSHA256: bucket.indexSHA256, decoder: Codec.decoder(encrypted: bucket.encrypted, identityFile: options.identityFile))
        var targetCursor = try (options.verifyOnly ? nil : target.map { try ListingCursor(client: $0, bucket: bucket.name) })
        var extra = 0
        do {
            while let line = try index.reader.readLine() {
                let entry = try JSONLine.decode(IndexEntry.self, line, what: bucket.indexKey)
                guard blobs[entry.blob] != nil else {
                    throw BucketSyncError.integrity("\(bucket.indexKey): \(entry.key) is in blob \(entry.blob), which the blob list lacks")
                }
                wanted[entry.blob, default: []].append(Wanted(offset: entry.offset, length: entry.length, sha256: Self.bytes(hex: entry.sha256)))
                report.objects += 1
                report.bytes += entry.size
                if let cursor = targetCursor { extra += try cursor.countBefore(entry.key) }
            }
            try index.finish()
        } catch {
            index.abandon()
            throw error
        }
        if let cursor = targetCursor {
            extra += try cursor.countRest()
            report.extraInTarget = extra
            report.createdBucket = !cursor.bucketExists
        }
        targetCursor = nil
        if options.dryRun {
            try emit(report)
            return
        }
        if !options.verifyOnly, let target, report.createdBucket == true { try target.createBucket(bucket.name) }
        try restoreBlobs(wanted.sorted { $0.key < $1.key }.map { (blobs[$0.key]!, $0.value.sorted { $0.offset < $1.offset }) }, bucket: bucket)
        try emit(report)
    }

    /// Blobs restored two at a time (one stream's download, decryption and upload overlap the other's); the first
    /// failure stops the others from starting.
    func restoreBlobs(_ work: [(BlobEntry, [Wanted])], bucket: SetContents.Bucket) throws {
        let failures = FailureBox()
        let slots = DispatchSemaphore(value: options.parallelBlobs)
        let group = DispatchGroup()
        for (blob, records) in work {
            slots.wait()
            if failures.first != nil {
                slots.signal()
                break
            }
            DispatchQueue.global().async(group: group) {
                defer { slots.signal() }
                do {
                    try self.restore(blob: blob, records: records, bucket: bucket)
                } catch {
                    failures.record(error)
                }
            }
        }
        group.wait()
        if let error = failures.first { throw error }
    }

    static func bytes(hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var iterator = hex.utf8.makeIterator()
        func nibble(_ c: UInt8) -> UInt8 { c >= 97 ? c - 87 : (c >= 65 ? c - 55 : c - 48) }
        while let high = iterator.next(), let low = iterator.next() { out.append(nibble(high) << 4 | nibble(low)) }
        return out
    }

    /// Streams one blob and writes (or checks) the records the index wants, in offset order.
    func restore(blob: BlobEntry, records: [Wanted], bucket: SetContents.Bucket) throws {
        let location = S3Location(bucket: options.set.bucket, key: prefixRoot + blob.key)
        let stream = try DecodedDownload(
            client: store, location: location, expectedSHA256: blob.sha256,
            decoder: Codec.decoder(encrypted: blob.key.hasSuffix(".age"), identityFile: options.identityFile))
        let batch = PutBatch(client: target, bucket: bucket.name)
        do {
            for record in records {
                let skip = record.offset - stream.reader.consumed
                guard skip >= 0 else { continue }  // the same record twice
                try stream.reader.read(skip) { _ in }
                guard let line = try stream.reader.readLine() else { throw BucketSyncError.integrity("\(location): ends before a record") }
                let header = try JSONLine.decode(RecordHeader.self, line, what: "\(location)")
                try copy(header, from: stream.reader, expected: record.sha256, bucket: bucket.name, location: location, batch: batch)
                _ = try stream.reader.readLine()  // the trailer
            }
            try batch.flush()
            try stream.finish()
        } catch {
            stream.abandon()
            throw error
        }
    }

    func headers(_ header: RecordHeader) -> [HTTPHeader] {
        var headers: [HTTPHeader] = []
        if let type = header.contentType { headers.append(HTTPHeader("Content-Type", type)) }
        for (name, value) in header.metadata.sorted(by: { $0.key < $1.key }) { headers.append(HTTPHeader("x-amz-meta-\(name)", value)) }
        return headers
    }

    func copy(_ header: RecordHeader, from reader: StreamReader, expected: [UInt8], bucket: String, location: S3Location, batch: PutBatch)
        throws
    {
        let mismatch = BucketSyncError.integrity("\(header.key) in \(location): sha256 does not match the index")
        if options.verifyOnly || header.size < options.largeThreshold {
            var bytes: [UInt8] = []
            let digest = RunningDigest()
            try reader.read(header.size) { piece in
                digest.update(piece)
                if !options.verifyOnly { bytes.append(contentsOf: piece) }
            }
            guard digest.finalize() == expected else { throw mismatch }
            guard !options.verifyOnly else { return }
            try batch.add(key: header.key, bytes: bytes, headers: headers(header))
            return
        }
        try batch.flush()
        guard let target else { return }
        var put = options.putOptions
        put.headers = headers(header)
        let source = RecordSource(reader: reader, size: header.size, expected: expected, mismatch: mismatch)
        let uploader = Uploader(client: target, options: put, log: log)
        ActiveUploads.shared.add(uploader)
        defer { ActiveUploads.shared.remove(uploader) }
        _ = try uploader.upload(from: source, to: S3Location(bucket: bucket, key: header.key))
    }
}

/// Exactly one record's bytes from a blob stream, for the uploader; a digest mismatch fails the read at the end,
/// so a damaged object is never completed in the target.
final class RecordSource: ByteSource {
    let reader: StreamReader
    var left: Int64
    let expected: [UInt8]
    let mismatch: BucketSyncError
    var digest: SHA256Digest? = SHA256Digest()
    let length: Int64?

    init(reader: StreamReader, size: Int64, expected: [UInt8], mismatch: BucketSyncError) {
        self.reader = reader
        self.left = size
        self.length = size
        self.expected = expected
        self.mismatch = mismatch
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard left > 0 else {
            if let digest = digest.take(), digest.finalize() != expected { throw mismatch }
            return 0
        }
        let take = min(Int64(buffer.count), left)
        var filled = 0
        try reader.read(take) { piece in
            buffer.baseAddress!.advanced(by: filled).copyMemory(from: piece.baseAddress!, byteCount: piece.count)
            digest?.update(piece)
            filled += piece.count
        }
        left -= take
        return filled
    }
}

/// A target bucket's listing read in step with the index (both in key order): counts the target's objects the
/// set does not hold.
final class ListingCursor {
    let client: S3Client
    let bucket: String
    private(set) var bucketExists = true
    private var page: [S3Object] = []
    private var position = 0
    private var token: String?
    private var finished = false

    init(client: S3Client, bucket: String) throws {
        self.client = client
        self.bucket = bucket
        bucketExists = try client.headBucketExists(bucket)
        finished = !bucketExists
    }

    private func current() throws -> S3Object? {
        while position >= page.count {
            guard !finished else { return nil }
            let next = try client.listPage(bucket: bucket, prefix: "", continuationToken: token)
            page = next.objects
            position = 0
            token = next.next
            finished = token == nil
        }
        return page[position]
    }

    /// Target keys before `key` (not in the set), passing `key` itself.
    func countBefore(_ key: String) throws -> Int {
        var count = 0
        while let object = try current(), !keyPrecedes(key, object.key) {
            if object.key != key { count += 1 }
            position += 1
        }
        return count
    }

    func countRest() throws -> Int {
        var count = 0
        while try current() != nil {
            count += 1
            position += 1
        }
        return count
    }
}

/// Small objects written at once (each PUT costs a round trip): up to 16 objects or 4 MiB, sent together when full,
/// before a large object and at the end of a blob.
final class PutBatch: @unchecked Sendable {
    let client: S3Client?
    let bucket: String
    private var pending: [(key: String, bytes: [UInt8], headers: [HTTPHeader])] = []
    private var bytes = 0

    init(client: S3Client?, bucket: String) {
        self.client = client
        self.bucket = bucket
    }

    func add(key: String, bytes: [UInt8], headers: [HTTPHeader]) throws {
        if pending.count == 16 || self.bytes + bytes.count > 4 << 20 { try flush() }
        pending.append((key, bytes, headers))
        self.bytes += bytes.count
    }

    func flush() throws {
        guard let client, !pending.isEmpty else { return }
        let work = pending
        pending.removeAll()
        bytes = 0
        let failures = FailureBox()
        let group = DispatchGroup()
        let bucket = bucket
        for item in work {
            DispatchQueue.global().async(group: group) {
                do {
                    _ = try item.bytes.withUnsafeBytes { raw in
                        try client.putObject(bucket: bucket, key: item.key, data: raw, sha256: SHA256Digest.hash(raw).hexString, headers: item.headers)
                    }
                } catch {
                    failures.record(error)
                }
            }
        }
        group.wait()
        if let error = failures.first { throw error }
    }
}

/// The first error of several threads.
final class FailureBox: @unchecked Sendable {
    private let lock = NSLock()
    private var error: Error?

    func record(_ error: Error) { lock.withLock { if self.error == nil { self.error = error } } }
    var first: Error? { lock.withLock { error } }
}
