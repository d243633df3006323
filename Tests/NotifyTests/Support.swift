import BackupKit
import Foundation

@testable import Notify

/// The sample manifests in Tests/fixtures/manifests (stand-ins for backup.sh's manifest.json).
enum Fixtures {
    static let manifests = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("fixtures/manifests")

    static func path(_ name: String) -> String { manifests.appendingPathComponent("\(name).json").path }

    static func manifest(_ name: String) throws -> Manifest { try Manifest.load(path: path(name)) }

    /// 2025-01-07T02:02:00Z: a fixed "now" for every test.
    static let now = Date(timeIntervalSince1970: 1_736_215_320)

    static func report(_ name: String, event: Event = .finish, logTail: [String] = []) throws -> RunReport {
        let manifest = try manifest(name)
        return RunReport(event: event, status: manifest.status, manifest: manifest, logTail: logTail, time: now)
    }

    static func json(_ value: JSONValue) -> String { String(decoding: value.data, as: UTF8.self) }

    static func object(_ value: JSONValue) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: value.data) as? [String: Any] ?? [:]
    }
}

/// An HTTP transport that answers from a rule and records every request; no network.
final class FakeHTTP: HTTPTransport, @unchecked Sendable {
    private let lock = NSLock()
    private var recorded: [HTTPRequest] = []
    let answer: @Sendable (HTTPRequest) throws -> HTTPResponse

    init(answer: @escaping @Sendable (HTTPRequest) throws -> HTTPResponse = { _ in HTTPResponse(status: 200) }) {
        self.answer = answer
    }

    var requests: [HTTPRequest] { lock.withLock { recorded } }

    func send(_ request: HTTPRequest, sink: HTTPBodySink?) throws -> HTTPResponse {
        lock.withLock { recorded.append(request) }
        return try answer(request)
    }
}

/// A mail transport that records messages, or fails when told to.
final class FakeMail: MailTransport, @unchecked Sendable {
    struct Sent {
        var url: String
        var from: String
        var to: [String]
        var message: Data
    }
    private let lock = NSLock()
    private var recorded: [Sent] = []
    let failure: HTTPTransportError?

    init(failure: HTTPTransportError? = nil) { self.failure = failure }

    var sent: [Sent] { lock.withLock { recorded } }

    func sendMail(url: String, from: String, to: [String], user: String?, password: String?, message: Data, timeout: Double) throws {
        lock.withLock { recorded.append(Sent(url: url, from: from, to: to, message: message)) }
        if let failure { throw failure }
    }
}

struct NoSleep: Sleeper {
    func sleep(seconds: Double) {}
}

/// Collects what notify writes on stdout.
final class OutputBox: @unchecked Sendable {
    private let lock = NSLock()
    private var text = ""
    func append(_ more: String) { lock.withLock { text += more } }
    var value: String { lock.withLock { text } }
}

/// A Log writing to a temporary file, so tests can read stderr's lines back.
struct CapturedLog {
    let log: Log
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("notify-log-\(UUID().uuidString)")
        _ = FileManager.default.createFile(atPath: url.path, contents: nil)
        log = Log(handle: try FileHandle(forWritingTo: url))
    }

    var text: String { (try? String(contentsOf: url, encoding: .utf8)) ?? "" }
}
