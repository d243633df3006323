import BackupKit
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Where s3-get writes: a file it creates (and removes again on failure) or stdout.
public final class FileDescriptorSink: @unchecked Sendable {
    let descriptor: Int32
    let path: String?

    /// Creates (truncates) `path`, or takes stdout for `-`.
    public init(path: String) throws {
        if path == "-" {
            descriptor = 1
            self.path = nil
        } else {
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o666)
            guard fd >= 0 else {
                throw S3Error.io("cannot create \(path): \(String(cString: strerror(errno)))")
            }
            descriptor = fd
            self.path = path
        }
    }

    /// Writes to a descriptor the caller owns (a pipe into a decoder); never closed or removed here.
    public init(descriptor: Int32) {
        self.descriptor = descriptor
        self.path = nil
    }

    deinit {
        if path != nil { close(descriptor) }
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < bytes.count {
            let count = Glibc.write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
            if count < 0 {
                if errno == EINTR { continue }
                throw S3Error.io("writing \(path ?? "stdout"): \(String(cString: strerror(errno)))")
            }
            offset += count
        }
    }

    /// Flushes a file to disk (stdout is left alone).
    public func finish() throws {
        guard let path else { return }
        if fsync(descriptor) != 0 && errno != EINVAL {
            throw S3Error.io("writing \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// Removes the partial file after a failure.
    public func discard() {
        if let path { unlink(path) }
    }
}

/// What s3-get prints when it writes a file.
public struct GetResult: Codable, Sendable, Equatable {
    public var bucket: String
    public var key: String
    public var size: Int64
    public var sha256: String
    public var resumes: Int
    public var seconds: Double
}

/// Streams one object down, resuming with ranged GETs (pinned to the first answer's ETag) after a broken connection.
public final class Downloader {
    let client: S3Client

    public init(client: S3Client) {
        self.client = client
    }

    final class State {
        var digest: SHA256Digest? = SHA256Digest()
        var written: Int64 = 0
    }

    public func download(_ location: S3Location, to sink: FileDescriptorSink, expectedSHA256: String?) throws -> GetResult {
        do {
            let result = try transfer(location, to: sink)
            try sink.finish()
            if let expected = expectedSHA256, expected.lowercased() != result.sha256 {
                throw S3Error.integrity(
                    "GetObject \(location): sha256 mismatch: expected \(expected.lowercased()), got \(result.sha256)")
            }
            return result
        } catch {
            sink.discard()
            throw error
        }
    }

    func transfer(_ location: S3Location, to sink: FileDescriptorSink) throws -> GetResult {
        guard !location.key.isEmpty else { throw S3Error.usage("the source needs an object key: \(location)") }
        let started = Date()
        let state = State()
        var etag: String?
        var total: Int64?
        var resumes = 0
        var failures = 0
        while true {
            var headers: [HTTPHeader] = []
            let offset = state.written
            if offset > 0 {
                headers.append(HTTPHeader("Range", "bytes=\(offset)-"))
                if let etag { headers.append(HTTPHeader("If-Match", "\"\(etag)\"")) }
            }
            let request = S3Request(method: "GET", bucket: location.bucket, key: location.key, headers: headers)
            do {
                let response = try client.perform("GetObject", request) { bytes in
                    try sink.write(bytes)
                    state.digest?.update(bytes)
                    state.written += Int64(bytes.count)
                }
                if offset > 0 && response.status != 206 {
                    throw S3Error.integrity("GetObject \(location): the server ignored the range request; cannot resume")
                }
                if etag == nil { etag = S3Client.stripQuotes(response.header("ETag")) }
                if total == nil {
                    total = Self.totalLength(response, offset: offset)
                }
                if let total, state.written < total {
                    throw S3Error.transport(
                        operation: "GetObject", bucket: location.bucket, key: location.key,
                        message: "connection closed after \(state.written) of \(total) bytes", retryable: true)
                }
                break
            } catch let error as S3Error where error.isRetryable {
                if state.written > offset {
                    failures = 0  // progress was made: the next attempt starts a fresh retry budget
                }
                failures += 1
                guard failures < client.retry.attempts else { throw error }
                if state.written > 0 { resumes += 1 }
                client.log.log(
                    .warn, tool: client.tool, "resuming",
                    [("operation", "GetObject"), ("bucket", location.bucket), ("key", location.key), ("offset", "\(state.written)"),
                     ("error", "\(error)")])
                client.sleeper.sleep(seconds: client.retry.delay(afterAttempt: failures - 1))
            }
        }
        let written = state.written
        return GetResult(
            bucket: location.bucket, key: location.key, size: written, sha256: state.digest.take()?.finalize().hexString ?? "", resumes: resumes,
            seconds: Uploader.elapsed(since: started))
    }

    /// The object's full length: from `Content-Range: bytes a-b/TOTAL` on a 206, else `Content-Length`.
    static func totalLength(_ response: HTTPResponse, offset: Int64) -> Int64? {
        if let range = response.header("Content-Range"), let slash = range.lastIndex(of: "/") {
            return Int64(range[range.index(after: slash)...])
        }
        return Int64(response.header("Content-Length") ?? "").map { $0 + offset }
    }
}
