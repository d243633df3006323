import ArgumentParser
import BackupKit
import Foundation

extension Event: ExpressibleByArgument {}
extension RunStatus: ExpressibleByArgument {}

/// `notify`: tell Slack, a webhook, e-mail, a Pushgateway and a dead-man's switch how a backup run went.
public struct NotifyCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "notify",
        abstract: "Send backup-run alerts and metrics.",
        discussion: """
            Channels are enabled by their flag or NOTIFY_* variable; prefer the variables, since URLs carry tokens: \
            NOTIFY_SLACK_WEBHOOK_URL, NOTIFY_WEBHOOK_URL (signed with NOTIFY_WEBHOOK_SECRET), NOTIFY_SMTP_URL \
            (with NOTIFY_SMTP_USER, NOTIFY_SMTP_PASSWORD, NOTIFY_MAIL_FROM, NOTIFY_MAIL_TO), NOTIFY_PUSHGATEWAY_URL, \
            NOTIFY_HEALTHCHECK_URL (NOTIFY_VERIFY_HEALTHCHECK_URL for --event verify). NOTIFY_CA_FILE trusts a private CA.

            A channel that cannot be reached is reported on stderr; notify still exits 0 unless --strict (then 69). \
            docs/notifications.md describes every payload.
            """,
        version: KDLBackupVersion.current)

    // Optional only so that an unknown option is reported before a missing --event; run() requires it.
    @Option(help: "What happened: start, finish or verify (required).")
    var event: Event?

    @Option(help: "The run's outcome for finish (success, partial, failure; default: the manifest's) or verify (success, failure).")
    var status: RunStatus?

    @Option(help: ArgumentHelp("The backup set's manifest.json.", valueName: "file"))
    var manifest: String?

    @Option(name: .customLong("log-tail"), help: ArgumentHelp("A log file whose last lines are attached when the run did not succeed.", valueName: "file"))
    var logTail: String?

    @Option(name: .customLong("log-tail-lines"), help: "How many lines of --log-tail to attach (default 40).")
    var logTailLines: Int?

    @Option(name: .customLong("backup-id"), help: "The set's id when there is no manifest (default: BACKUP_ID).")
    var backupId: String?

    @Option(name: .customLong("slack-webhook-url"), help: ArgumentHelp("Slack incoming-webhook URL (or NOTIFY_SLACK_WEBHOOK_URL).", valueName: "url"))
    var slackWebhookURL: String?

    @Option(name: .customLong("webhook-url"), help: ArgumentHelp("Generic JSON webhook URL (or NOTIFY_WEBHOOK_URL).", valueName: "url"))
    var webhookURL: String?

    @Option(name: .customLong("smtp-url"), help: ArgumentHelp("SMTP server, smtp:// (STARTTLS when offered) or smtps:// (or NOTIFY_SMTP_URL).", valueName: "url"))
    var smtpURL: String?

    @Option(name: .customLong("mail-from"), help: ArgumentHelp("Sender address (or NOTIFY_MAIL_FROM).", valueName: "address"))
    var mailFrom: String?

    @Option(name: .customLong("mail-to"), help: ArgumentHelp("Comma-separated recipients (or NOTIFY_MAIL_TO).", valueName: "addresses"))
    var mailTo: String?

    @Option(name: .customLong("pushgateway-url"), help: ArgumentHelp("Prometheus Pushgateway base URL (or NOTIFY_PUSHGATEWAY_URL).", valueName: "url"))
    var pushgatewayURL: String?

    @Option(name: .customLong("healthcheck-url"), help: ArgumentHelp("Dead-man's-switch ping URL, healthchecks.io style (or NOTIFY_HEALTHCHECK_URL).", valueName: "url"))
    var healthcheckURL: String?

    @Option(
        name: .customLong("only-on"),
        help: ArgumentHelp(
            "When to notify: failure (failure or partial) or always; CHANNEL=WHEN for one channel (slack, webhook, email, pushgateway, healthcheck). Repeatable.",
            valueName: "[channel=]when"))
    var onlyOn: [String] = []

    @Option(help: "Seconds one delivery attempt may take (default 10, or NOTIFY_TIMEOUT_SECONDS).")
    var timeout: Double?

    @Option(help: "Retries per channel after a failed attempt, with backoff (default 2, or NOTIFY_RETRIES).")
    var retries: Int?

    @Option(name: .customLong("set-age-seconds"), help: "verify: age of the latest backup set in seconds.")
    var setAgeSeconds: Double?

    @Option(help: ArgumentHelp("verify: one check that ran, as a line of text. Repeatable.", valueName: "text"))
    var checked: [String] = []

    @Flag(help: "Exit 69 when any channel could not be notified.")
    var strict = false

    @Flag(name: .customLong("dry-run"), help: "Print what would be sent (secrets redacted) and send nothing.")
    var dryRun = false

    public init() {}

    public func validate() throws {
        if let logTailLines, !(0...1000).contains(logTailLines) { throw ValidationError("--log-tail-lines must be from 0 to 1000") }
        if let setAgeSeconds, !(setAgeSeconds >= 0 && setAgeSeconds.isFinite) { throw ValidationError("--set-age-seconds must be a number of seconds >= 0") }
        if event != .verify, setAgeSeconds != nil || !checked.isEmpty {
            throw ValidationError("--set-age-seconds and --checked go with --event verify")
        }
    }

    public func run() throws {
        guard let event else { throw ValidationError("--event start|finish|verify is required") }
        var request = NotifyRequest(event: event)
        request.status = status
        request.manifestPath = manifest
        request.logTailPath = logTail
        request.backupId = backupId
        request.strict = strict
        request.dryRun = dryRun
        if event == .verify { request.verify = VerifyInfo(setAgeSeconds: setAgeSeconds, checked: checked) }
        request.options.slackWebhookURL = slackWebhookURL
        request.options.webhookURL = webhookURL
        request.options.smtpURL = smtpURL
        request.options.mailFrom = mailFrom
        request.options.mailTo = mailTo
        request.options.pushgatewayURL = pushgatewayURL
        request.options.healthcheckURL = healthcheckURL
        request.options.onlyOn = onlyOn
        request.options.timeout = timeout
        request.options.retries = retries
        request.options.logTailLines = logTailLines

        try runReportingErrors(tool: "notify") {
            let environment = Environment.process
            var options = HTTPClientOptions()
            if let caFile = environment.first("NOTIFY_CA_FILE") {
                guard FileManager.default.isReadableFile(atPath: caFile) else {
                    throw NotifyError.configuration("NOTIFY_CA_FILE \(caFile) is not a readable file")
                }
                options.caFile = caFile
            }
            let transport = CurlTransport(options: options)
            let notifier = Notifier(
                environment: environment, http: transport, mail: transport, log: Log.standardError, now: Date(),
                output: { FileHandle.standardOutput.write(Data($0.utf8)) })
            try notifier.run(request)
        }
    }
}
