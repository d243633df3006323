import BackupKit
import Foundation

/// The body each channel sends, built from one `RunReport` without touching the network.
/// docs/notifications.md documents every format; the unit tests pin them.
public enum Payloads {
    /// The webhook body's schema name; bump the version on any incompatible change.
    public static let webhookSchema = "kdl-backup/notification/v1"

    // MARK: - Slack

    static let red = "#d92d20"
    static let green = "#2eb67d"
    static let grey = "#9e9e9e"

    /// Slack's mrkdwn needs only &, < and > escaped.
    static func slackEscape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    /// An incoming-webhook message: a header and summary fields, then one coloured attachment per component
    /// (failures first, in red) and, unless the run succeeded, the log tail.
    public static func slack(_ n: RunReport) -> JSONValue {
        var fields: [(String, String)] = [("Status", (n.status?.rawValue ?? n.event.rawValue)), ("Backup id", n.id)]
        var attachments: [JSONValue] = []
        switch n.event {
        case .start, .finish:
            fields.append(("Duration", Human.duration(n.manifest?.durationSeconds)))
            fields.append(("Total size", Human.size(n.manifest?.totalBytes ?? 0)))
            for component in n.manifest?.componentsFailuresFirst ?? [] {
                attachments.append(slackAttachment(color: color(component.status), text: componentLine(component, mrkdwn: true)))
            }
        case .verify:
            fields.append(("Set age", Human.age(n.verify?.setAgeSeconds)))
            let checked = n.verify?.checked ?? []
            if !checked.isEmpty {
                let list = checked.map { "• " + slackEscape(Human.clip($0, 300)) }.joined(separator: "\n")
                attachments.append(slackAttachment(color: n.status == .success ? green : red, text: "*Checked*\n" + list))
            }
        }
        if n.status != .success, !n.logTail.isEmpty {
            attachments.append(slackAttachment(color: red, text: "*Log tail*\n```\n" + slackEscape(tail(n.logTail, maxCharacters: 2800)) + "\n```"))
        }
        let fieldBlocks = fields.map { JSONValue.object(["type": .string("mrkdwn"), "text": .string("*\($0.0)*\n\(slackEscape($0.1))")]) }
        return .object([
            "text": .string(n.headline),
            "blocks": .array([
                .object(["type": .string("header"), "text": .object(["type": .string("plain_text"), "text": .string(Human.clip(n.headline, 150))])]),
                .object(["type": .string("section"), "fields": .array(fieldBlocks)]),
            ]),
            "attachments": .array(attachments),
        ])
    }

    static func slackAttachment(color: String, text: String) -> JSONValue {
        .object([
            "color": .string(color),
            "blocks": .array([.object(["type": .string("section"), "text": .object(["type": .string("mrkdwn"), "text": .string(text)])])]),
        ])
    }

    static func color(_ status: Manifest.ComponentStatus) -> String {
        switch status {
        case .failure: return red
        case .success: return green
        case .skipped: return grey
        }
    }

    /// `gitea: failure · 1.2 MiB · 2 objects · 12.3s` plus the error; the one line chat and e-mail share.
    static func componentLine(_ c: Manifest.Component, mrkdwn: Bool) -> String {
        let name = mrkdwn ? "*\(slackEscape(c.name))*" : c.name
        var line = "\(name): \(c.status.rawValue)"
        if c.status != .skipped {
            line += " · \(Human.size(c.bytes)) · \(Human.objects(c.objects.count)) · \(Human.duration(c.seconds))"
        }
        if let error = c.error, !error.isEmpty {
            let clipped = Human.clip(error, 500)
            line += mrkdwn ? "\n> \(slackEscape(clipped))" : "\n    error: \(clipped)"
        }
        return line
    }

    /// The last lines that fit in `maxCharacters` (Slack sections hold 3,000).
    static func tail(_ lines: [String], maxCharacters: Int) -> String {
        var kept: [String] = []
        var size = 0
        for line in lines.reversed() {
            let clipped = Human.clip(line, 400)
            guard size + clipped.count + 1 <= maxCharacters else { break }
            kept.append(clipped)
            size += clipped.count + 1
        }
        return kept.reversed().joined(separator: "\n")
    }

    // MARK: - Webhook

    /// The generic webhook's versioned body (`kdl-backup/notification/v1`).
    public static func webhook(_ n: RunReport) -> JSONValue {
        let m = n.manifest
        let components: [JSONValue] = (m?.components ?? []).map { c in
            .object([
                "name": .string(c.name),
                "status": .string(c.status.rawValue),
                "seconds": .optional(c.seconds.map(Human.rounded)),
                "bytes": .int(c.bytes),
                "objects": .int(Int64(c.objects.count)),
                "error": .optional(c.error),
            ])
        }
        var body: [String: JSONValue] = [
            "schema": .string(webhookSchema),
            "event": .string(n.event.rawValue),
            "status": .optional(n.status?.rawValue),
            "backupId": .string(n.id),
            "summary": .string(n.headline),
            "startedAt": .optional(m?.startedAt.map(UTCTime.iso8601)),
            "finishedAt": .optional(m?.finishedAt.map(UTCTime.iso8601)),
            "durationSeconds": .optional(m?.durationSeconds.map(Human.rounded)),
            "totalBytes": .optional(m?.totalBytes),
            "encrypted": m.map { .bool($0.encryption != nil) } ?? .null,
            "location": .optional(n.location),
            "components": .array(components),
            "failedComponents": .array(n.failedComponents.map { .string($0.name) }),
            "logTail": .array(n.status == .success ? [] : n.logTail.map { .string($0) }),
            "notifier": .object(["name": .string("notify"), "version": .string(KDLBackupVersion.current)]),
        ]
        if n.event == .verify {
            body["verify"] = .object([
                "setAgeSeconds": .optional(n.verify?.setAgeSeconds.map(Human.rounded)),
                "checked": .array((n.verify?.checked ?? []).map { .string($0) }),
            ])
        }
        return .object(body)
    }

    /// `sha256=<hex>` of the exact body bytes, keyed with NOTIFY_WEBHOOK_SECRET.
    public static func webhookSignature(body: Data, secret: String) -> String {
        "sha256=" + HMACSHA256.authenticate(body, key: Data(secret.utf8)).hexString
    }

    // MARK: - Pushgateway

    /// Prometheus text exposition (0.0.4) of the run, with HELP and TYPE for every metric.
    /// `kdl_backup_last_success_timestamp_seconds` appears only on success: notify pushes with POST,
    /// which replaces only the metrics it sends, so the last success survives a failed run.
    public static func exposition(_ n: RunReport) -> String {
        var out = ""
        func gauge(_ name: String, _ help: String, _ samples: [(labels: String, value: String)]) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) gauge\n"
            for sample in samples { out += "\(name)\(sample.labels) \(sample.value)\n" }
        }
        let finished = n.manifest?.finishedAt ?? n.time
        switch n.event {
        case .start:
            return ""
        case .finish:
            let status = n.status ?? .failure
            gauge("kdl_backup_last_run_timestamp_seconds", "Unix time the last backup run finished, whatever its status.", [("", number(finished.timeIntervalSince1970))])
            if status == .success {
                gauge("kdl_backup_last_success_timestamp_seconds", "Unix time the last successful backup run finished.", [("", number(finished.timeIntervalSince1970))])
            }
            gauge("kdl_backup_duration_seconds", "Wall time of the last backup run.", [("", number(n.manifest?.durationSeconds ?? 0))])
            gauge("kdl_backup_status", "Outcome of the last backup run: 1 success, 0.5 partial, 0 failure.", [("", status.metricValue)])
            let attempted = (n.manifest?.components ?? []).filter { $0.status != .skipped }
            if !attempted.isEmpty {
                gauge("kdl_backup_size_bytes", "Bytes stored for each component by the last backup run (sum of its objects).",
                    attempted.map { (label($0.name), "\($0.bytes)") })
                gauge("kdl_backup_component_success", "1 if the component was backed up by the last run, else 0.",
                    attempted.map { (label($0.name), $0.status == .success ? "1" : "0") })
            }
        case .verify:
            gauge("kdl_backup_last_verify_timestamp_seconds", "Unix time the last verification of the latest backup set ran.", [("", number(n.time.timeIntervalSince1970))])
            gauge("kdl_backup_verify_status", "Outcome of the last verification: 1 passed, 0 failed.", [("", n.status == .success ? "1" : "0")])
            if let age = n.verify?.setAgeSeconds {
                gauge("kdl_backup_latest_set_age_seconds", "Age of the latest backup set at the last verification.", [("", number(age))])
            }
        }
        return out
    }

    static func label(_ component: String) -> String {
        let escaped = component.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
        return "{component=\"\(escaped)\"}"
    }

    /// Whole numbers without a fraction, others with up to three decimals.
    static func number(_ value: Double) -> String {
        let rounded = Human.rounded(value)
        if rounded == rounded.rounded(), abs(rounded) < 1e15 { return String(Int64(rounded)) }
        return String(rounded)
    }

    // MARK: - Healthchecks ping

    /// The ping URL for this event (healthchecks.io: `/start`, success on the bare URL, `/fail` on failure or partial).
    public static func pingURL(base: String, _ n: RunReport) -> String {
        let trimmed = base.hasSuffix("/") ? String(base.dropLast()) : base
        switch n.event {
        case .start: return trimmed + "/start"
        case .finish, .verify: return n.status == .success ? trimmed : trimmed + "/fail"
        }
    }

    /// The ping's body, which healthchecks.io shows with the event: the headline, components, and on failure the log tail.
    public static func pingBody(_ n: RunReport) -> String {
        guard n.event != .start else { return "" }
        return plainReport(n, logTail: n.status != .success)
    }

    // MARK: - E-mail

    public static func emailSubject(_ n: RunReport) -> String {
        "[kdl-backup] \(n.status?.rawValue ?? n.event.rawValue): \(n.headline)"
    }

    /// The plain-text report e-mails and pings carry (LF line ends; the message builder makes them CRLF).
    public static func plainReport(_ n: RunReport, logTail: Bool = true) -> String {
        var lines = [n.headline, ""]
        func row(_ name: String, _ value: String) { lines.append((name + ":").padding(toLength: 13, withPad: " ", startingAt: 0) + value) }
        row("Status", n.status?.rawValue ?? n.event.rawValue)
        row("Backup id", n.id)
        switch n.event {
        case .start, .finish:
            if let m = n.manifest {
                if let started = m.startedAt { row("Started", UTCTime.iso8601(started)) }
                if let finished = m.finishedAt { row("Finished", UTCTime.iso8601(finished)) }
                row("Duration", Human.duration(m.durationSeconds))
                row("Total size", "\(Human.size(m.totalBytes)) (\(m.totalBytes) bytes)")
                row("Encrypted", m.encryption == nil ? "no" : "yes (age, \(m.encryption?.recipients.count ?? 0) recipient(s))")
            } else if n.event == .finish {
                row("Manifest", "none (the run ended before writing one)")
            }
            if let location = n.location { row("Location", location) }
            let components = n.manifest?.componentsFailuresFirst ?? []
            if !components.isEmpty {
                lines += ["", "Components (failures first):"]
                lines += components.map { "  " + componentLine($0, mrkdwn: false).replacingOccurrences(of: "\n", with: "\n  ") }
            }
        case .verify:
            row("Set age", Human.age(n.verify?.setAgeSeconds))
            if let location = n.location { row("Location", location) }
            let checked = n.verify?.checked ?? []
            if !checked.isEmpty {
                lines += ["", "Checked:"]
                lines += checked.map { "  - " + Human.clip($0, 300) }
            }
        }
        if logTail, n.status != .success, !n.logTail.isEmpty {
            lines += ["", "Log tail (last \(n.logTail.count) lines):"]
            lines += n.logTail.map { "  " + $0 }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// An RFC 5322 message: plain text, UTF-8, CRLF line ends.
    public static func email(_ n: RunReport, from: String, to: [String]) -> Data {
        let stamp = Int64(n.time.timeIntervalSince1970)
        let headers = [
            "From: \(from)",
            "To: \(to.joined(separator: ", "))",
            "Subject: \(encodedHeader(emailSubject(n)))",
            "Date: \(UTCTime.rfc5322(n.time))",
            "Message-ID: <kdl-backup.\(safeToken(n.id)).\(n.event.rawValue).\(stamp)@kdl-backup.invalid>",
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: 8bit",
            "X-KDL-Backup-Status: \(n.status?.rawValue ?? n.event.rawValue)",
        ]
        let body = plainReport(n).split(separator: "\n", omittingEmptySubsequences: false).joined(separator: "\r\n")
        return Data((headers.joined(separator: "\r\n") + "\r\n\r\n" + body).utf8)
    }

    /// RFC 2047 encoding when a header holds non-ASCII text.
    static func encodedHeader(_ text: String) -> String {
        let clean = text.replacingOccurrences(of: "\r", with: " ").replacingOccurrences(of: "\n", with: " ")
        guard !clean.allSatisfy(\.isASCII) else { return clean }
        return "=?utf-8?B?" + Data(clean.utf8).base64EncodedString() + "?="
    }

    static func safeToken(_ text: String) -> String {
        String(text.map { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") ? $0 : "_" })
    }
}
