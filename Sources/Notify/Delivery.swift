import BackupKit
import Foundation

/// Sends one e-mail; `CurlTransport` does it over SMTP, tests substitute fakes.
public protocol MailTransport: Sendable {
    func sendMail(url: String, from: String, to: [String], user: String?, password: String?, message: Data, timeout: Double) throws
}

extension CurlTransport: MailTransport {}

/// One message for one channel, ready to send.
public struct Delivery: Sendable {
    public enum Payload: Sendable {
        case http(HTTPRequest)
        case mail(MailSettings, Data)
    }

    public var channel: Channel
    public var payload: Payload
    /// Seconds one attempt may take (HTTP requests carry it too).
    public var timeout: Double

    /// Where it goes, safe to print: no userinfo, query or path (Slack's and healthchecks.io's token).
    public var target: String {
        switch payload {
        case .http(let request): return Redact.url(request.url, keepPath: false)
        case .mail(let settings, _): return Redact.url(settings.url, keepPath: false)
        }
    }

    /// What `--dry-run` prints: the method and redacted target, the headers and the body.
    public var preview: String {
        switch payload {
        case .http(let request):
            var text = "# \(channel.rawValue): \(request.method) \(target)\n"
            for header in request.headers { text += "\(header.name): \(header.value)\n" }
            if case .bytes(let body) = request.body { text += "\n" + String(decoding: body, as: UTF8.self) }
            return text.hasSuffix("\n") ? text : text + "\n"
        case .mail(let settings, let message):
            var text = "# \(channel.rawValue): SMTP \(target) from \(settings.from) to \(settings.to.joined(separator: ","))\n"
            text += String(decoding: message, as: UTF8.self).replacingOccurrences(of: "\r\n", with: "\n")
            return text.hasSuffix("\n") ? text : text + "\n"
        }
    }
}

/// The outcome of one channel after its retries.
public struct DeliveryResult: Sendable {
    public var channel: Channel
    public var target: String
    public var attempts: Int
    public var seconds: Double
    /// nil when delivered.
    public var error: String?

    public var delivered: Bool { error == nil }
}

/// Which channels get which message for a notification.
public enum DeliveryPlan {
    public static func make(_ n: RunReport, configuration c: NotifyConfiguration) -> [Delivery] {
        var out: [Delivery] = []
        let timeout = c.timeout
        func wanted(_ channel: Channel) -> Bool { c.onlyOn(channel).wants(n.status) }

        // A start is only the dead-man's switch's business; chat and e-mail speak once per finish.
        if n.event != .start {
            if let url = c.slackWebhookURL, wanted(.slack) {
                out.append(Delivery(channel: .slack, payload: .http(json(url, Payloads.slack(n).data, timeout: timeout)), timeout: timeout))
            }
            if let url = c.webhookURL, wanted(.webhook) {
                let body = Payloads.webhook(n).data
                var request = json(url, body, timeout: timeout)
                request.headers.append(HTTPHeader("X-KDL-Backup-Event", n.event.rawValue))
                if let secret = c.webhookSecret {
                    request.headers.append(HTTPHeader("X-KDL-Backup-Signature", Payloads.webhookSignature(body: body, secret: secret)))
                }
                out.append(Delivery(channel: .webhook, payload: .http(request), timeout: timeout))
            }
            if let mail = c.mail, wanted(.email) {
                out.append(Delivery(channel: .email, payload: .mail(mail, Payloads.email(n, from: mail.from, to: mail.to)), timeout: timeout))
            }
            if let url = c.pushgatewayURL, wanted(.pushgateway) {
                let base = url.hasSuffix("/") ? String(url.dropLast()) : url
                let request = HTTPRequest(
                    method: "POST", url: base + "/metrics/job/kdl_backup",
                    headers: [HTTPHeader("Content-Type", "text/plain; version=0.0.4; charset=utf-8")],
                    body: .bytes(Data(Payloads.exposition(n).utf8)), timeout: timeout)
                out.append(Delivery(channel: .pushgateway, payload: .http(request), timeout: timeout))
            }
        }
        let ping = n.event == .verify ? c.verifyHealthcheckURL : c.healthcheckURL
        if let ping, n.event == .start || wanted(.healthcheck) {
            let request = HTTPRequest(
                method: "POST", url: Payloads.pingURL(base: ping, n),
                headers: [HTTPHeader("Content-Type", "text/plain; charset=utf-8")],
                body: .bytes(Data(Payloads.pingBody(n).utf8)), timeout: timeout)
            out.append(Delivery(channel: .healthcheck, payload: .http(request), timeout: timeout))
        }
        return out
    }

    static func json(_ url: String, _ body: Data, timeout: Double) -> HTTPRequest {
        HTTPRequest(method: "POST", url: url, headers: [HTTPHeader("Content-Type", "application/json")], body: .bytes(body), timeout: timeout)
    }
}

/// Sends every delivery at once, each on its own thread with its own timeout and retries,
/// so a channel that hangs or fails costs the others nothing.
public struct Dispatcher: Sendable {
    public var http: HTTPTransport
    public var mail: MailTransport
    public var retry: RetryPolicy
    public var sleeper: Sleeper

    public init(http: HTTPTransport, mail: MailTransport, retry: RetryPolicy, sleeper: Sleeper = ThreadSleeper()) {
        self.http = http
        self.mail = mail
        self.retry = retry
        self.sleeper = sleeper
    }

    public func deliver(_ deliveries: [Delivery], onRetry: @escaping @Sendable (Delivery, Int, String) -> Void = { _, _, _ in }) -> [DeliveryResult] {
        let results = ResultBox(count: deliveries.count)
        let group = DispatchGroup()
        for (index, delivery) in deliveries.enumerated() {
            group.enter()
            let dispatcher = self
            Thread.detachNewThread {
                results.set(index, dispatcher.deliverOne(delivery, onRetry: onRetry))
                group.leave()
            }
        }
        group.wait()
        return results.all
    }

    func deliverOne(_ delivery: Delivery, onRetry: (Delivery, Int, String) -> Void) -> DeliveryResult {
        let started = Date()
        var attempts = 0
        var failure: String?
        do {
            try retry.run(
                sleeper: sleeper,
                isRetryable: { ($0 as? DeliveryError)?.retryable ?? false },
                onRetry: { attempt, error in onRetry(delivery, attempt, "\(error)") }
            ) { _ in
                attempts += 1
                try send(delivery)
            }
        } catch {
            failure = "\(error)"
        }
        return DeliveryResult(
            channel: delivery.channel, target: delivery.target, attempts: attempts, seconds: Date().timeIntervalSince(started), error: failure)
    }

    func send(_ delivery: Delivery) throws {
        do {
            switch delivery.payload {
            case .http(let request):
                let response = try http.send(request)
                guard (200..<300).contains(response.status) else {
                    let snippet = Human.clip(String(decoding: response.body.prefix(200), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines), 200)
                    throw DeliveryError.httpStatus(response.status, snippet)
                }
            case .mail(let settings, let message):
                try mail.sendMail(
                    url: settings.url, from: settings.from, to: settings.to, user: settings.user, password: settings.password,
                    message: message, timeout: delivery.timeout)
            }
        } catch let error as HTTPTransportError {
            // Its description carries the URL (path included); keep only curl's words.
            throw DeliveryError.transport(error.message, retryable: error.retryable)
        }
    }
}

/// Results written by the delivery threads, read after they all finished.
private final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private var results: [DeliveryResult?]

    init(count: Int) { results = Array(repeating: nil, count: count) }

    func set(_ index: Int, _ result: DeliveryResult) { lock.withLock { results[index] = result } }

    var all: [DeliveryResult] { lock.withLock { results.compactMap { $0 } } }
}
