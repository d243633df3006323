import BackupKit
import Foundation
import S3

/// An in-memory S3 with path-style buckets: the calls bucket-sync makes (ListBuckets, ListObjectsV2, GetObject with
/// If-Match, HeadObject, PutObject, CreateBucket). `beforeGet` runs before a GetObject is answered (a writer
/// changing an object between the listing and the read).
final class FakeBuckets: HTTPTransport, @unchecked Sendable {
    struct Object {
        var body: Data
        var etag: String
        var contentType: String
        var metadata: [String: String]
        var lastModified: String
    }

    let lock = NSLock()
    var buckets: [String: [String: Object]] = [:]
    var beforeGet: ((String, String) -> Void)?
    var gets: [String] = []
    private var clock = 0

    func put(_ bucket: String, _ key: String, _ body: Data, contentType: String = "text/csv", metadata: [String: String] = [:]) {
        lock.withLock {
            clock += 1
            buckets[bucket, default: [:]][key] = Object(
                body: body, etag: MD5Digest.hash(body).map { String(format: "%02x", $0) }.joined(), contentType: contentType,
                metadata: metadata, lastModified: String(format: "2026-12-06T10:00:%02d.000Z", clock % 60))
        }
    }

    func send(_ request: HTTPRequest, sink: HTTPBodySink?) throws -> HTTPResponse {
        var body = Data()
        switch request.body {
        case .bytes(let data): body = data
        case .stream(_, let reader):
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            while true {
                let count = try chunk.withUnsafeMutableBytes { try reader($0) }
                if count == 0 { break }
                body.append(contentsOf: chunk[0..<count])
            }
        case .none: break
        }
        let parts = URLComponents(string: request.url)!
        let path = parts.percentEncodedPath.dropFirst().split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        let bucket = path.first.map { String($0).removingPercentEncoding! } ?? ""
        let key = path.count > 1 ? String(path[1]).removingPercentEncoding! : nil
        let query = parts.queryItems ?? []
        let header = { (name: String) in request.headers.first { $0.name.lowercased() == name }?.value }
        switch (request.method, bucket.isEmpty, key) {
        case ("GET", true, _):
            let names = lock.withLock { buckets.keys.sorted() }
            return HTTPResponse(status: 200, body: Data(("<R>" + names.map { "<Bucket><Name>\($0)</Name></Bucket>" }.joined() + "</R>").utf8))
        case ("GET", false, nil):
            let prefix = query.first { $0.name == "prefix" }?.value ?? ""
            let listed = lock.withLock { (buckets[bucket] ?? [:]).filter { $0.key.hasPrefix(prefix) } }
            guard lock.withLock({ buckets[bucket] != nil }) else { return Self.error(404, "NoSuchBucket") }
            let keys = listed.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
            let contents = keys.map { name -> String in
                let object = listed[name]!
                let encoded = name.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
                return "<Contents><Key>\(encoded)</Key><Size>\(object.body.count)</Size><ETag>\"\(object.etag)\"</ETag><LastModified>\(object.lastModified)</LastModified></Contents>"
            }.joined()
            return HTTPResponse(status: 200, body: Data("<R><EncodingType>url</EncodingType><IsTruncated>false</IsTruncated>\(contents)</R>".utf8))
        case ("GET", false, let key?), ("HEAD", false, let key?):
            if request.method == "GET" {
                beforeGet?(bucket, key)
                lock.withLock { gets.append(key) }
            }
            guard let object = lock.withLock({ buckets[bucket]?[key] }) else { return Self.error(404, "NoSuchKey") }
            if let wanted = header("if-match"), wanted != "\"\(object.etag)\"" { return Self.error(412, "PreconditionFailed") }
            var headers = [
                HTTPHeader("ETag", "\"\(object.etag)\""), HTTPHeader("Content-Type", object.contentType),
                HTTPHeader("Content-Length", "\(object.body.count)"), HTTPHeader("Last-Modified", "Sun, 06 Dec 2026 10:00:00 GMT"),
            ]
            headers += object.metadata.map { HTTPHeader("x-amz-meta-\($0.key)", $0.value) }
            if request.method == "GET", let sink {
                try object.body.withUnsafeBytes { try sink($0) }
                return HTTPResponse(status: 200, headers: headers)
            }
            return HTTPResponse(status: 200, headers: headers, body: request.method == "GET" ? object.body : Data())
        case ("PUT", false, nil):
            lock.withLock { if buckets[bucket] == nil { buckets[bucket] = [:] } }
            return HTTPResponse(status: 200)
        case ("PUT", false, let key?):
            var metadata: [String: String] = [:]
            for h in request.headers where h.name.lowercased().hasPrefix("x-amz-meta-") {
                metadata[String(h.name.lowercased().dropFirst(11))] = h.value
            }
            put(bucket, key, body, contentType: header("content-type") ?? "binary/octet-stream", metadata: metadata)
            return HTTPResponse(status: 200, headers: [HTTPHeader("ETag", "\"\(lock.withLock { buckets[bucket]![key]!.etag })\"")])
        default:
            return Self.error(501, "NotImplemented")
        }
    }

    static func error(_ status: Int, _ code: String) -> HTTPResponse {
        HTTPResponse(status: status, body: Data("<Error><Code>\(code)</Code><Message>\(code)</Message></Error>".utf8))
    }

    func client() throws -> S3Client {
        let environment = Environment([
            "AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "secret-for-tests-only", "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000",
            "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
        ])
        let log = Log(handle: FileHandle(forWritingAtPath: "/dev/null")!)
        return S3Client(configuration: try S3Configuration(environment: environment, log: log), transport: self, retry: RetryPolicy(retries: 0), log: log)
    }
}
