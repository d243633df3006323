import BackupKit
import Foundation
import S3

/// The MinIO (any S3) the buckets are read from and restored into: `MINIO_*` settings, separate from the
/// backup bucket's `AWS_*` ones.
public enum MinIOSettings {
    /// A client for `MINIO_ENDPOINT` with `MINIO_ACCESS_KEY_ID`/`MINIO_SECRET_ACCESS_KEY`, `MINIO_REGION`
    /// (default us-east-1) and `MINIO_CA_FILE`; path-style addressing.
    public static func client(
        environment: Environment, retries: Int, stallTimeout: Int, log: Log = .standardError, wrap: (HTTPTransport) -> HTTPTransport = { $0 }
    ) throws -> S3Client {
        guard let endpoint = environment.first("MINIO_ENDPOINT") else {
            throw BucketSyncError.usage("MINIO_ENDPOINT is not set (the platform's MinIO, http(s)://host:port)")
        }
        guard let keyID = environment.first("MINIO_ACCESS_KEY_ID"), let secret = environment.first("MINIO_SECRET_ACCESS_KEY") else {
            throw BucketSyncError.usage("MINIO_ACCESS_KEY_ID and MINIO_SECRET_ACCESS_KEY are required with MINIO_ENDPOINT")
        }
        log.addSecret(secret)
        let mapped = Environment([
            "AWS_ACCESS_KEY_ID": keyID, "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_REGION": environment.first("MINIO_REGION") ?? "us-east-1",
            "AWS_REQUEST_CHECKSUM_CALCULATION": environment.first("AWS_REQUEST_CHECKSUM_CALCULATION") ?? "when_supported",
        ])
        let configuration = try S3Configuration(environment: mapped, endpoint: endpoint, pathStyle: true, log: log)
        var http = HTTPClientOptions()
        http.caFile = environment.first("MINIO_CA_FILE")
        http.lowSpeedSeconds = stallTimeout
        return S3Client(
            configuration: configuration, transport: wrap(CurlTransport(options: http)), retry: RetryPolicy(retries: retries), log: log,
            tool: "bucket-sync")
    }

    public static func indexKey(environment: Environment) throws -> IndexKey {
        guard let secret = environment.first("MINIO_SECRET_ACCESS_KEY") else {
            throw BucketSyncError.usage("MINIO_SECRET_ACCESS_KEY is required")
        }
        return IndexKey(minioSecret: secret)
    }
}

/// What an object GET or HEAD says about the version it served.
struct ObjectVersion: Equatable {
    var size: Int64
    var etag: String
    var lastModified: String?
    var contentType: String?
    var metadata: [String: String]

    init(_ response: HTTPResponse) {
        size = Int64(response.header("Content-Length") ?? "") ?? 0
        etag = String((response.header("ETag") ?? "").filter { $0 != "\"" })
        lastModified = response.header("Last-Modified")
        contentType = response.header("Content-Type")
        var metadata: [String: String] = [:]
        for header in response.headers where header.name.lowercased().hasPrefix("x-amz-meta-") {
            metadata[String(header.name.lowercased().dropFirst("x-amz-meta-".count))] = header.value
        }
        self.metadata = metadata
    }
}

extension S3Client {
    /// The buckets a run takes: `named`, else every bucket listed; less those `excludeRegex` matches.
    func selectBuckets(named: [String]?, excludeRegex: String?) throws -> [String] {
        var names = try named ?? bucketNames()
        if let excludeRegex, !excludeRegex.isEmpty {
            guard let regex = try? NSRegularExpression(pattern: excludeRegex) else {
                throw BucketSyncError.usage("--exclude-regex is not a regular expression: \(excludeRegex)")
            }
            names = names.filter { regex.firstMatch(in: $0, range: NSRange($0.startIndex..., in: $0)) == nil }
        }
        return names
    }

    /// ListBuckets: every bucket the credentials can see.
    func bucketNames() throws -> [String] {
        let response = try send("ListBuckets", S3Request(method: "GET", bucket: ""))
        let xml = String(decoding: response.body, as: UTF8.self)
        return xmlValues("Name", in: xml).sorted()
    }

    func headBucketExists(_ bucket: String) throws -> Bool {
        do {
            _ = try send("HeadBucket", S3Request(method: "HEAD", bucket: bucket))
            return true
        } catch let error as S3Error where error.exitCode == ExitStatus.noInput {
            return false
        }
    }

    func createBucket(_ bucket: String) throws {
        let region = configuration.region
        var body = Data()
        if region != "us-east-1" {
            body = Data(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>\(region)</LocationConstraint></CreateBucketConfiguration>"
                    .utf8)
        }
        let request = S3Request(
            method: "PUT", bucket: bucket, body: body.isEmpty ? .none : .bytes(body), payloadHash: SHA256Digest.hash(body).hexString)
        do {
            _ = try send("CreateBucket", request)
        } catch S3Error.service(_, _, _, _, let code, _) where code == "BucketAlreadyOwnedByYou" {}
    }

    /// GET of a whole object into memory, pinned to `etag` (412 when it changed: nil).
    func getSmall(bucket: String, key: String, etag: String?, limit: Int64) throws -> (ObjectVersion, [UInt8])? {
        try retrying("GetObject", bucket: bucket, key: key) { _ in
            var bytes: [UInt8] = []
            var headers: [HTTPHeader] = []
            if let etag { headers.append(HTTPHeader("If-Match", "\"\(etag)\"")) }
            do {
                let response = try perform("GetObject", S3Request(method: "GET", bucket: bucket, key: key, headers: headers)) { piece in
                    guard Int64(bytes.count + piece.count) <= limit else { throw BucketSyncError.io("grew") }
                    bytes.append(contentsOf: piece)
                }
                return (ObjectVersion(response), bytes)
            } catch S3Error.service(_, _, _, let status, _, _) where status == 412 {
                return nil
            } catch BucketSyncError.io("grew") {
                return nil
            }
        }
    }

    func head(bucket: String, key: String) throws -> ObjectVersion {
        ObjectVersion(try send("HeadObject", S3Request(method: "HEAD", bucket: bucket, key: key)))
    }
}

/// The text of every `<name>` element (S3's flat answers).
func xmlValues(_ name: String, in xml: String) -> [String] {
    var values: [String] = []
    var rest = xml[...]
    while let open = rest.range(of: "<\(name)>"), let close = rest.range(of: "</\(name)>", range: open.upperBound..<rest.endIndex) {
        let raw = rest[open.upperBound..<close.lowerBound]
        values.append(
            raw.replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
                .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&apos;", with: "'")
                .replacingOccurrences(of: "&amp;", with: "&"))
        rest = rest[close.upperBound...]
    }
    return values
}

/// Counts the requests sent through it (the run's last log line reports them: the bench's "requests made").
public final class CountingTransport: HTTPTransport, @unchecked Sendable {
    let inner: HTTPTransport
    private let lock = NSLock()
    private var sent = 0

    public init(_ inner: HTTPTransport) {
        self.inner = inner
    }

    public var count: Int { lock.withLock { sent } }

    public func send(_ request: HTTPRequest, sink: HTTPBodySink?) throws -> HTTPResponse {
        lock.withLock { sent += 1 }
        return try inner.send(request, sink: sink)
    }
}
