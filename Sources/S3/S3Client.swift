import BackupKit
import Foundation

/// One S3 request before signing. `key` nil addresses the bucket.
public struct S3Request: Sendable {
    public var method: String
    public var bucket: String
    public var key: String?
    public var query: [(String, String)]
    public var headers: [HTTPHeader]
    public var body: HTTPBody
    /// Hex SHA-256 of the body (or `UNSIGNED-PAYLOAD`).
    public var payloadHash: String

    public init(
        method: String, bucket: String, key: String? = nil, query: [(String, String)] = [], headers: [HTTPHeader] = [],
        body: HTTPBody = .none, payloadHash: String = SigV4Signer.emptyPayloadHash
    ) {
        self.method = method
        self.bucket = bucket
        self.key = key
        self.query = query
        self.headers = headers
        self.body = body
        self.payloadHash = payloadHash
    }
}

/// One object of a listing.
public struct S3Object: Sendable, Equatable, Codable {
    public var key: String
    public var size: Int64
    public var lastModified: String
    public var etag: String

    public init(key: String, size: Int64, lastModified: String, etag: String) {
        self.key = key
        self.size = size
        self.lastModified = lastModified
        self.etag = etag
    }
}

/// One uploaded part as CompleteMultipartUpload lists it.
public struct CompletedPart: Sendable, Equatable {
    public var number: Int
    public var etag: String
    /// The part's base64 CRC-32, when the upload was created with `x-amz-checksum-algorithm: CRC32`.
    public var checksumCRC32: String?

    public init(number: Int, etag: String, checksumCRC32: String? = nil) {
        self.number = number
        self.etag = etag
        self.checksumCRC32 = checksumCRC32
    }
}

/// Signs and sends S3 requests over an `HTTPTransport`, retrying what may succeed on another attempt.
public final class S3Client: Sendable {
    public let configuration: S3Configuration
    public let retry: RetryPolicy
    let transport: HTTPTransport
    let credentials: CredentialProvider
    let sleeper: Sleeper
    let clock: @Sendable () -> Date
    let log: Log
    let tool: String

    public init(
        configuration: S3Configuration, transport: HTTPTransport, retry: RetryPolicy = RetryPolicy(retries: 5),
        sleeper: Sleeper = ThreadSleeper(), clock: @escaping @Sendable () -> Date = { Date() }, log: Log = .standardError,
        tool: String = "s3"
    ) {
        self.configuration = configuration
        self.transport = transport
        self.retry = retry
        self.sleeper = sleeper
        self.clock = clock
        self.log = log
        self.tool = tool
        self.credentials = CredentialProvider(source: configuration.credentials, transport: transport, log: log, clock: clock)
    }

    /// Signs and sends once; a non-2xx status becomes `S3Error.service` with S3's code and message.
    public func perform(_ operation: String, _ request: S3Request, sink: HTTPBodySink? = nil) throws -> HTTPResponse {
        let keys = try credentials.current()
        let target = configuration.url(bucket: request.bucket, key: request.key, query: request.query)
        var headers = request.headers
        headers.append(HTTPHeader("host", target.host))
        headers.append(HTTPHeader("x-amz-content-sha256", request.payloadHash))
        let signer = SigV4Signer(region: configuration.region)
        let signed = signer.sign(
            method: request.method, path: target.path, query: request.query, headers: headers,
            payloadHash: request.payloadHash, credentials: keys, date: clock())
        // curl writes its own Host line from the URL; sending ours too would duplicate it.
        let sent = signed.filter { $0.name != "host" }
        let response: HTTPResponse
        do {
            response = try transport.send(HTTPRequest(method: request.method, url: target.url, headers: sent, body: request.body), sink: sink)
        } catch let error as HTTPTransportError {
            throw S3Error.transport(
                operation: operation, bucket: request.bucket, key: request.key, message: error.message, retryable: error.retryable)
        }
        guard (200..<300).contains(response.status) else {
            throw Self.serviceError(operation, request, response)
        }
        return response
    }

    /// `perform` with retries (backoff and jitter) for requests whose body can be sent again.
    public func send(_ operation: String, _ request: S3Request, sink: HTTPBodySink? = nil) throws -> HTTPResponse {
        try retrying(operation, bucket: request.bucket, key: request.key) { _ in
            try perform(operation, request, sink: sink)
        }
    }

    /// Runs `body` under the retry policy, logging each retry (never a credential).
    public func retrying<T>(_ operation: String, bucket: String, key: String?, _ body: (Int) throws -> T) throws -> T {
        try retry.run(
            sleeper: sleeper, isRetryable: { ($0 as? S3Error)?.isRetryable ?? false },
            onRetry: { attempt, error in
                self.log.log(
                    .warn, tool: self.tool, "retrying",
                    [("operation", operation), ("bucket", bucket), ("key", key ?? ""), ("attempt", "\(attempt)"), ("error", "\(error)")])
            }, body)
    }

    static func serviceError(_ operation: String, _ request: S3Request, _ response: HTTPResponse) -> S3Error {
        let body = String(decoding: response.body, as: UTF8.self)
        var code = XMLText.first("Code", in: body) ?? ""
        let message = XMLText.first("Message", in: body) ?? ""
        if code.isEmpty {
            // HEAD answers and some proxies carry no body: name the status as S3 would.
            switch response.status {
            case 403: code = "AccessDenied"
            case 404: code = request.key == nil ? "NoSuchBucket" : "NoSuchKey"
            case 429: code = "SlowDown"
            case 503: code = "ServiceUnavailable"
            case 500..<600: code = "InternalError"
            default: code = "HTTP\(response.status)"
            }
        }
        return .service(
            operation: operation, bucket: request.bucket, key: request.key, status: response.status, code: code, message: message)
    }

    // MARK: - Operations

    static func stripQuotes(_ etag: String?) -> String {
        guard let etag else { return "" }
        return etag.trimmingCharacters(in: CharacterSet(charactersIn: "\""))
    }

    /// A body read straight from memory the caller keeps alive and unchanged; each attempt reads it from the start.
    static func body(_ bytes: UnsafeRawBufferPointer) -> HTTPBody {
        final class Cursor: @unchecked Sendable {
            var offset = 0
        }
        let cursor = Cursor()
        nonisolated(unsafe) let source = bytes
        return .stream(length: Int64(bytes.count)) { target in
            let count = min(target.count, source.count - cursor.offset)
            guard count > 0 else { return 0 }
            target.baseAddress!.copyMemory(from: source.baseAddress! + cursor.offset, byteCount: count)
            cursor.offset += count
            return count
        }
    }

    /// PutObject of bytes in memory; returns the ETag.
    public func putObject(bucket: String, key: String, data: UnsafeRawBufferPointer, sha256: String, headers: [HTTPHeader]) throws -> String {
        try retrying("PutObject", bucket: bucket, key: key) { _ in
            let request = S3Request(method: "PUT", bucket: bucket, key: key, headers: headers, body: Self.body(data), payloadHash: sha256)
            return Self.stripQuotes(try perform("PutObject", request).header("ETag"))
        }
    }

    /// A new multipart upload's id, and whether an earlier attempt failed after it may have reached S3
    /// (its answer lost): such an attempt can have created an upload nobody knows the id of.
    public struct CreatedUpload: Sendable {
        public var id: String
        public var mayHaveStrays: Bool
    }

    public func createMultipartUpload(bucket: String, key: String, headers: [HTTPHeader]) throws -> CreatedUpload {
        let request = S3Request(method: "POST", bucket: bucket, key: key, query: [("uploads", "")], headers: headers)
        var attempts = 0
        let response = try retrying("CreateMultipartUpload", bucket: bucket, key: key) { attempt in
            attempts = attempt + 1
            return try perform("CreateMultipartUpload", request)
        }
        guard let id = XMLText.first("UploadId", in: String(decoding: response.body, as: UTF8.self)), !id.isEmpty else {
            throw S3Error.service(
                operation: "CreateMultipartUpload", bucket: bucket, key: key, status: response.status, code: "MalformedResponse",
                message: "no UploadId in the answer")
        }
        return CreatedUpload(id: id, mayHaveStrays: attempts > 1)
    }

    /// The ids of the multipart uploads in progress for exactly `key` (ListMultipartUploads, all pages).
    public func multipartUploads(bucket: String, key: String) throws -> [String] {
        var ids: [String] = []
        var markers: (key: String, id: String)?
        repeat {
            var query = [("uploads", ""), ("prefix", key), ("encoding-type", "url")]
            if let markers { query += [("key-marker", markers.key), ("upload-id-marker", markers.id)] }
            let response = try send("ListMultipartUploads", S3Request(method: "GET", bucket: bucket, query: query))
            let xml = String(decoding: response.body, as: UTF8.self)
            let urlEncoded = XMLText.first("EncodingType", in: xml) == "url"
            for block in XMLText.blocks("Upload", in: xml) {
                let rawKey = XMLText.first("Key", in: block) ?? ""
                let found = urlEncoded ? (rawKey.replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? rawKey) : rawKey
                if found == key, let id = XMLText.first("UploadId", in: block) { ids.append(id) }
            }
            let truncated = XMLText.first("IsTruncated", in: xml) == "true"
            let nextKey = XMLText.first("NextKeyMarker", in: xml) ?? ""
            let nextID = XMLText.first("NextUploadIdMarker", in: xml) ?? ""
            markers = truncated && !(nextKey.isEmpty && nextID.isEmpty) ? (nextKey, nextID) : nil
        } while markers != nil
        return ids
    }

    /// What PutObject and UploadPart carry for S3 to verify and keep a CRC-32, as the AWS SDKs send it.
    static func checksumHeaders(crc32: String) -> [HTTPHeader] {
        [HTTPHeader("x-amz-checksum-crc32", crc32), HTTPHeader("x-amz-sdk-checksum-algorithm", "CRC32")]
    }

    /// UploadPart; `checksumCRC32` (base64) is sent for S3 to verify and keep when the upload was created with it.
    public func uploadPart(
        bucket: String, key: String, uploadID: String, number: Int, data: UnsafeRawBufferPointer, sha256: String,
        checksumCRC32: String? = nil
    ) throws -> String {
        let headers = checksumCRC32.map { Self.checksumHeaders(crc32: $0) } ?? []
        return try retrying("UploadPart", bucket: bucket, key: key) { _ in
            let request = S3Request(
                method: "PUT", bucket: bucket, key: key, query: [("partNumber", "\(number)"), ("uploadId", uploadID)],
                headers: headers, body: Self.body(data), payloadHash: sha256)
            return Self.stripQuotes(try perform("UploadPart", request).header("ETag"))
        }
    }

    public func completeMultipartUpload(bucket: String, key: String, uploadID: String, parts: [CompletedPart]) throws -> String {
        var xml = "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
        for part in parts.sorted(by: { $0.number < $1.number }) {
            xml += "<Part><PartNumber>\(part.number)</PartNumber><ETag>\"\(XMLText.escape(part.etag))\"</ETag>"
            if let crc = part.checksumCRC32 { xml += "<ChecksumCRC32>\(XMLText.escape(crc))</ChecksumCRC32>" }
            xml += "</Part>"
        }
        xml += "</CompleteMultipartUpload>"
        let body = Data(xml.utf8)
        let request = S3Request(
            method: "POST", bucket: bucket, key: key, query: [("uploadId", uploadID)],
            headers: [HTTPHeader("Content-Type", "application/xml")], body: .bytes(body),
            payloadHash: SHA256Digest.hash(body).hexString)
        let operation = "CompleteMultipartUpload"
        return try retrying(operation, bucket: bucket, key: key) { _ in
            let response = try perform(operation, request)
            // S3 may answer 200 and still report an error in the body.
            let text = String(decoding: response.body, as: UTF8.self)
            if text.contains("<Error>"), let code = XMLText.first("Code", in: text) {
                throw S3Error.service(
                    operation: operation, bucket: bucket, key: key, status: response.status, code: code,
                    message: XMLText.first("Message", in: text) ?? "")
            }
            return Self.stripQuotes(XMLText.first("ETag", in: text) ?? response.header("ETag"))
        }
    }

    public func abortMultipartUpload(bucket: String, key: String, uploadID: String) throws {
        let request = S3Request(method: "DELETE", bucket: bucket, key: key, query: [("uploadId", uploadID)])
        _ = try send("AbortMultipartUpload", request)
    }

    /// One page of ListObjectsV2 (keys URL-encoded on the wire so any byte survives XML).
    public func listPage(bucket: String, prefix: String, continuationToken: String?, maxKeys: Int = 1000) throws -> (
        objects: [S3Object], next: String?
    ) {
        var query = [("list-type", "2"), ("prefix", prefix), ("encoding-type", "url"), ("max-keys", "\(maxKeys)")]
        if let continuationToken { query.append(("continuation-token", continuationToken)) }
        let response = try send("ListObjectsV2", S3Request(method: "GET", bucket: bucket, query: query))
        let xml = String(decoding: response.body, as: UTF8.self)
        let urlEncoded = XMLText.first("EncodingType", in: xml) == "url"
        let objects = XMLText.blocks("Contents", in: xml).map { block -> S3Object in
            let rawKey = XMLText.first("Key", in: block) ?? ""
            let key = urlEncoded ? (rawKey.replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? rawKey) : rawKey
            return S3Object(
                key: key, size: Int64(XMLText.first("Size", in: block) ?? "") ?? 0,
                lastModified: XMLText.first("LastModified", in: block) ?? "",
                etag: Self.stripQuotes(XMLText.first("ETag", in: block)))
        }
        let truncated = XMLText.first("IsTruncated", in: xml) == "true"
        let next = truncated ? XMLText.first("NextContinuationToken", in: xml) : nil
        if truncated && next == nil {
            throw S3Error.service(
                operation: "ListObjectsV2", bucket: bucket, key: prefix, status: response.status, code: "MalformedResponse",
                message: "truncated listing without a continuation token")
        }
        return (objects, next)
    }

    /// Every object under `prefix`, following continuation tokens, handed over page by page.
    public func list(bucket: String, prefix: String, pageSize: Int = 1000, _ each: ([S3Object]) throws -> Void) throws {
        var token: String?
        repeat {
            let page = try listPage(bucket: bucket, prefix: prefix, continuationToken: token, maxKeys: pageSize)
            try each(page.objects)
            token = page.next
        } while token != nil
    }

    /// DeleteObjects of up to 1,000 keys (quiet mode); throws the first per-key error S3 reports.
    public func deleteObjects(bucket: String, keys: [String]) throws {
        guard keys.count <= 1000 else { throw S3Error.usage("DeleteObjects takes at most 1,000 keys, got \(keys.count)") }
        var xml = "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true</Quiet>"
        for key in keys { xml += "<Object><Key>\(XMLText.escape(key))</Key></Object>" }
        xml += "</Delete>"
        let body = Data(xml.utf8)
        let request = S3Request(
            method: "POST", bucket: bucket, query: [("delete", "")],
            headers: [HTTPHeader("Content-Type", "application/xml"), HTTPHeader("Content-MD5", Data(MD5Digest.hash(body)).base64EncodedString())],
            body: .bytes(body), payloadHash: SHA256Digest.hash(body).hexString)
        let response = try send("DeleteObjects", request)
        let text = String(decoding: response.body, as: UTF8.self)
        if let first = XMLText.blocks("Error", in: text).first {
            throw S3Error.service(
                operation: "DeleteObjects", bucket: bucket, key: XMLText.first("Key", in: first), status: response.status,
                code: XMLText.first("Code", in: first) ?? "Error", message: XMLText.first("Message", in: first) ?? "")
        }
    }

    /// GetObject of a small object (a manifest, a blob list), whole in memory.
    public func getData(bucket: String, key: String) throws -> Data {
        var body = Data()
        _ = try send("GetObject", S3Request(method: "GET", bucket: bucket, key: key)) { body.append(contentsOf: $0) }
        return body
    }

    /// HeadObject: size and ETag, or NoSuchKey/NoSuchBucket.
    public func headObject(bucket: String, key: String) throws -> (size: Int64, etag: String) {
        let response = try send("HeadObject", S3Request(method: "HEAD", bucket: bucket, key: key))
        return (Int64(response.header("Content-Length") ?? "") ?? 0, Self.stripQuotes(response.header("ETag")))
    }
}
