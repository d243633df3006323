import BackupKit
import Foundation

/// What `restore.sh verify` found, for `--event verify`.
public struct VerifyInfo: Sendable, Equatable {
    /// Seconds between the verified set's finish and now; nil when there is no set at all.
    public var setAgeSeconds: Double?
    /// One line per check that ran (`sha256 of 14 objects`, `pg_restore --list`).
    public var checked: [String]

    public init(setAgeSeconds: Double? = nil, checked: [String] = []) {
        self.setAgeSeconds = setAgeSeconds
        self.checked = checked
    }
}

/// One thing to tell every channel about: built once, rendered per channel.
public struct RunReport: Sendable {
    public var event: Event
    /// nil only for `start`.
    public var status: RunStatus?
    public var manifest: Manifest?
    /// The set's id when there is no manifest (a run that failed before writing one).
    public var backupId: String?
    /// `s3://bucket/prefix/id/`, when known.
    public var location: String?
    public var logTail: [String]
    /// When notify runs: the metrics' fallback timestamp and the e-mail's Date.
    public var time: Date
    public var verify: VerifyInfo?

    public init(
        event: Event, status: RunStatus? = nil, manifest: Manifest? = nil, backupId: String? = nil, location: String? = nil,
        logTail: [String] = [], time: Date, verify: VerifyInfo? = nil
    ) {
        self.event = event
        self.status = status
        self.manifest = manifest
        self.backupId = backupId
        self.location = location
        self.logTail = logTail
        self.time = time
        self.verify = verify
    }

    public var id: String { manifest?.id ?? backupId ?? "unknown" }

    public var failedComponents: [Manifest.Component] { manifest?.components.filter { $0.status == .failure } ?? [] }

    /// One line a person reads first: chat header, e-mail subject, ping body.
    public var headline: String {
        switch event {
        case .start:
            return "KDL backup \(id) started"
        case .finish:
            switch status ?? .failure {
            case .success: return "KDL backup \(id) succeeded"
            case .partial:
                let total = manifest?.components.filter { $0.status != .skipped }.count ?? 0
                return "KDL backup \(id) partially failed (\(failedComponents.count) of \(total) components failed)"
            case .failure: return "KDL backup \(id) failed"
            }
        case .verify:
            let set = manifest == nil && backupId == nil ? "no backup set found" : "set \(id)"
            return status == .success ? "KDL backup verification passed (\(set))" : "KDL backup verification failed (\(set))"
        }
    }
}

/// Human forms of durations and sizes shared by chat and e-mail.
enum Human {
    static func duration(_ seconds: Double?) -> String {
        guard let seconds else { return "unknown" }
        if seconds < 60 { return String(format: "%.1fs", seconds) }
        let total = Int(seconds.rounded())
        let (h, m, s) = (total / 3600, total % 3600 / 60, total % 60)
        if h > 0 { return String(format: "%dh %02dm %02ds", h, m, s) }
        return String(format: "%dm %02ds", m, s)
    }

    static func age(_ seconds: Double?) -> String {
        guard let seconds else { return "unknown" }
        if seconds < 2 * 3600 { return duration(seconds) }
        if seconds < 2 * 86400 { return String(format: "%.1f hours", seconds / 3600) }
        return String(format: "%.1f days", seconds / 86400)
    }

    static func size(_ bytes: Int64) -> String { ByteSize.format(bytes) }

    static func objects(_ count: Int) -> String { count == 1 ? "1 object" : "\(count) objects" }

    /// Keeps the first `limit` characters of one line (errors can be long).
    static func clip(_ text: String, _ limit: Int) -> String {
        let line = text.replacingOccurrences(of: "\n", with: " ")
        return line.count <= limit ? line : String(line.prefix(limit - 1)) + "…"
    }

    static func rounded(_ value: Double) -> Double { (value * 1000).rounded() / 1000 }
}
