import BackupKit
import Foundation

/// What happened: a run starting, a run finishing, or a scheduled verification of the latest set.
public enum Event: String, Sendable, CaseIterable {
    case start, finish, verify
}

/// The delivery channels, in the order notify reports them.
public enum Channel: String, Sendable, CaseIterable, Comparable {
    case slack, webhook, email, pushgateway, healthcheck

    public static func < (a: Channel, b: Channel) -> Bool {
        (allCases.firstIndex(of: a) ?? 0) < (allCases.firstIndex(of: b) ?? 0)
    }

    /// Metrics, pings and the machine-read webhook see every run; people (chat, e-mail) hear about problems.
    public var defaultOnlyOn: OnlyOn {
        switch self {
        case .slack, .email: return .failure
        case .webhook, .pushgateway, .healthcheck: return .always
        }
    }

    /// The per-channel variable that overrides `NOTIFY_ONLY_ON`.
    var onlyOnVariable: String { "NOTIFY_\(rawValue.uppercased())_ONLY_ON" }
}

/// When a channel is used: `failure` means failure or partial (anything but success).
public enum OnlyOn: String, Sendable, CaseIterable {
    case failure, always

    public func wants(_ status: RunStatus?) -> Bool {
        switch self {
        case .always: return true
        case .failure: return status != .success
        }
    }
}

/// SMTP settings for the e-mail channel.
public struct MailSettings: Sendable, Equatable {
    public var url: String
    public var from: String
    public var to: [String]
    public var user: String?
    public var password: String?
}

/// Every channel's destination and policy, built from flags and NOTIFY_* variables (flags win).
public struct NotifyConfiguration: Sendable {
    public var slackWebhookURL: String?
    public var webhookURL: String?
    public var webhookSecret: String?
    public var mail: MailSettings?
    public var pushgatewayURL: String?
    public var healthcheckURL: String?
    /// The dead-man's switch for `--event verify`: a separate check, so a weekly verification never stands in for a daily backup.
    public var verifyHealthcheckURL: String?
    public var onlyOn: [Channel: OnlyOn] = [:]
    /// Seconds one attempt may take, connection included.
    public var timeout: Double = 10
    public var retries: Int = 2
    public var logTailLines: Int = 40

    public init() {}

    public func onlyOn(_ channel: Channel) -> OnlyOn { onlyOn[channel] ?? channel.defaultOnlyOn }

    /// Every secret this configuration holds (URLs, their tokens and passwords), for `Log.addSecret`.
    public var secrets: [String] {
        var out: [String] = []
        for url in [slackWebhookURL, webhookURL, mail?.url, pushgatewayURL, healthcheckURL, verifyHealthcheckURL].compactMap({ $0 }) {
            out += Self.secretParts(ofURL: url)
        }
        out += [webhookSecret, mail?.password].compactMap { $0 }
        return out
    }

    /// A URL, and the parts of it that carry credentials: password, query, and a path long enough to be a token (Slack's, healthchecks.io's).
    static func secretParts(ofURL text: String) -> [String] {
        guard let url = URLComponents(string: text) else { return [text] }
        // Not the user name: it is no secret, and redacting a word like `backup` would garble every line.
        var parts = [url.password, url.percentEncodedPassword, url.query, url.percentEncodedQuery].compactMap { $0 }
        let path = url.percentEncodedPath
        if path.count >= 8 {
            parts.append(path)
            // Each long path segment on its own too: a token must not survive a differently joined URL.
            parts += path.split(separator: "/").map(String.init).filter { $0.count >= 8 }
        }
        // The whole URL too, unless it is a bare origin (`http://pushgateway:9091`) that logs may name.
        if !parts.isEmpty || path.count > 1 || url.user != nil { parts.insert(text, at: 0) }
        return parts
    }
}

/// What the command line says; nil where a flag was not given.
public struct NotifyOptions: Sendable {
    public var slackWebhookURL: String?
    public var webhookURL: String?
    public var smtpURL: String?
    public var mailFrom: String?
    public var mailTo: String?
    public var pushgatewayURL: String?
    public var healthcheckURL: String?
    public var onlyOn: [String] = []
    public var timeout: Double?
    public var retries: Int?
    public var logTailLines: Int?

    public init() {}
}

extension NotifyConfiguration {
    /// Merges flags over the environment and validates everything, naming settings but never their values.
    public static func make(options: NotifyOptions, environment env: Environment) throws -> NotifyConfiguration {
        var config = NotifyConfiguration()
        config.slackWebhookURL = try httpURL(options.slackWebhookURL ?? env.first("NOTIFY_SLACK_WEBHOOK_URL"), "--slack-webhook-url/NOTIFY_SLACK_WEBHOOK_URL")
        config.webhookURL = try httpURL(options.webhookURL ?? env.first("NOTIFY_WEBHOOK_URL"), "--webhook-url/NOTIFY_WEBHOOK_URL")
        config.webhookSecret = env.first("NOTIFY_WEBHOOK_SECRET")
        config.pushgatewayURL = try httpURL(options.pushgatewayURL ?? env.first("NOTIFY_PUSHGATEWAY_URL"), "--pushgateway-url/NOTIFY_PUSHGATEWAY_URL")
        config.healthcheckURL = try httpURL(options.healthcheckURL ?? env.first("NOTIFY_HEALTHCHECK_URL"), "--healthcheck-url/NOTIFY_HEALTHCHECK_URL")
        config.verifyHealthcheckURL = try httpURL(env.first("NOTIFY_VERIFY_HEALTHCHECK_URL"), "NOTIFY_VERIFY_HEALTHCHECK_URL")
        config.mail = try mail(options: options, env: env)

        if let text = options.timeout.map({ "\($0)" }) ?? env.first("NOTIFY_TIMEOUT_SECONDS") {
            guard let value = Double(text), value > 0, value <= 600 else {
                throw NotifyError.configuration("--timeout/NOTIFY_TIMEOUT_SECONDS must be a number of seconds in (0, 600]")
            }
            config.timeout = value
        }
        if let text = options.retries.map({ "\($0)" }) ?? env.first("NOTIFY_RETRIES") {
            guard let value = Int(text), (0...10).contains(value) else {
                throw NotifyError.configuration("--retries/NOTIFY_RETRIES must be a whole number from 0 to 10")
            }
            config.retries = value
        }
        if let lines = options.logTailLines {
            guard (0...1000).contains(lines) else { throw NotifyError.configuration("--log-tail-lines must be from 0 to 1000") }
            config.logTailLines = lines
        }
        config.onlyOn = try onlyOn(options.onlyOn, env: env)
        return config
    }

    /// Precedence, per channel: `--only-on CHANNEL=WHEN`, NOTIFY_<CHANNEL>_ONLY_ON, `--only-on WHEN`, NOTIFY_ONLY_ON, the channel's default.
    static func onlyOn(_ flags: [String], env: Environment) throws -> [Channel: OnlyOn] {
        func parse(_ text: String, _ setting: String) throws -> OnlyOn {
            guard let value = OnlyOn(rawValue: text.trimmingCharacters(in: .whitespaces).lowercased()) else {
                throw NotifyError.configuration("\(setting) must be failure or always, not \(text)")
            }
            return value
        }
        var flagGlobal: OnlyOn?
        var flagPerChannel: [Channel: OnlyOn] = [:]
        for flag in flags {
            if let equals = flag.firstIndex(of: "=") {
                let name = String(flag[..<equals]).lowercased()
                guard let channel = Channel(rawValue: name) else {
                    let names = Channel.allCases.map(\.rawValue).joined(separator: ", ")
                    throw NotifyError.configuration("--only-on: unknown channel \(name) (one of \(names))")
                }
                flagPerChannel[channel] = try parse(String(flag[flag.index(after: equals)...]), "--only-on \(name)")
            } else {
                flagGlobal = try parse(flag, "--only-on")
            }
        }
        let envGlobal = try env.first("NOTIFY_ONLY_ON").map { try parse($0, "NOTIFY_ONLY_ON") }
        var result: [Channel: OnlyOn] = [:]
        for channel in Channel.allCases {
            let envChannel = try env.first(channel.onlyOnVariable).map { try parse($0, channel.onlyOnVariable) }
            result[channel] = flagPerChannel[channel] ?? envChannel ?? flagGlobal ?? envGlobal ?? channel.defaultOnlyOn
        }
        return result
    }

    static func httpURL(_ text: String?, _ setting: String) throws -> String? {
        guard let text, !text.isEmpty else { return nil }
        guard let url = URLComponents(string: text), let scheme = url.scheme?.lowercased(), ["http", "https"].contains(scheme),
            let host = url.host, !host.isEmpty
        else {
            throw NotifyError.configuration("\(setting) is not an http:// or https:// URL")
        }
        return text
    }

    static func mail(options: NotifyOptions, env: Environment) throws -> MailSettings? {
        let url = options.smtpURL ?? env.first("NOTIFY_SMTP_URL")
        let from = options.mailFrom ?? env.first("NOTIFY_MAIL_FROM")
        let toList = options.mailTo ?? env.first("NOTIFY_MAIL_TO")
        guard let url, !url.isEmpty else {
            if from != nil || toList != nil {
                throw NotifyError.configuration("NOTIFY_MAIL_FROM/NOTIFY_MAIL_TO are set but NOTIFY_SMTP_URL is not")
            }
            return nil
        }
        guard let parts = URLComponents(string: url), let scheme = parts.scheme?.lowercased(), ["smtp", "smtps"].contains(scheme),
            let host = parts.host, !host.isEmpty
        else {
            throw NotifyError.configuration("--smtp-url/NOTIFY_SMTP_URL is not an smtp:// or smtps:// URL")
        }
        guard let from, isAddress(from) else {
            throw NotifyError.configuration("NOTIFY_MAIL_FROM must be one e-mail address when NOTIFY_SMTP_URL is set")
        }
        let to = (toList ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !to.isEmpty, to.allSatisfy(isAddress) else {
            throw NotifyError.configuration("NOTIFY_MAIL_TO must be a comma-separated list of e-mail addresses when NOTIFY_SMTP_URL is set")
        }
        return MailSettings(url: url, from: from, to: to, user: env.first("NOTIFY_SMTP_USER"), password: env.first("NOTIFY_SMTP_PASSWORD"))
    }

    /// A bare address (`ops@example.com`): no display name, no spaces or line breaks that could inject headers.
    static func isAddress(_ text: String) -> Bool {
        let parts = text.split(separator: "@", omittingEmptySubsequences: false)
        return parts.count == 2 && !parts[0].isEmpty && !parts[1].isEmpty
            && text.allSatisfy { $0.isASCII && !$0.isWhitespace && !"<>,;\"()".contains($0) }
    }
}
