import BackupKit
import Foundation

/// What one notify invocation is about, from the command line.
public struct NotifyRequest: Sendable {
    public var event: Event
    public var status: RunStatus?
    public var manifestPath: String?
    public var logTailPath: String?
    public var backupId: String?
    public var verify: VerifyInfo?
    public var strict = false
    public var dryRun = false
    public var options = NotifyOptions()

    public init(event: Event) { self.event = event }
}

/// The summary notify prints on stdout: one JSON line a script can read.
struct RunSummary: Encodable {
    struct Entry: Encodable {
        var channel: String
        var target: String
        var delivered: Bool
        var attempts: Int
        var seconds: Double
        var error: String?
    }
    var event: String
    var status: String?
    var backupId: String
    var dryRun: Bool
    var deliveries: [Entry]
}

/// Builds the notification, sends it on every wanted channel and reports; the command is a thin layer over this.
public struct Notifier {
    public var environment: Environment
    public var http: HTTPTransport
    public var mail: MailTransport
    public var sleeper: Sleeper
    public var log: Log
    public var now: Date
    /// Where results go (stdout in the command).
    public var output: @Sendable (String) -> Void

    static let tool = "notify"

    public init(
        environment: Environment, http: HTTPTransport, mail: MailTransport, sleeper: Sleeper = ThreadSleeper(), log: Log, now: Date,
        output: @escaping @Sendable (String) -> Void
    ) {
        self.environment = environment
        self.http = http
        self.mail = mail
        self.sleeper = sleeper
        self.log = log
        self.now = now
        self.output = output
    }

    /// Returns the results; throws only for bad input, or with `strict` when a channel failed.
    @discardableResult
    public func run(_ request: NotifyRequest) throws -> [DeliveryResult] {
        let configuration = try NotifyConfiguration.make(options: request.options, environment: environment)
        for secret in configuration.secrets { log.addSecret(secret) }

        let notification = try makeReport(request, configuration: configuration)
        let deliveries = DeliveryPlan.make(notification, configuration: configuration)
        logSkipped(notification, configuration: configuration, planned: deliveries)

        if request.dryRun {
            for delivery in deliveries { output(log.redact(delivery.preview)) }
            log.log(.info, tool: Self.tool, "dry run: nothing sent", [("event", notification.event.rawValue), ("channels", "\(deliveries.count)")])
            return []
        }

        let dispatcher = Dispatcher(http: http, mail: mail, retry: RetryPolicy(retries: configuration.retries, baseDelay: 1, maxDelay: 8), sleeper: sleeper)
        let log = self.log
        let results = dispatcher.deliver(deliveries) { delivery, attempt, error in
            log.log(.info, tool: Self.tool, "retrying", [("channel", delivery.channel.rawValue), ("target", delivery.target), ("attempt", "\(attempt + 1)"), ("error", error)])
        }
        for result in results {
            var fields = [("channel", result.channel.rawValue), ("target", result.target), ("attempts", "\(result.attempts)"), ("seconds", String(format: "%.3f", result.seconds))]
            if let error = result.error {
                fields.append(("error", error))
                log.log(.warn, tool: Self.tool, "notification not delivered", fields)
            } else {
                log.log(.info, tool: Self.tool, "notification delivered", fields)
            }
        }
        let summary = RunSummary(
            event: notification.event.rawValue, status: notification.status?.rawValue, backupId: notification.id, dryRun: false,
            deliveries: results.map {
                .init(channel: $0.channel.rawValue, target: $0.target, delivered: $0.delivered, attempts: $0.attempts, seconds: Human.rounded($0.seconds), error: $0.error)
            })
        if let data = try? JSONOutput.encoder().encode(summary) {
            output(log.redact(String(decoding: data, as: UTF8.self)) + "\n")
        }
        let failed = results.filter { !$0.delivered }.map(\.channel.rawValue)
        if request.strict, !failed.isEmpty { throw NotifyError.deliveryFailed(failed) }
        return results
    }

    func makeReport(_ request: NotifyRequest, configuration: NotifyConfiguration) throws -> RunReport {
        var manifest: Manifest?
        if let path = request.manifestPath {
            do {
                manifest = try Manifest.load(path: path)
            } catch let error as NotifyError where request.status != nil || request.event == .verify {
                // The alert matters more than the details: say what is wrong with the manifest and send what we know.
                log.log(.warn, tool: Self.tool, "sending without the manifest", [("error", error.description)])
            }
        }
        let status: RunStatus?
        switch request.event {
        case .start:
            status = nil
        case .finish:
            guard let known = request.status ?? manifest?.status else {
                throw NotifyError.configuration("--event finish needs --status success|partial|failure (or a manifest that has one)")
            }
            status = known
        case .verify:
            guard let known = request.status else { throw NotifyError.configuration("--event verify needs --status success|failure") }
            guard known != .partial else { throw NotifyError.configuration("--event verify takes --status success or failure, not partial") }
            status = known
        }
        if request.event != .start, let manifestStatus = manifest?.status, let status, request.event == .finish, manifestStatus != status {
            log.log(.warn, tool: Self.tool, "--status differs from the manifest's; using --status", [("status", status.rawValue), ("manifest", manifestStatus.rawValue)])
        }
        let backupId = manifest?.id ?? request.backupId ?? environment.first("BACKUP_ID")
        var logTail: [String] = []
        if let path = request.logTailPath, configuration.logTailLines > 0 {
            do {
                logTail = try LogTail.read(path: path, lines: configuration.logTailLines).map(log.redact)
            } catch let error as NotifyError {
                log.log(.warn, tool: Self.tool, "sending without the log tail", [("error", error.description)])
            }
        }
        return RunReport(
            event: request.event, status: status, manifest: manifest, backupId: backupId, location: location(backupId), logTail: logTail,
            time: now, verify: request.event == .verify ? (request.verify ?? VerifyInfo()) : nil)
    }

    /// `s3://<bucket>/<prefix>/<id>/` from the backup's own variables, when both are known.
    func location(_ id: String?) -> String? {
        guard let id, let bucket = environment.first("BACKUP_S3_BUCKET", "BUCKET_NAME") else { return nil }
        let prefix = (environment.first("BACKUP_S3_PREFIX") ?? "kdl-backup").trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        return prefix.isEmpty ? "s3://\(bucket)/\(id)/" : "s3://\(bucket)/\(prefix)/\(id)/"
    }

    func logSkipped(_ n: RunReport, configuration c: NotifyConfiguration, planned: [Delivery]) {
        let configured: [(Channel, Bool)] = [
            (.slack, c.slackWebhookURL != nil), (.webhook, c.webhookURL != nil), (.email, c.mail != nil),
            (.pushgateway, c.pushgatewayURL != nil), (.healthcheck, (n.event == .verify ? c.verifyHealthcheckURL : c.healthcheckURL) != nil),
        ]
        let active = configured.filter(\.1).map(\.0)
        if active.isEmpty {
            log.log(.info, tool: Self.tool, "no notification channel configured", [("event", n.event.rawValue)])
            return
        }
        for channel in active where !planned.contains(where: { $0.channel == channel }) {
            let reason = n.event == .start ? "only the healthcheck ping hears about a start" : "only-on \(c.onlyOn(channel).rawValue)"
            log.log(.info, tool: Self.tool, "channel skipped", [("channel", channel.rawValue), ("event", n.event.rawValue), ("reason", reason)])
        }
    }
}

/// The last lines of a log file, read from its end so a large log is never loaded whole.
enum LogTail {
    static let window: UInt64 = 256 * 1024

    static func read(path: String, lines: Int) throws -> [String] {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw NotifyError.logTailUnreadable(path, FileManager.default.fileExists(atPath: path) ? "permission denied" : "no such file")
        }
        defer { try? handle.close() }
        do {
            let size = try handle.seekToEnd()
            let start = size > window ? size - window : 0
            try handle.seek(toOffset: start)
            let data = try handle.readToEnd() ?? Data()
            var all = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            if start > 0, !all.isEmpty { all.removeFirst() }  // a partial first line
            if all.last == "" { all.removeLast() }
            return Array(all.suffix(lines)).map { $0.hasSuffix("\r") ? String($0.dropLast()) : $0 }
        } catch {
            throw NotifyError.logTailUnreadable(path, error.localizedDescription)
        }
    }
}
