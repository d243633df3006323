import BackupKit
import Foundation

/// Lists collections on the API server over the project's HTTP transport, with retries for what may pass.
public struct KubeClient {
    public var transport: HTTPTransport
    public var connection: Connection
    public var retry: RetryPolicy
    public var sleeper: Sleeper
    public var log: Log
    public var tool = "k8s-export"

    public init(transport: HTTPTransport, connection: Connection, retry: RetryPolicy = RetryPolicy(retries: 4), sleeper: Sleeper = ThreadSleeper(), log: Log) {
        self.transport = transport
        self.connection = connection
        self.retry = retry
        self.sleeper = sleeper
        self.log = log
    }

    /// What a list request may end in besides a page.
    enum ListOutcome {
        /// The page's JSON bytes.
        case page([UInt8])
        case notFound
        case gone
    }

    /// Thrown inside the retry loop for answers worth another try.
    private struct Retryable: Error {
        var reason: String
    }

    /// GETs one page of `resource` in `namespace`.
    func list(_ resource: ResourceRef, namespace: String, labelSelector: String?, limit: Int, continueToken: String?) throws -> ListOutcome {
        var query = [("limit", String(limit))]
        if let continueToken { query.append(("continue", continueToken)) }
        if let labelSelector { query.append(("labelSelector", labelSelector)) }
        let path = resource.listPath(namespace: namespace) + "?" + query.map { "\($0)=\(Self.encode($1))" }.joined(separator: "&")
        let (response, body) = try get(path, what: resource.description, retryNote: "retrying the list")

        let message = (200..<300).contains(response.status) ? nil : Self.statusMessage(response.body)
        switch response.status {
        case 200..<300:
            return .page(body)
        case 401, 403:
            throw KubeExportError.forbidden(
                status: response.status, verb: "list", resource: resource.description, namespace: namespace, message: message ?? "")
        case 404:
            return .notFound
        case 410:
            return .gone
        case 400, 422:
            throw KubeExportError.badRequest(resource: resource.description, message: message ?? "HTTP \(response.status)")
        default:
            throw KubeExportError.unexpected(resource: resource.description, reason: "HTTP \(response.status)\(message.map { ": \($0)" } ?? "")")
        }
    }

    /// The resource names (plurals, without subresources) the API server serves in `resource`'s group and
    /// version, from its discovery document; nil when it serves no such group version (404).
    func servedPlurals(of resource: ResourceRef) throws -> Set<String>? {
        let path = resource.group.isEmpty ? "/api/\(resource.version)" : "/apis/\(resource.group)/\(resource.version)"
        let (response, body) = try get(path, what: resource.description, retryNote: "retrying discovery")
        switch response.status {
        case 200..<300:
            guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
                  let resources = object["resources"] as? [[String: Any]] else {
                throw KubeExportError.unexpected(resource: resource.description, reason: "\(path) is not an APIResourceList")
            }
            return Set(resources.compactMap { $0["name"] as? String }.filter { !$0.contains("/") })
        case 404:
            return nil
        case 401, 403:
            throw KubeExportError.forbidden(
                status: response.status, verb: "discover", resource: path, namespace: connection.namespace,
                message: Self.statusMessage(response.body) ?? "")
        default:
            let message = Self.statusMessage(response.body)
            throw KubeExportError.unexpected(resource: resource.description, reason: "HTTP \(response.status)\(message.map { ": \($0)" } ?? "") from \(path)")
        }
    }

    /// GETs `path` (with its query) on the API server, retrying transport failures, 429 and 5xx; the body is
    /// collected whatever the status.
    private func get(_ path: String, what: String, retryNote: String) throws -> (HTTPResponse, [UInt8]) {
        var headers = [HTTPHeader("Accept", "application/json")]
        if let token = connection.token { headers.append(HTTPHeader("Authorization", "Bearer \(token)")) }
        let request = HTTPRequest(method: "GET", url: connection.server + path, headers: headers, timeout: 120)
        var body: [UInt8] = []
        do {
            let response = try retry.run(
                sleeper: sleeper,
                isRetryable: { ($0 as? HTTPTransportError)?.retryable == true || $0 is Retryable },
                onRetry: { attempt, error in
                    log.log(.warn, tool: tool, retryNote, [("resource", what), ("attempt", String(attempt)), ("error", Self.describe(error))])
                }
            ) { _ in
                body.removeAll(keepingCapacity: true)
                let response = try transport.send(request) { chunk in body.append(contentsOf: chunk) }
                if response.status == 429 || response.status >= 500 {
                    throw Retryable(reason: "HTTP \(response.status)\(Self.statusMessage(response.body).map { ": \($0)" } ?? "")")
                }
                return response
            }
            return (response, body)
        } catch let error as HTTPTransportError where error.retryable {
            throw KubeExportError.unavailable(resource: what, reason: error.description)
        } catch let error as Retryable {
            throw KubeExportError.unavailable(resource: what, reason: error.reason)
        } catch let error as HTTPTransportError {
            throw KubeExportError.unexpected(resource: what, reason: error.description)
        }
    }

    /// The `message` of a Kubernetes `Status` body, on one line.
    static func statusMessage(_ body: Data) -> String? {
        guard let object = try? JSONSerialization.jsonObject(with: body) as? [String: Any], let message = object["message"] as? String else {
            return nil
        }
        return message.split(whereSeparator: \.isNewline).joined(separator: " ")
    }

    static func describe(_ error: Error) -> String {
        if let error = error as? Retryable { return error.reason }
        return String(describing: error)
    }

    /// Percent-encodes a query value: everything but RFC 3986's unreserved characters.
    static func encode(_ value: String) -> String {
        var out = ""
        for byte in value.utf8 {
            let c = Character(Unicode.Scalar(byte))
            if c.isASCII && (c.isLetter || c.isNumber || "-._~".contains(c)) {
                out.append(c)
            } else {
                out += String(format: "%%%02X", byte)
            }
        }
        return out
    }
}
