import BackupKit
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// How big each part of a multipart upload is. S3 allows 10,000 parts of 5 MiB to 5 GiB (the last may be smaller),
/// and parts of different sizes: a stream of unknown length starts at the configured size and doubles it every
/// 1,000 parts; the last thousand grow further if needed, so that any stream up to S3's 5 TiB limit fits.
public enum PartSizing {
    public static let minimumPart: Int64 = 5 << 20
    public static let maximumPart: Int64 = 5 << 30
    public static let maximumParts = 10_000
    public static let maximumObject: Int64 = 5 << 40
    public static let partsPerTier = 1_000

    /// The size of part `number` (1-based) of a stream of unknown length, given the bytes in the parts before it.
    public static func size(ofPart number: Int, base: Int64, bytesBefore: Int64) -> Int64 {
        let tier = max(0, min((number - 1) / partsPerTier, 62))
        var size = base
        for _ in 0..<tier where size < maximumPart { size *= 2 }
        let remainingParts = Int64(maximumParts - number + 1)
        if number > maximumParts - partsPerTier, remainingParts > 0 {
            let remainingBytes = max(0, maximumObject - bytesBefore)
            size = max(size, (remainingBytes + remainingParts - 1) / remainingParts)
        }
        return min(max(size, 1), maximumPart)
    }

    /// One size for a source of known length: the configured size, or larger when 10,000 parts would not hold it
    /// (rounded up to a whole MiB).
    public static func size(forLength length: Int64, base: Int64) -> Int64 {
        let needed = (length + Int64(maximumParts) - 1) / Int64(maximumParts)
        guard needed > base else { return base }
        let mib: Int64 = 1 << 20
        return min((needed + mib - 1) / mib * mib, maximumPart)
    }
}

/// Where s3-put reads from: a file descriptor (a file or stdin), read sequentially.
public protocol ByteSource: AnyObject {
    /// Fills as much of `buffer` as one read gives; 0 at the end.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
    /// The total length when known in advance (a regular file).
    var length: Int64? { get }
}

public final class FileDescriptorSource: ByteSource {
    let descriptor: Int32
    let name: String
    let ownsDescriptor: Bool
    public let length: Int64?

    /// Opens `path`, or takes stdin for `-`.
    public init(path: String) throws {
        if path == "-" {
            descriptor = 0
            name = "stdin"
            ownsDescriptor = false
        } else {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                let code = errno
                let message = String(cString: strerror(code))
                switch code {
                case ENOENT, ENOTDIR: throw S3Error.noInput("cannot open \(path): \(message)")
                case EACCES, EPERM: throw S3Error.io("cannot open \(path): \(message)")
                default: throw S3Error.io("cannot open \(path): \(message)")
                }
            }
            descriptor = fd
            name = path
            ownsDescriptor = true
        }
        var info = stat()
        if fstat(descriptor, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG {
            length = Int64(info.st_size)
        } else if fstat(descriptor, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR {
            throw S3Error.io("\(path) is a directory")
        } else {
            length = nil
            Self.widenPipe(descriptor)
        }
    }

    deinit {
        if ownsDescriptor { close(descriptor) }
    }

    /// Asks for a 1 MiB pipe (Linux's unprivileged maximum; the default is 64 KiB) when reading from one, so the
    /// producer (pg_dump, age, ...) runs up to 1 MiB ahead while every part buffer is in flight, in kernel memory
    /// rather than ours; on a busy machine this halved the time uploaders sat idle waiting for the next part.
    /// Failure changes nothing.
    static func widenPipe(_ descriptor: Int32) {
        #if os(Linux)
            var info = stat()
            guard fstat(descriptor, &info) == 0, (info.st_mode & S_IFMT) == S_IFIFO else { return }
            let setPipeSize: Int32 = 1031  // F_SETPIPE_SZ (F_LINUX_SPECIFIC_BASE + 7), not exported to Swift
            _ = fcntl(descriptor, setPipeSize, Int32(1 << 20))
        #endif
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            let count = Glibc.read(descriptor, buffer.baseAddress, buffer.count)
            if count >= 0 { return count }
            if errno == EINTR { continue }
            throw S3Error.io("reading \(name): \(String(cString: strerror(errno)))")
        }
    }
}

/// Options of one upload.
public struct PutOptions: Sendable {
    public var partSize: Int64 = 8 << 20
    public var concurrency = 4
    /// Sent with PutObject / CreateMultipartUpload: SSE, storage class, content type.
    public var headers: [HTTPHeader] = []
    /// Progress lines on stderr every `progressInterval` seconds.
    public var progress = false
    public var progressInterval: Double = 5

    public init() {}
}

/// What s3-put prints: one JSON line.
public struct PutResult: Codable, Sendable, Equatable {
    public var bucket: String
    public var key: String
    public var size: Int64
    public var sha256: String
    public var etag: String
    public var parts: Int
    public var seconds: Double
}

/// One part buffer: a raw allocation that is never copied (a `Data` shared between the reader and an
/// uploader would be copied on write, and glibc would keep the freed copies).
final class PartBuffer: @unchecked Sendable {
    private(set) var bytes: UnsafeMutableRawBufferPointer

    init() {
        bytes = UnsafeMutableRawBufferPointer(start: nil, count: 0)
    }

    /// Makes room for `size` bytes (contents are not kept).
    func reserve(_ size: Int) {
        guard bytes.count < size else { return }
        bytes.deallocate()
        bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
    }

    func prefix(_ length: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[0..<length])
    }

    deinit {
        bytes.deallocate()
    }
}

/// A fixed set of part buffers shared by the reader and the uploaders: the reader fills one only when one is
/// free, so memory stays at max(concurrency, 2) × part size however long the stream is (two: the first
/// decision, one PUT or multipart, needs the second part read).
final class BufferPool: @unchecked Sendable {
    private let condition = NSCondition()
    private var free: [PartBuffer]

    init(count: Int) {
        free = (0..<count).map { _ in PartBuffer() }
    }

    /// Waits for a free buffer and makes sure it holds at least `size` bytes.
    func acquire(size: Int) -> PartBuffer {
        condition.lock()
        while free.isEmpty { condition.wait() }
        let buffer = free.removeLast()
        condition.unlock()
        buffer.reserve(size)
        return buffer
    }

    func release(_ buffer: PartBuffer) {
        condition.lock()
        free.append(buffer)
        condition.signal()
        condition.unlock()
    }
}

/// The parts waiting for an uploader, and what the uploaders report back.
final class PartQueue: @unchecked Sendable {
    struct Part {
        var number: Int
        var buffer: PartBuffer
        var length: Int
    }

    private let condition = NSCondition()
    private var pending: [Part] = []
    private var closed = false
    private(set) var failure: Error?
    private(set) var completed: [Int: CompletedPart] = [:]
    private(set) var uploadedBytes: Int64 = 0

    func push(_ part: Part) {
        condition.lock()
        pending.append(part)
        condition.signal()
        condition.unlock()
    }

    func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }

    /// The next part, or nil once closed and drained.
    func pop() -> Part? {
        condition.lock()
        defer { condition.unlock() }
        while pending.isEmpty && !closed { condition.wait() }
        return pending.isEmpty ? nil : pending.removeFirst()
    }

    func finished(_ part: CompletedPart, bytes: Int) {
        condition.lock()
        completed[part.number] = part
        uploadedBytes += Int64(bytes)
        condition.unlock()
    }

    func fail(_ error: Error) {
        condition.lock()
        if failure == nil { failure = error }
        condition.unlock()
    }

    var hasFailed: Bool {
        condition.lock()
        defer { condition.unlock() }
        return failure != nil
    }

    var progress: (bytes: Int64, parts: Int) {
        condition.lock()
        defer { condition.unlock() }
        return (uploadedBytes, completed.count)
    }
}

/// The SHA-256 of a stream whose parts are hashed by several threads: each part waits for the one before it.
/// Parts are handed out in order and each is added right after it is taken, so the wait is one part's hashing.
final class OrderedDigest: @unchecked Sendable {
    private let condition = NSCondition()
    private var digest: SHA256Digest
    private var next: Int

    /// Continues `digest` (which holds the parts before `next`).
    init(_ digest: consuming SHA256Digest, next: Int) {
        self.digest = digest
        self.next = next
    }

    /// Adds part `number`; parts before the starting one are already in the digest and are ignored.
    func add(_ number: Int, _ bytes: UnsafeRawBufferPointer) {
        condition.lock()
        defer { condition.unlock() }
        guard number >= next else { return }
        while next != number { condition.wait() }
        digest.update(bytes)
        next += 1
        condition.broadcast()
    }

    /// The digest of every part added; call once, after the last part.
    func finalize() -> [UInt8] {
        condition.withLock {
            var finished = SHA256Digest()
            swap(&finished, &digest)
            return finished.finalize()
        }
    }
}

/// Streams a source to one S3 object: a single PUT below the part size, multipart above, with bounded memory.
public final class Uploader: @unchecked Sendable {
    let client: S3Client
    let options: PutOptions
    let log: Log
    /// The multipart upload in progress, so a signal handler can abort it.
    public let activeUpload = ActiveUpload()

    public init(client: S3Client, options: PutOptions, log: Log = .standardError) {
        self.client = client
        self.options = options
        self.log = log
    }

    public func upload(from source: ByteSource, to location: S3Location) throws -> PutResult {
        guard !location.key.isEmpty, !location.key.hasSuffix("/") else {
            throw S3Error.usage("the destination needs an object key: \(location)")
        }
        let started = Date()
        let fixedSize = source.length.map { PartSizing.size(forLength: $0, base: options.partSize) }
        if let length = source.length, length > PartSizing.maximumObject {
            throw S3Error.usage("\(length) bytes is more than S3's 5 TiB object limit")
        }
        func partSize(_ number: Int, _ before: Int64) -> Int {
            Int(fixedSize ?? PartSizing.size(ofPart: number, base: options.partSize, bytesBefore: before))
        }

        var digest = SHA256Digest()
        let pool = BufferPool(count: max(2, options.concurrency))
        let checksums = client.configuration.requestChecksums

        // The first part decides: a short stream is one PutObject.
        let first = pool.acquire(size: partSize(1, 0))
        let firstLength = try fill(first, count: partSize(1, 0), from: source)
        digest.update(first.prefix(firstLength))
        var second = PartBuffer()
        var secondLength = 0
        if firstLength == partSize(1, 0) && source.length.map({ $0 > Int64(firstLength) }) ?? true {
            second = pool.acquire(size: partSize(2, Int64(firstLength)))
            secondLength = try fill(second, count: partSize(2, Int64(firstLength)), from: source)
            digest.update(second.prefix(secondLength))
        }
        if secondLength == 0 {
            let body = first.prefix(firstLength)
            let sha = digest.finalize().hexString
            var headers = options.headers
            if checksums { headers += S3Client.checksumHeaders(crc32: CRC32.checksum(body).base64) }
            let etag = try client.putObject(bucket: location.bucket, key: location.key, data: body, sha256: sha, headers: headers)
            return PutResult(
                bucket: location.bucket, key: location.key, size: Int64(firstLength), sha256: sha, etag: etag, parts: 1,
                seconds: Self.elapsed(since: started))
        }

        var createHeaders = options.headers
        if checksums { createHeaders.append(HTTPHeader("x-amz-checksum-algorithm", "CRC32")) }
        // The server registers the upload before its answer arrives: a signal in between must wait for the id.
        activeUpload.creating()
        let created: S3Client.CreatedUpload
        do {
            created = try client.createMultipartUpload(bucket: location.bucket, key: location.key, headers: createHeaders)
        } catch {
            activeUpload.clear()
            throw error
        }
        let uploadID = created.id
        // A retried CreateMultipartUpload may have left an upload whose answer was lost: abort it at the end.
        defer { if created.mayHaveStrays { abortStrays(location: location, keeping: uploadID) } }
        activeUpload.set(client: client, location: location, uploadID: uploadID)
        let queue = PartQueue()
        // Parts from the third on are hashed into the stream's SHA-256 by the uploaders, in order, so the reader
        // only reads: it is on the critical path whenever every buffer is in flight.
        let streamDigest = OrderedDigest(digest, next: 3)
        let done = DispatchGroup()
        for _ in 0..<max(1, options.concurrency) {
            done.enter()
            Thread.detachNewThread { [client] in
                defer { done.leave() }
                while let part = queue.pop() {
                    defer { pool.release(part.buffer) }
                    // Before anything that may fail or skip: the next part's uploader waits for this one.
                    streamDigest.add(part.number, part.buffer.prefix(part.length))
                    if queue.hasFailed { continue }
                    do {
                        let body = part.buffer.prefix(part.length)
                        var partDigest = SHA256Digest()
                        partDigest.update(body)
                        let sha = partDigest.finalize().hexString
                        let crc = checksums ? CRC32.checksum(body).base64 : nil
                        let etag = try client.uploadPart(
                            bucket: location.bucket, key: location.key, uploadID: uploadID, number: part.number, data: body,
                            sha256: sha, checksumCRC32: crc)
                        queue.finished(CompletedPart(number: part.number, etag: etag, checksumCRC32: crc), bytes: part.length)
                    } catch {
                        queue.fail(error)
                    }
                }
            }
        }

        var total = Int64(firstLength + secondLength)
        var number = 2
        queue.push(.init(number: 1, buffer: first, length: firstLength))
        queue.push(.init(number: 2, buffer: second, length: secondLength))
        var lastLength = secondLength
        var lastSize = partSize(2, Int64(firstLength))
        var readError: Error?
        var lastReport = Date()
        while lastLength == lastSize && !queue.hasFailed {
            number += 1
            if number > PartSizing.maximumParts {
                readError = S3Error.usage("the stream is longer than S3's 10,000 parts allow (5 TiB)")
                break
            }
            let size = partSize(number, total)
            let buffer = pool.acquire(size: size)
            do {
                lastLength = try fill(buffer, count: size, from: source)
            } catch {
                pool.release(buffer)
                readError = error
                break
            }
            lastSize = size
            if lastLength == 0 {
                pool.release(buffer)
                number -= 1
                break
            }
            total += Int64(lastLength)
            queue.push(.init(number: number, buffer: buffer, length: lastLength))
            if options.progress, Date().timeIntervalSince(lastReport) >= options.progressInterval {
                lastReport = Date()
                let progress = queue.progress
                log.log(
                    .info, tool: "s3-put", "progress",
                    [("key", location.key), ("read_bytes", "\(total)"), ("uploaded_bytes", "\(progress.bytes)"), ("parts", "\(progress.parts)")])
            }
        }
        if let readError { queue.fail(readError) }
        queue.close()
        done.wait()

        if let failure = queue.failure {
            abort(location: location, uploadID: uploadID)
            throw failure
        }
        let parts = Array(queue.completed.values)
        var etag: String
        do {
            etag = try client.completeMultipartUpload(bucket: location.bucket, key: location.key, uploadID: uploadID, parts: parts)
        } catch {
            abort(location: location, uploadID: uploadID)
            throw error
        }
        activeUpload.clear()
        if etag.isEmpty { etag = headETag(location) }
        return PutResult(
            bucket: location.bucket, key: location.key, size: total, sha256: streamDigest.finalize().hexString, etag: etag,
            parts: parts.count, seconds: Self.elapsed(since: started))
    }

    /// The stored object's ETag from HEAD, for stores that complete a multipart upload with an empty one (Ceph RGW
    /// 16). The object is stored by then: a failed HEAD is logged and leaves the ETag empty, it fails nothing.
    func headETag(_ location: S3Location) -> String {
        do {
            return try client.headObject(bucket: location.bucket, key: location.key).etag
        } catch {
            log.log(
                .warn, tool: "s3-put", "the store gave no ETag and HEAD failed; the object is stored",
                [("bucket", location.bucket), ("key", location.key), ("error", "\(error)")])
            return ""
        }
    }

    /// Aborts the multipart upload so no parts stay stored (and billed); a failed abort is logged with its upload id.
    func abort(location: S3Location, uploadID: String) {
        do {
            try client.abortMultipartUpload(bucket: location.bucket, key: location.key, uploadID: uploadID)
            activeUpload.clear()
        } catch {
            log.log(
                .error, tool: "s3-put", "could not abort the multipart upload; its parts stay stored until aborted",
                [("bucket", location.bucket), ("key", location.key), ("upload_id", uploadID), ("error", "\(error)")])
        }
    }

    /// Aborts the uploads in progress for this key other than ours: each was created by one of our own
    /// CreateMultipartUpload attempts whose answer was lost (keys of a backup set are written by one s3-put).
    func abortStrays(location: S3Location, keeping uploadID: String) {
        do {
            for stray in try client.multipartUploads(bucket: location.bucket, key: location.key) where stray != uploadID {
                try client.abortMultipartUpload(bucket: location.bucket, key: location.key, uploadID: stray)
                log.log(.info, tool: "s3-put", "aborted a multipart upload left by a retried create",
                        [("bucket", location.bucket), ("key", location.key), ("upload_id", stray)])
            }
        } catch {
            log.log(
                .warn, tool: "s3-put", "could not look for multipart uploads left by a retried create",
                [("bucket", location.bucket), ("key", location.key), ("error", "\(error)")])
        }
    }

    /// Reads until `count` bytes or the end of the source.
    func fill(_ buffer: PartBuffer, count: Int, from source: ByteSource) throws -> Int {
        var filled = 0
        let raw = buffer.bytes
        while filled < count {
            let read = try source.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[filled..<count]))
            if read == 0 { break }
            filled += read
        }
        return filled
    }

    static func elapsed(since start: Date) -> Double {
        (Date().timeIntervalSince(start) * 1000).rounded() / 1000
    }
}

/// The multipart upload a signal handler must abort before the process exits.
public final class ActiveUpload: @unchecked Sendable {
    private let condition = NSCondition()
    private var current: (client: S3Client, location: S3Location, uploadID: String)?
    private var isCreating = false

    /// A CreateMultipartUpload is in flight: `abortNow` waits for its answer.
    func creating() {
        condition.withLock { isCreating = true }
    }

    func set(client: S3Client, location: S3Location, uploadID: String) {
        condition.withLock {
            current = (client, location, uploadID)
            isCreating = false
            condition.broadcast()
        }
    }

    func clear() {
        condition.withLock {
            current = nil
            isCreating = false
            condition.broadcast()
        }
    }

    /// One abort attempt (used on SIGTERM/SIGINT); returns whether there was an upload to abort. While a create is
    /// in flight it waits up to `createWait` seconds for the upload id, so the upload the server just made is aborted.
    @discardableResult
    public func abortNow(createWait: TimeInterval = 15) -> Bool {
        let deadline = Date().addingTimeInterval(createWait)
        let taken: (client: S3Client, location: S3Location, uploadID: String)? = condition.withLock {
            while isCreating && condition.wait(until: deadline) {}
            defer { current = nil }
            return current
        }
        guard let upload = taken else { return false }
        let request = S3Request(
            method: "DELETE", bucket: upload.location.bucket, key: upload.location.key, query: [("uploadId", upload.uploadID)])
        _ = try? upload.client.perform("AbortMultipartUpload", request)
        return true
    }
}
