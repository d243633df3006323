import BackupKit
import Foundation
import Testing

@testable import S3

@Suite struct PartSizingTests {
    @Test(arguments: [Int64(5 << 20), Int64(8 << 20), Int64(64 << 20)])
    func tenThousandPartsHoldFiveTebibytes(base: Int64) {
        var total: Int64 = 0
        for number in 1...PartSizing.maximumParts {
            let size = PartSizing.size(ofPart: number, base: base, bytesBefore: total)
            #expect(size >= PartSizing.minimumPart && size <= PartSizing.maximumPart)
            total += size
        }
        #expect(total >= PartSizing.maximumObject)
    }

    @Test func partsDoubleEveryThousand() {
        let base = Int64(8 << 20)
        #expect(PartSizing.size(ofPart: 1, base: base, bytesBefore: 0) == base)
        #expect(PartSizing.size(ofPart: 1000, base: base, bytesBefore: 999 * base) == base)
        #expect(PartSizing.size(ofPart: 1001, base: base, bytesBefore: 1000 * base) == 2 * base)
        #expect(PartSizing.size(ofPart: 2001, base: base, bytesBefore: 3000 * base) == 4 * base)
    }

    @Test func knownLengthsUseOneSizeThatFits() {
        #expect(PartSizing.size(forLength: 100 << 20, base: 8 << 20) == 8 << 20)
        let oneTiB = Int64(1) << 40
        let size = PartSizing.size(forLength: oneTiB, base: 8 << 20)
        #expect(size * Int64(PartSizing.maximumParts) >= oneTiB)
        #expect(size % (1 << 20) == 0)
    }
}

/// A fake S3 that keeps multipart uploads in memory and can fail chosen parts.
final class FakeS3: @unchecked Sendable {
    let lock = NSLock()
    var objects: [String: Data] = [:]
    var parts: [Int: Data] = [:]
    var uploads: Set<String> = []
    var aborted: [String] = []
    var failingPart: Int?
    /// CRC-32 checksums (base64) the parts were sent with, and whether the upload was created with that algorithm.
    var partChecksums: [Int: String] = [:]
    var checksumAlgorithm: String?
    var singleChecksum: String?
    var inFlight = 0
    var maxInFlight = 0
    /// The first CreateMultipartUpload creates "upload-ghost" on the server, then its answer is lost.
    var loseFirstCreateAnswer = false
    /// CompleteMultipartUpload answers `<ETag></ETag>`, as Ceph RGW 16 does; HEAD then tells the ETag.
    var emptyCompleteETag = false
    var heads = 0
    /// Runs after the server has made the upload and before its answer leaves (where a signal can land).
    var beforeCreateAnswer: (() -> Void)?

    lazy var transport = FakeTransport { [unowned self] request, body, sink in try self.answer(request, body, sink) }

    func answer(_ request: HTTPRequest, _ body: Data, _ sink: HTTPBodySink?) throws -> HTTPResponse {
        let items = URLComponents(string: request.url)?.queryItems ?? []
        let value = { (name: String) in items.first { $0.name == name }?.value }
        let key = URLComponents(string: request.url)?.path ?? ""
        let header = { (name: String) in request.headers.first { $0.name.lowercased() == name }?.value }
        switch (request.method, value("uploads"), value("partNumber")) {
        case ("POST", .some, _):
            let lost = lock.withLock {
                guard loseFirstCreateAnswer else { return false }
                loseFirstCreateAnswer = false
                uploads.insert("upload-ghost")
                return true
            }
            if lost {
                throw HTTPTransportError(code: 56, message: "Connection reset by peer", url: request.url, retryable: true)
            }
            lock.withLock {
                _ = uploads.insert("upload-1")
                checksumAlgorithm = header("x-amz-checksum-algorithm")
            }
            beforeCreateAnswer?()
            return HTTPResponse(status: 200, body: Data("<R><UploadId>upload-1</UploadId></R>".utf8))
        case ("PUT", _, .some(let number)):
            let part = Int(number) ?? 0
            lock.withLock {
                inFlight += 1
                maxInFlight = max(maxInFlight, inFlight)
            }
            Thread.sleep(forTimeInterval: 0.002)
            defer { lock.withLock { inFlight -= 1 } }
            if failingPart == part { return HTTPResponse(status: 500, body: errorXML("InternalError", "boom")) }
            let sha = request.headers.first { $0.name == "x-amz-content-sha256" }?.value
            #expect(sha == SHA256Digest.hash(body).hexString)
            let crc = header("x-amz-checksum-crc32")
            if let crc { #expect(crc == body.withUnsafeBytes { CRC32.checksum($0).base64 }) }
            lock.withLock {
                parts[part] = body
                partChecksums[part] = crc
            }
            return HTTPResponse(status: 200, headers: [HTTPHeader("ETag", "\"etag-\(part)\"")])
        case ("POST", _, _) where value("uploadId") != nil:
            let text = String(decoding: body, as: UTF8.self)
            let numbers = XMLText.all("PartNumber", in: text).compactMap(Int.init)
            #expect(numbers == numbers.sorted())
            #expect(XMLText.all("ETag", in: text) == numbers.map { "\"etag-\($0)\"" })
            // S3 requires each part's checksum in the completion when the upload was created with an algorithm.
            #expect(XMLText.all("ChecksumCRC32", in: text) == (checksumAlgorithm == "CRC32" ? numbers.compactMap { partChecksums[$0] } : []))
            lock.withLock {
                objects[key] = numbers.reduce(into: Data()) { $0.append(parts[$1] ?? Data()) }
                uploads.remove("upload-1")
            }
            if emptyCompleteETag { return HTTPResponse(status: 200, body: Data("<R><ETag></ETag></R>".utf8)) }
            return HTTPResponse(status: 200, body: Data("<R><ETag>\"final-\(numbers.count)\"</ETag></R>".utf8))
        case ("HEAD", _, _):
            let size = lock.withLock { () -> Int? in
                heads += 1
                return objects[key]?.count
            }
            guard let size else { return HTTPResponse(status: 404) }
            return HTTPResponse(status: 200, headers: [HTTPHeader("Content-Length", "\(size)"), HTTPHeader("ETag", "\"head-etag\"")])
        case ("GET", .some, _):
            let prefix = value("prefix") ?? ""
            let blocks = lock.withLock { uploads.sorted() }.map { "<Upload><Key>\(prefix)</Key><UploadId>\($0)</UploadId></Upload>" }
            return HTTPResponse(status: 200, body: Data("<R><IsTruncated>false</IsTruncated>\(blocks.joined())</R>".utf8))
        case ("DELETE", _, _):
            lock.withLock {
                aborted.append(value("uploadId") ?? "")
                uploads.remove(value("uploadId") ?? "")
            }
            return HTTPResponse(status: 204)
        case ("PUT", _, _):
            let crc = header("x-amz-checksum-crc32")
            if let crc { #expect(crc == body.withUnsafeBytes { CRC32.checksum($0).base64 }) }
            lock.withLock {
                objects[key] = body
                singleChecksum = crc
            }
            return HTTPResponse(status: 200, headers: [HTTPHeader("ETag", "\"single\"")])
        default:
            return HTTPResponse(status: 400, body: errorXML("NotImplemented", request.method))
        }
    }
}

@Suite struct UploaderTests {
    func uploader(_ s3: FakeS3, partSize: Int64 = 1000, concurrency: Int = 3, environment: [String: String] = [:]) throws -> Uploader {
        var options = PutOptions()
        options.partSize = partSize
        options.concurrency = concurrency
        return Uploader(client: try makeClient(s3.transport, retries: 2, environment: environment), options: options, log: quietLog())
    }

    func random(_ count: Int) -> Data {
        Data((0..<count).map { _ in UInt8.random(in: 0...255) })
    }

    @Test(arguments: [0, 1, 999, 1000])
    func shortStreamsAreOnePut(size: Int) throws {
        let s3 = FakeS3()
        let data = random(size)
        let result = try uploader(s3).upload(from: MemorySource(data, chunk: 333), to: S3Location(bucket: "b", key: "k"))
        #expect(result.parts == 1 && result.size == Int64(size) && result.etag == "single")
        #expect(result.sha256 == SHA256Digest.hash(data).hexString)
        #expect(s3.objects["/b/k"] == data)
        #expect(s3.transport.sent.count == 1)
    }

    @Test(arguments: [false, true])
    func longStreamsAreMultipartAndByteIdentical(knownLength: Bool) throws {
        let s3 = FakeS3()
        let data = random(10_500)
        let result = try uploader(s3).upload(
            from: MemorySource(data, chunk: 256, knownLength: knownLength), to: S3Location(bucket: "b", key: "dir/k"))
        #expect(result.parts == 11)
        #expect(result.size == 10_500)
        #expect(result.etag == "final-11")
        #expect(result.sha256 == SHA256Digest.hash(data).hexString)
        #expect(s3.objects["/b/dir/k"] == data)
        #expect(s3.maxInFlight <= 3)
        #expect(s3.uploads.isEmpty)
        #expect(s3.checksumAlgorithm == "CRC32")
        #expect(s3.partChecksums.count == 11)
    }

    /// Like the AWS SDKs: CRC-32 checksums by default, none with AWS_REQUEST_CHECKSUM_CALCULATION=when_required.
    @Test(arguments: [false, true])
    func checksumsCanBeTurnedOff(multipart: Bool) throws {
        let s3 = FakeS3()
        let data = random(multipart ? 2_500 : 500)
        let off = ["AWS_REQUEST_CHECKSUM_CALCULATION": "when_required"]
        _ = try uploader(s3, environment: off).upload(from: MemorySource(data), to: S3Location(bucket: "b", key: "k"))
        #expect(s3.objects["/b/k"] == data)
        #expect(s3.checksumAlgorithm == nil && s3.partChecksums.isEmpty && s3.singleChecksum == nil)
        #expect(!s3.transport.sent.contains { $0.request.headers.contains { $0.name.hasPrefix("x-amz-checksum") } })
        let on = FakeS3()
        _ = try uploader(on).upload(from: MemorySource(data), to: S3Location(bucket: "b", key: "k"))
        #expect(multipart ? on.partChecksums.count == 3 : on.singleChecksum != nil)
    }

    /// SIGTERM between the server making the upload and its answer arriving: the handler waits for the id and
    /// aborts that upload, rather than finding nothing to abort and leaving its parts stored.
    @Test func aSignalDuringTheCreateAbortsTheUploadItMade() throws {
        let s3 = FakeS3()
        let up = try uploader(s3)
        let handled = DispatchSemaphore(value: 0)
        final class Flag: @unchecked Sendable {
            let lock = NSLock()
            var value = false
        }
        let found = Flag()
        s3.beforeCreateAnswer = {
            Thread.detachNewThread {
                let aborted = up.activeUpload.abortNow(createWait: 10)
                found.lock.withLock { found.value = aborted }
                handled.signal()
            }
            Thread.sleep(forTimeInterval: 0.2)
        }
        _ = try? up.upload(from: MemorySource(random(2_500)), to: S3Location(bucket: "b", key: "k"))
        #expect(handled.wait(timeout: .now() + 10) == .success)
        #expect(found.lock.withLock { found.value })
        #expect(s3.aborted.contains("upload-1"))
    }

    /// Uploaders add parts in whatever order they get to them; the digest is still of the stream in order.
    @Test func partsHashedOnManyThreadsGiveTheStreamsDigest() {
        let parts = (0..<12).map { Data(repeating: UInt8($0), count: 1000 + $0) }
        var head = SHA256Digest()
        head.update(parts[0])
        head.update(parts[1])
        let ordered = OrderedDigest(head, next: 3)
        // One thread per part (as each part has its uploader), started last part first.
        let done = DispatchGroup()
        for number in (1...parts.count).reversed() {
            done.enter()
            Thread.detachNewThread {
                Thread.sleep(forTimeInterval: Double.random(in: 0...0.003))
                parts[number - 1].withUnsafeBytes { ordered.add(number, $0) }
                done.leave()
            }
        }
        #expect(done.wait(timeout: .now() + 30) == .success)
        #expect(ordered.finalize().hexString == SHA256Digest.hash(parts.reduce(Data(), +)).hexString)
    }

    /// Ceph RGW 16 completes a multipart upload with an empty ETag: s3-put asks HEAD instead of printing "".
    @Test func anEmptyCompletionETagIsTakenFromHead() throws {
        let s3 = FakeS3()
        s3.emptyCompleteETag = true
        let data = random(4_200)
        let result = try uploader(s3).upload(from: MemorySource(data, chunk: 100), to: S3Location(bucket: "b", key: "k"))
        #expect(result.etag == "head-etag" && s3.heads == 1 && s3.objects["/b/k"] == data)
        let plain = FakeS3()
        let usual = try uploader(plain).upload(from: MemorySource(data, chunk: 100), to: S3Location(bucket: "b", key: "k"))
        #expect(usual.etag == "final-5" && plain.heads == 0)
    }

    /// One uploader still needs two buffers: the first part and the one that decides on multipart.
    @Test func oneUploaderAtATimeCompletes() throws {
        let s3 = FakeS3()
        let data = random(4_200)
        let result = try uploader(s3, concurrency: 1).upload(from: MemorySource(data, chunk: 100), to: S3Location(bucket: "b", key: "k"))
        #expect(result.parts == 5 && s3.objects["/b/k"] == data && s3.maxInFlight == 1)
    }

    #if os(Linux)
        /// A pipe source is widened to 1 MiB so the producer can run ahead while every buffer is in flight.
        @Test func aPipeSourceIsWidenedToOneMebibyte() throws {
            var ends: [Int32] = [0, 0]
            #expect(pipe(&ends) == 0)
            defer {
                close(ends[0])
                close(ends[1])
            }
            let getPipeSize: Int32 = 1032  // F_GETPIPE_SZ
            #expect(fcntl(ends[1], getPipeSize) < 1 << 20)  // 64 KiB by default
            let source = try FileDescriptorSource(path: "/dev/fd/\(ends[0])")
            #expect(source.length == nil)
            #expect(fcntl(ends[1], getPipeSize) == 1 << 20)
        }
    #endif

    @Test func aPartThatKeepsFailingAbortsTheUpload() throws {
        let s3 = FakeS3()
        s3.failingPart = 4
        let data = random(8_000)
        do {
            _ = try uploader(s3).upload(from: MemorySource(data), to: S3Location(bucket: "b", key: "k"))
            Issue.record("no error")
        } catch let error as S3Error {
            #expect(error.exitCode == ExitStatus.unavailable)
            #expect(error.description.contains("UploadPart s3://b/k: InternalError"))
        }
        #expect(s3.aborted == ["upload-1"])
        #expect(s3.uploads.isEmpty && s3.objects.isEmpty)
        let attemptsOfPart4 = s3.transport.sent.filter { query(of: $0.request).contains("partNumber=4") }.count
        #expect(attemptsOfPart4 == 3)
    }

    @Test func anUploadLeftByARetriedCreateIsAbortedAfterCompletion() throws {
        let s3 = FakeS3()
        s3.loseFirstCreateAnswer = true
        let data = random(5_500)
        let result = try uploader(s3).upload(from: MemorySource(data), to: S3Location(bucket: "b", key: "sets/k"))
        #expect(result.size == 5_500)
        #expect(s3.objects.values.first == data)
        #expect(s3.aborted == ["upload-ghost"])
        #expect(s3.uploads.isEmpty)
    }

    @Test func noListingWhenCreateAnsweredAtOnce() throws {
        let s3 = FakeS3()
        _ = try uploader(s3).upload(from: MemorySource(random(5_500)), to: S3Location(bucket: "b", key: "k"))
        #expect(!s3.transport.sent.contains { $0.request.method == "GET" })
        #expect(s3.aborted.isEmpty)
    }

    @Test func aReadErrorAbortsToo() throws {
        final class Broken: ByteSource {
            var calls = 0
            var length: Int64? { nil }
            func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
                calls += 1
                if calls > 5 { throw S3Error.io("reading stdin: Input/output error") }
                buffer.initializeMemory(as: UInt8.self, repeating: 7)
                return buffer.count
            }
        }
        let s3 = FakeS3()
        #expect(throws: S3Error.io("reading stdin: Input/output error")) {
            _ = try uploader(s3).upload(from: Broken(), to: S3Location(bucket: "b", key: "k"))
        }
        #expect(s3.aborted == ["upload-1"])
    }

    @Test func aKeyIsRequired() throws {
        #expect(throws: S3Error.self) {
            _ = try uploader(FakeS3()).upload(from: MemorySource(Data()), to: S3Location(bucket: "b", key: ""))
        }
    }
}

@Suite struct DownloaderTests {
    @Test func aBrokenDownloadResumesWithARangedGet() throws {
        let data = Data((0..<10_000).map { UInt8($0 % 251) })
        let transport = FakeTransport { request, _, sink in
            let range = request.headers.first { $0.name == "Range" }?.value
            if let range {
                let start = Int(range.dropFirst("bytes=".count).dropLast()) ?? -1
                #expect(start == 4096)
                let rest = data[start...]
                try rest.withUnsafeBytes { try sink?($0) }
                return HTTPResponse(
                    status: 206, headers: [HTTPHeader("Content-Range", "bytes \(start)-9999/10000"), HTTPHeader("ETag", "\"e1\"")])
            }
            try data.prefix(4096).withUnsafeBytes { try sink?($0) }
            throw HTTPTransportError(code: 18, message: "Transferred a partial file", url: request.url, retryable: true)
        }
        let client = try makeClient(transport)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kdl-get-\(UUID().uuidString)").path
        defer { unlink(path) }
        let result = try Downloader(client: client).download(
            S3Location(bucket: "b", key: "k"), to: FileDescriptorSink(path: path), expectedSHA256: SHA256Digest.hash(data).hexString)
        #expect(result.resumes == 1 && result.size == 10_000)
        #expect(FileManager.default.contents(atPath: path) == data)
        #expect(transport.sent.count == 2)
    }

    @Test func aChecksumMismatchRemovesThePartialFile() throws {
        let transport = FakeTransport { _, _, sink in
            try Data("stored".utf8).withUnsafeBytes { try sink?($0) }
            return HTTPResponse(status: 200, headers: [HTTPHeader("Content-Length", "6"), HTTPHeader("ETag", "\"e\"")])
        }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kdl-get-\(UUID().uuidString)").path
        do {
            _ = try Downloader(client: try makeClient(transport)).download(
                S3Location(bucket: "b", key: "k"), to: FileDescriptorSink(path: path), expectedSHA256: String(repeating: "0", count: 64))
            Issue.record("no error")
        } catch let error as S3Error {
            #expect(error.exitCode == ExitStatus.ioError)
            #expect(error.description.contains("sha256 mismatch"))
        }
        #expect(!FileManager.default.fileExists(atPath: path))
    }
}
