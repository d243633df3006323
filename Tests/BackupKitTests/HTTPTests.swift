import Foundation
import Testing

@testable import BackupKit

#if canImport(Glibc)
    import Glibc
#endif

/// A one-connection-at-a-time HTTP/1.1 server on 127.0.0.1 that records requests and answers
/// with a canned response: enough to exercise the real libcurl transport end to end.
final class LoopbackHTTPServer: @unchecked Sendable {
    struct Recorded {
        var head: String
        var body: Data
    }

    let port: Int
    private let socket: Int32
    private let lock = NSLock()
    private var recorded: [Recorded] = []
    private let respond: @Sendable (Recorded) -> Data

    init(respond: @escaping @Sendable (Recorded) -> Data) throws {
        self.respond = respond
        let fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0, listen(fd, 8) == 0 else {
            close(fd)
            throw POSIXError(.EADDRINUSE)
        }
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        socket = fd
        port = Int(UInt16(bigEndian: address.sin_port))
        Thread.detachNewThread { [self] in serve() }
    }

    deinit { close(socket) }

    var requests: [Recorded] { lock.withLock { recorded } }

    private func serve() {
        while true {
            let client = accept(socket, nil, nil)
            guard client >= 0 else { return }
            handle(client)
            close(client)
        }
    }

    private func handle(_ client: Int32) {
        var buffer = Data()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            guard let end = buffer.range(of: Data("\r\n\r\n".utf8)) else {
                let n = read(client, &chunk, chunk.count)
                if n <= 0 { return }
                buffer.append(contentsOf: chunk[0..<n])
                continue
            }
            let head = String(decoding: buffer[..<end.lowerBound], as: UTF8.self)
            let length = head.split(separator: "\r\n")
                .first { $0.lowercased().hasPrefix("content-length:") }
                .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
            var body = Data(buffer[end.upperBound...])
            while body.count < length {
                let n = read(client, &chunk, chunk.count)
                if n <= 0 { return }
                body.append(contentsOf: chunk[0..<n])
            }
            let request = Recorded(head: head, body: body)
            lock.withLock { recorded.append(request) }
            let response = respond(request)
            _ = response.withUnsafeBytes { write(client, $0.baseAddress, $0.count) }
            return  // Connection: close
        }
    }

    static func response(status: Int, headers: [String] = [], body: Data) -> Data {
        var text = "HTTP/1.1 \(status) X\r\nContent-Length: \(body.count)\r\nConnection: close\r\n"
        for header in headers { text += header + "\r\n" }
        return Data((text + "\r\n").utf8) + body
    }
}

@Suite struct HTTPTests {
    @Test func sendsHeadersAndBodyAndReadsTheResponse() throws {
        let server = try LoopbackHTTPServer { _ in
            LoopbackHTTPServer.response(status: 201, headers: ["ETag: \"abc\""], body: Data("created".utf8))
        }
        let transport = CurlTransport()
        let response = try transport.send(
            HTTPRequest(
                method: "PUT", url: "http://127.0.0.1:\(server.port)/bucket/a%20b",
                headers: [HTTPHeader("x-amz-content-sha256", "UNSIGNED-PAYLOAD")], body: .bytes(Data("hello".utf8))))
        #expect(response.status == 201)
        #expect(response.header("etag") == "\"abc\"")
        #expect(String(decoding: response.body, as: UTF8.self) == "created")
        let request = try #require(server.requests.first)
        #expect(request.head.hasPrefix("PUT /bucket/a%20b HTTP/1.1"))
        #expect(request.head.contains("x-amz-content-sha256: UNSIGNED-PAYLOAD"))
        #expect(!request.head.lowercased().contains("expect:"))
        #expect(String(decoding: request.body, as: UTF8.self) == "hello")
    }

    @Test func streamsASuccessfulBodyToTheSink() throws {
        let payload = Data((0..<300_000).map { UInt8($0 % 251) })
        let server = try LoopbackHTTPServer { _ in LoopbackHTTPServer.response(status: 200, body: payload) }
        var received = Data()
        let response = try CurlTransport().send(
            HTTPRequest(method: "GET", url: "http://127.0.0.1:\(server.port)/x"),
            sink: { received.append(contentsOf: $0) })
        #expect(response.status == 200)
        #expect(response.body.isEmpty)
        #expect(received == payload)
    }

    @Test func anErrorBodyIsCollectedNotSunk() throws {
        let server = try LoopbackHTTPServer { _ in
            LoopbackHTTPServer.response(status: 403, body: Data("<Error><Code>AccessDenied</Code></Error>".utf8))
        }
        var sunk = 0
        let response = try CurlTransport().send(
            HTTPRequest(method: "GET", url: "http://127.0.0.1:\(server.port)/x"), sink: { sunk += $0.count })
        #expect(response.status == 403)
        #expect(sunk == 0)
        #expect(String(decoding: response.body, as: UTF8.self).contains("AccessDenied"))
    }

    @Test func streamsAnUploadFromAReader() throws {
        let server = try LoopbackHTTPServer { _ in LoopbackHTTPServer.response(status: 200, body: Data()) }
        let total = 200_000
        let sent = SentCounter()
        let body = HTTPBody.stream(length: Int64(total)) { buffer in
            let count = min(buffer.count, total - sent.value)
            for i in 0..<count { buffer[i] = UInt8((sent.value + i) % 7) }
            sent.value += count
            return count
        }
        _ = try CurlTransport().send(HTTPRequest(method: "POST", url: "http://127.0.0.1:\(server.port)/up", body: body))
        let request = try #require(server.requests.first)
        #expect(request.head.hasPrefix("POST /up"))
        #expect(request.body.count == total)
        #expect(request.body.enumerated().allSatisfy { $0.element == UInt8($0.offset % 7) })
    }

    @Test func aSinkErrorAbortsTheTransferAndIsRethrown() throws {
        struct DiskFull: Error {}
        let server = try LoopbackHTTPServer { _ in LoopbackHTTPServer.response(status: 200, body: Data(count: 10_000)) }
        #expect(throws: DiskFull.self) {
            _ = try CurlTransport().send(
                HTTPRequest(method: "GET", url: "http://127.0.0.1:\(server.port)/x"), sink: { _ in throw DiskFull() })
        }
    }

    @Test func aRefusedConnectionIsARetryableTransportErrorWithoutSecrets() throws {
        // Bind then close a socket to find a port nobody listens on.
        let port = try LoopbackHTTPServer { _ in Data() }.port
        #expect {
            _ = try CurlTransport().send(HTTPRequest(method: "GET", url: "http://user:pw@127.0.0.1:\(port)/x?token=secret"))
        } throws: { error in
            guard let error = error as? HTTPTransportError else { return false }
            return error.retryable && error.exitCode == ExitStatus.unavailable && !error.description.contains("secret")
                && !error.description.contains("pw")
        }
    }
}

final class SentCounter: @unchecked Sendable {
    var value = 0
}
