import BackupKit
import Foundation

@testable import KubeExport

/// Stands in for the Kubernetes API server at the HTTP layer: list responses in the real shape
/// (`kind: XList`, items without apiVersion/kind, `metadata.continue`), limit/continue paging,
/// Status bodies for errors, and scripted faults. Records every request.
final class FakeKubeAPI: HTTPTransport, @unchecked Sendable {
    struct Collection {
        var apiVersion: String
        var kind: String
        var items: [[String: Any]]
    }

    enum Fault {
        case status(Int, String)
        case transport(retryable: Bool)
    }

    private let lock = NSLock()
    var collections: [String: Collection] = [:]
    /// Other JSON documents served as they are, by path (discovery documents).
    var documents: [String: [String: Any]] = [:]
    /// Faults served in order, one per request, before normal answers resume.
    var faults: [Fault] = []
    /// Answer 410 to this many requests that carry a continue token.
    var expireContinueTokens = 0
    /// Serve each page's items in reverse order (a page need not be sorted).
    var reversePages = false
    private(set) var requests: [HTTPRequest] = []

    func add(path: String, apiVersion: String, kind: String, items: [[String: Any]]) {
        collections[path] = Collection(apiVersion: apiVersion, kind: kind, items: items)
    }

    func send(_ request: HTTPRequest, sink: HTTPBodySink?) throws -> HTTPResponse {
        let (status, body) = try lock.withLock { () throws -> (Int, Data) in
            requests.append(request)
            return try answer(request)
        }
        if (200..<300).contains(status), let sink {
            try body.withUnsafeBytes { try sink($0) }
            return HTTPResponse(status: status)
        }
        return HTTPResponse(status: status, body: body)
    }

    private func answer(_ request: HTTPRequest) throws -> (Int, Data) {
        if !faults.isEmpty {
            switch faults.removeFirst() {
            case .status(let code, let message): return (code, Self.status(code, message))
            case .transport(let retryable):
                throw HTTPTransportError(code: 7, message: "Couldn't connect to server", url: "https://127.0.0.1:1/api", retryable: retryable)
            }
        }
        let parts = URLComponents(string: request.url)!
        var query: [String: String] = [:]
        for item in parts.queryItems ?? [] { query[item.name] = item.value }
        if let document = documents[parts.path] {
            return (200, try JSONSerialization.data(withJSONObject: document))
        }
        guard let collection = collections[parts.path] else {
            return (404, Self.status(404, "the server could not find the requested resource"))
        }
        if query["continue"] != nil, expireContinueTokens > 0 {
            expireContinueTokens -= 1
            return (410, Self.status(410, "The provided continue parameter is too old to display a consistent list result."))
        }
        var items = collection.items.sorted { Self.name($0) < Self.name($1) }
        if let selector = query["labelSelector"] {
            let (key, value) = selector.split(separator: "=").map(String.init).pair
            items = items.filter { (($0["metadata"] as? [String: Any])?["labels"] as? [String: String])?[key] == value }
        }
        let limit = Int(query["limit"] ?? "") ?? items.count
        let start = Int(query["continue"] ?? "0") ?? 0
        let end = min(items.count, start + limit)
        var page = Array(items[min(start, end)..<end])
        if reversePages { page.reverse() }
        var metadata: [String: Any] = ["resourceVersion": "1234"]
        if end < items.count { metadata["continue"] = String(end) }
        let list: [String: Any] = ["apiVersion": collection.apiVersion, "kind": collection.kind + "List", "metadata": metadata, "items": page]
        return (200, try JSONSerialization.data(withJSONObject: list))
    }

    static func name(_ item: [String: Any]) -> String {
        ((item["metadata"] as? [String: Any])?["name"] as? String) ?? ""
    }

    static func status(_ code: Int, _ message: String) -> Data {
        let object: [String: Any] = ["kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code]
        return try! JSONSerialization.data(withJSONObject: object)
    }

    /// A Secret as the API server returns it inside a list: server-populated metadata, no apiVersion/kind.
    static func secret(_ name: String, namespace: String = "kdl", data: [String: String] = [:], labels: [String: String] = [:]) -> [String: Any] {
        var metadata: [String: Any] = [
            "name": name, "namespace": namespace, "uid": "uid-\(name)", "resourceVersion": "42",
            "creationTimestamp": "2024-05-01T10:00:00Z",
            "managedFields": [["manager": "kdl-server", "operation": "Update"]],
            "annotations": ["kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{}}"],
        ]
        if !labels.isEmpty { metadata["labels"] = labels }
        return ["metadata": metadata, "type": "Opaque", "data": data]
    }

    /// A KDLProject as the project operator's API returns it.
    static func project(_ id: String) -> [String: Any] {
        [
            "metadata": [
                "name": "kdlproject-\(id)", "namespace": "kdl", "uid": "u-\(id)", "resourceVersion": "7", "generation": 3,
                "labels": ["app": "kdlproject-\(id)"],
                "ownerReferences": [["apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "y"]],
            ],
            "spec": ["projectId": id, "mlflow": ["image": ["repository": "konstellation/kdl-mlflow", "tag": "1.0"]]],
            "status": ["phase": "Ready"],
        ]
    }
}

extension Array where Element == String {
    fileprivate var pair: (String, String) { (self.first ?? "", self.count > 1 ? self[1] : "") }
}

/// A Sleeper that records instead of waiting.
final class RecordingSleeper: Sleeper, @unchecked Sendable {
    private let lock = NSLock()
    private(set) var sleeps: [Double] = []
    func sleep(seconds: Double) { lock.withLock { sleeps.append(seconds) } }
}

/// A Log writing to a temporary file, to assert on what was logged.
final class CapturedLog {
    let path: String
    let log: Log

    init() {
        path = NSTemporaryDirectory() + "/k8s-export-log-\(UUID().uuidString)"
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        log = Log(handle: FileHandle(forWritingAtPath: path)!)
    }

    var text: String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// A connection for tests that never touch the network.
func testConnection(namespace: String = "kdl", token: String? = "test-token-abcdef") -> Connection {
    Connection(server: "https://127.0.0.1:6443", token: token, caFile: nil, clientCertFile: nil, clientKeyFile: nil, namespace: namespace)
}

/// Runs an export against a fake API and returns the output text, the summary and the log.
func runExport(
    _ api: FakeKubeAPI, resources: [String], format: ExportFormat = .yaml, filter: String = Exporter.defaultFilter,
    nameRegex: String? = nil, labelSelector: String? = nil, pageSize: Int = 500, retries: Int = 2
) throws -> (output: String, summary: ExportSummary, log: String) {
    let captured = CapturedLog()
    let client = KubeClient(transport: api, connection: testConnection(), retry: RetryPolicy(retries: retries), sleeper: RecordingSleeper(), log: captured.log)
    let options = ExportOptions(
        resources: try resources.map(ResourceRef.init(parsing:)), namespace: "kdl", labelSelector: labelSelector,
        nameRegex: try nameRegex.map { try NSRegularExpression(pattern: $0) }, filter: filter, format: format, pageSize: pageSize)
    let sink = MemorySink()
    let summary = try Exporter(client: client, options: options, log: captured.log).export(to: sink)
    return (sink.text, summary, captured.text)
}
