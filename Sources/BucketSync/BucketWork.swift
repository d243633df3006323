import BackupKit
import Foundation
import S3

/// One bucket of a backup run: the listing streamed in key order beside the previous index; reused entries
/// copied, the rest stored; the index written as it goes, the blob list at the end.
final class BucketWork {
    let backup: BucketBackup
    let bucket: String
    private var index: EncodedUpload?
    private var pack: EncodedUpload?
    private var packKey = ""
    private var blobs: [String: BlobEntry] = [:]
    private var blobOrder: [String] = []
    private let totals = ListingTotals()
    private let counted = DispatchSemaphore(value: 0)
    private var done = (objects: 0, bytes: Int64(0))
    private var lastProgress = Date()
    private var blobSequence = 0
    private var reused = 0

    init(backup: BucketBackup, bucket: String) {
        self.backup = backup
        self.bucket = bucket
    }

    var options: BackupOptions { backup.options }
    var log: Log { backup.log }

    func run(previous: PreviousIndex?) throws {
        try countListing()
        let suffix = options.codec.suffix
        let indexKey = "minio/\(bucket).index.jsonl\(suffix)"
        index = try EncodedUpload(
            client: backup.target, options: options.indexPutOptions, location: backup.location("\(options.setID)/\(indexKey)"),
            command: backup.encoder(forIndex: true))
        try backup.source.list(bucket: bucket, prefix: "") { page in
            var batch: [S3Object] = []
            var batchBytes: Int64 = 0
            func flush() throws {
                try storeSmallBatch(batch)
                batch.removeAll()
                batchBytes = 0
            }
            for object in page {
                if let old = try previous?.entry(for: object.key), old.size == object.size, old.etag == object.etag,
                    old.lastModified == object.lastModified, let blob = previous?.blobs[old.blob]
                {
                    try flush()
                    try reuse(old, blob: blob)
                } else if object.size < options.largeThreshold {
                    if batchBytes + object.size > options.batchBytes || batch.count == options.batchObjects { try flush() }
                    batch.append(object)
                    batchBytes += object.size
                } else {
                    try flush()
                    try store(object)
                }
                done.objects += 1
                done.bytes += object.size
                progress()
            }
            try flush()
        }
        counted.wait()
        progress(force: true)
        if let previous {
            do {
                try previous.finish()
            } catch {
                guard reused == 0 else { throw error }
                log.log(.warn, tool: "bucket-sync", "previous index unreadable: nothing reused", [("bucket", bucket), ("error", "\(error)")])
            }
        }
        try closePack()
        let indexResult = try index!.finish()
        index = nil
        backup.details.bytesUploaded += indexResult.size
        try backup.emit(StoredObject(key: indexKey, bytes: indexResult.size, sha256: indexResult.sha256, format: "minio-index+zstd", encrypted: options.codec.encrypted))
        try writeBlobList()
        log.log(.info, tool: "bucket-sync", "bucket done", [("bucket", bucket), ("objects", "\(done.objects)"), ("bytes", "\(done.bytes)"), ("reused", "\(reused)")])
    }

    /// The totals for progress lines, counted by a second listing on a thread of its own (it costs one request
    /// per 1,000 keys and no wall time); until it ends the lines say what is done so far.
    func countListing() throws {
        let source = backup.source
        let bucket = bucket
        let totals = self.totals
        let thread = Thread { [counted] in
            defer { counted.signal() }
            var objects = 0
            var bytes: Int64 = 0
            do {
                try source.list(bucket: bucket, prefix: "") { page in
                    objects += page.count
                    bytes += page.reduce(0) { $0 + $1.size }
                }
                totals.set(objects: objects, bytes: bytes)
            } catch {}  // the main listing reports the error
        }
        thread.stackSize = 1 << 20
        thread.start()
    }

    func progress(force: Bool = false) {
        guard force || Date().timeIntervalSince(lastProgress) >= options.progressInterval else { return }
        lastProgress = Date()
        let total = totals.get()
        log.log(.info, tool: "bucket-sync", "progress", [
            ("bucket", bucket), ("objects_done", "\(done.objects)"), ("objects_total", total.map { "\($0.objects)" } ?? "counting"),
            ("bytes_done", "\(done.bytes)"), ("bytes_total", total.map { "\($0.bytes)" } ?? "counting"),
        ])
    }

    func reuse(_ entry: IndexEntry, blob: BlobEntry) throws {
        try index!.write(JSONLine.encode(entry))
        note(blob)
        reused += 1
        backup.details.objects += 1
        backup.details.objectsReused += 1
        backup.details.bytes += entry.size
    }

    func note(_ blob: BlobEntry) {
        if blobs[blob.key] == nil { blobOrder.append(blob.key) }
        blobs[blob.key] = blob
    }

    func newBlobKey() -> String {
        blobSequence += 1
        let random = (0..<8).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        return "blobs/\(options.setID)/\(random)-\(blobSequence)\(options.codec.suffix)"
    }

    /// Small objects read at once (their GETs overlap: each costs a round trip, not bandwidth), then packed in
    /// listing order; one that changed since the listing goes the careful way of `store`.
    func storeSmallBatch(_ objects: [S3Object]) throws {
        guard !objects.isEmpty else { return }
        let results = BatchResults(count: objects.count)
        let group = DispatchGroup()
        let source = backup.source
        let bucket = bucket
        let limit = options.largeThreshold
        for (slot, object) in objects.enumerated() {
            DispatchQueue.global().async(group: group) {
                results.set(slot, Result { try source.getSmall(bucket: bucket, key: object.key, etag: object.etag, limit: limit) })
            }
        }
        group.wait()
        for (slot, object) in objects.enumerated() {
            if let (version, bytes) = try results.get(slot) {
                try storeSmall(object.key, version: version, lastModified: object.lastModified, bytes: bytes, changed: false)
            } else {
                try store(object)
            }
        }
    }

    /// A new or changed object, read once (pinned to its listed ETag; a changed one is read again as it now is).
    func store(_ object: S3Object) throws {
        var expected = (etag: object.etag, size: object.size, lastModified: object.lastModified)
        for attempt in 1...4 {
            if expected.size < options.largeThreshold {
                if let (version, bytes) = try backup.source.getSmall(bucket: bucket, key: object.key, etag: expected.etag, limit: options.largeThreshold) {
                    try storeSmall(object.key, version: version, lastModified: expected.lastModified, bytes: bytes, changed: attempt > 1)
                    return
                }
            } else if try storeLarge(object.key, etag: expected.etag, lastModified: expected.lastModified, changed: attempt > 1) {
                return
            }
            // Changed since the listing: read it again as it is now.
            let now = try backup.source.head(bucket: bucket, key: object.key)
            expected = (now.etag, now.size, now.lastModified.flatMap(Self.isoDate) ?? "")
        }
        throw BucketSyncError.unavailable("s3://\(bucket)/\(object.key) kept changing while it was read (4 attempts)")
    }

    static func isoDate(_ http: String) -> String? {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return formatter.date(from: http).map { UTCTime.iso8601($0) }
    }

    func record(_ key: String, _ version: ObjectVersion) throws -> [UInt8] {
        try JSONLine.encode(RecordHeader(key: key, size: version.size, contentType: version.contentType, metadata: version.metadata, etag: version.etag))
    }

    func storeSmall(_ key: String, version: ObjectVersion, lastModified: String, bytes: [UInt8], changed: Bool) throws {
        if pack == nil {
            packKey = newBlobKey()
            pack = try EncodedUpload(
                client: backup.target, options: options.packPutOptions, location: backup.location(packKey), command: backup.encoder(forIndex: false))
        }
        var version = version
        version.size = Int64(bytes.count)
        let sha = SHA256Digest.hash(bytes).hexString
        let header = try record(key, version)
        let trailer = try JSONLine.encode(RecordTrailer(sha256: sha))
        let offset = pack!.plaintextBytes
        try pack!.write(header)
        try pack!.write(bytes)
        try pack!.write(trailer)
        try finishObject(
            IndexEntry(
                key: key, size: version.size, etag: version.etag, lastModified: lastModified, contentType: version.contentType,
                metadata: version.metadata, blob: packKey, offset: offset, length: pack!.plaintextBytes - offset, sha256: sha),
            changed: changed)
        if pack!.plaintextBytes >= options.packSize { try closePack() }
    }

    /// A large object as its own blob, streamed: HEAD for its description, then a GET pinned to that ETag
    /// (false when the object changed in between: the blob is abandoned).
    func storeLarge(_ key: String, etag: String, lastModified: String, changed: Bool) throws -> Bool {
        let version = try backup.source.head(bucket: bucket, key: key)
        guard version.etag == etag else { return false }
        let blobKey = newBlobKey()
        let upload = try EncodedUpload(
            client: backup.target, options: options.blobPutOptions, location: backup.location(blobKey), command: backup.encoder(forIndex: false))
        let digest = RunningDigest()
        var size: Int64 = 0
        do {
            try upload.write(record(key, version))
            let request = S3Request(method: "GET", bucket: bucket, key: key, headers: [HTTPHeader("If-Match", "\"\(etag)\"")])
            do {
                _ = try backup.source.perform("GetObject", request) { piece in
                    digest.update(piece)
                    size += Int64(piece.count)
                    try upload.write(piece)
                }
            } catch S3Error.service(_, _, _, let status, _, _) where status == 412 {
                upload.abort()
                return false
            }
            guard size == version.size else {
                throw BucketSyncError.io("s3://\(bucket)/\(key): read \(size) of \(version.size) bytes")
            }
            let sha = digest.finalize().hexString
            try upload.write(JSONLine.encode(RecordTrailer(sha256: sha)))
            let length = upload.plaintextBytes
            let result = try upload.finish()
            note(BlobEntry(key: blobKey, bytes: result.size, sha256: result.sha256))
            backup.details.bytesUploaded += result.size
            try finishObject(
                IndexEntry(
                    key: key, size: size, etag: version.etag, lastModified: lastModified, contentType: version.contentType,
                    metadata: version.metadata, blob: blobKey, offset: 0, length: length, sha256: sha),
                changed: changed)
            return true
        } catch {
            upload.abort()
            throw error
        }
    }

    func finishObject(_ entry: IndexEntry, changed: Bool) throws {
        try index!.write(JSONLine.encode(entry))
        backup.details.objects += 1
        backup.details.objectsUploaded += 1
        backup.details.bytes += entry.size
        if changed { backup.details.changedDuringBackup += 1 }
    }

    func closePack() throws {
        guard let current = pack else { return }
        pack = nil
        let result = try current.finish()
        note(BlobEntry(key: packKey, bytes: result.size, sha256: result.sha256))
        backup.details.bytesUploaded += result.size
    }

    /// `minio/<bucket>.blobs.jsonl`: every blob the index references (plaintext: keys, sizes, digests).
    func writeBlobList() throws {
        var body: [UInt8] = []
        for key in blobOrder { body += try JSONLine.encode(blobs[key]!) }
        let key = "minio/\(bucket).blobs.jsonl"
        let sha = SHA256Digest.hash(body).hexString
        let location = backup.location("\(options.setID)/\(key)")
        _ = try body.withUnsafeBytes { raw in
            try backup.target.putObject(bucket: location.bucket, key: location.key, data: raw, sha256: sha, headers: [])
        }
        backup.details.bytesUploaded += Int64(body.count)
        try backup.emit(StoredObject(key: key, bytes: Int64(body.count), sha256: sha, format: "minio-blobs", encrypted: false))
    }

    func abandon() {
        pack?.abort()
        pack = nil
        index?.abort()
        index = nil
    }
}

/// The answers of one batch of GETs, filled from several threads.
final class BatchResults: @unchecked Sendable {
    private let lock = NSLock()
    private var results: [Result<(ObjectVersion, [UInt8])?, Error>?]

    init(count: Int) {
        results = Array(repeating: nil, count: count)
    }

    func set(_ slot: Int, _ result: Result<(ObjectVersion, [UInt8])?, Error>) {
        lock.withLock { results[slot] = result }
    }

    func get(_ slot: Int) throws -> (ObjectVersion, [UInt8])? {
        try lock.withLock { results[slot] }!.get()
    }
}

/// A bucket's object count and bytes, filled in by the counting thread.
final class ListingTotals: @unchecked Sendable {
    private let lock = NSLock()
    private var value: (objects: Int, bytes: Int64)?

    func set(objects: Int, bytes: Int64) { lock.withLock { value = (objects, bytes) } }
    func get() -> (objects: Int, bytes: Int64)? { lock.withLock { value } }
}
