import BackupKit
import Foundation
import Testing

@testable import Notify

@Suite struct ConfigurationTests {
    static let allChannels: [String: String] = [
        "NOTIFY_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/slacktoken123",
        "NOTIFY_WEBHOOK_URL": "https://hooks.example.com/kdl?token=querytoken456",
        "NOTIFY_WEBHOOK_SECRET": "webhook-signing-secret",
        "NOTIFY_SMTP_URL": "smtp://mail.example.com:587",
        "NOTIFY_SMTP_USER": "backup",
        "NOTIFY_SMTP_PASSWORD": "smtp-password-789",
        "NOTIFY_MAIL_FROM": "backup@kdl.example.com",
        "NOTIFY_MAIL_TO": "ops@example.com, dev@example.com",
        "NOTIFY_PUSHGATEWAY_URL": "http://pushgateway.monitoring:9091/",
        "NOTIFY_HEALTHCHECK_URL": "https://hc-ping.com/6f1c2d3e-0000-4000-8000-deadbeefcafe",
    ]

    @Test func readsEveryChannelFromTheEnvironment() throws {
        let c = try NotifyConfiguration.make(options: NotifyOptions(), environment: Environment(Self.allChannels))
        #expect(c.slackWebhookURL == Self.allChannels["NOTIFY_SLACK_WEBHOOK_URL"])
        #expect(c.mail == MailSettings(url: "smtp://mail.example.com:587", from: "backup@kdl.example.com", to: ["ops@example.com", "dev@example.com"], user: "backup", password: "smtp-password-789"))
        #expect(c.onlyOn(.slack) == .failure && c.onlyOn(.email) == .failure)
        #expect(c.onlyOn(.pushgateway) == .always && c.onlyOn(.healthcheck) == .always && c.onlyOn(.webhook) == .always)
        #expect(c.timeout == 10 && c.retries == 2)
    }

    @Test func flagsWinOverTheEnvironment() throws {
        var options = NotifyOptions()
        options.slackWebhookURL = "https://hooks.slack.com/services/flag"
        options.timeout = 3
        let c = try NotifyConfiguration.make(options: options, environment: Environment(Self.allChannels.merging(["NOTIFY_TIMEOUT_SECONDS": "7"]) { $1 }))
        #expect(c.slackWebhookURL == "https://hooks.slack.com/services/flag")
        #expect(c.timeout == 3)
    }

    @Test func onlyOnPrecedenceIsChannelFlagChannelVariableGlobalFlagGlobalVariable() throws {
        let env = Environment(["NOTIFY_ONLY_ON": "always", "NOTIFY_EMAIL_ONLY_ON": "failure", "NOTIFY_WEBHOOK_ONLY_ON": "failure"])
        let c = try NotifyConfiguration.make(options: { var o = NotifyOptions(); o.onlyOn = ["webhook=always", "failure"]; return o }(), environment: env)
        #expect(c.onlyOn(.webhook) == .always)  // channel flag
        #expect(c.onlyOn(.email) == .failure)  // channel variable
        #expect(c.onlyOn(.slack) == .failure)  // global flag beats global variable
        let g = try NotifyConfiguration.make(options: NotifyOptions(), environment: env)
        #expect(g.onlyOn(.slack) == .always)  // global variable beats the default
    }

    @Test(arguments: [
        (["NOTIFY_SLACK_WEBHOOK_URL": "hooks.slack.com/services/secretpath"], "NOTIFY_SLACK_WEBHOOK_URL"),
        (["NOTIFY_PUSHGATEWAY_URL": "ftp://x/y"], "NOTIFY_PUSHGATEWAY_URL"),
        (["NOTIFY_SMTP_URL": "http://mail.example.com", "NOTIFY_MAIL_FROM": "a@b", "NOTIFY_MAIL_TO": "c@d"], "NOTIFY_SMTP_URL"),
        (["NOTIFY_SMTP_URL": "smtp://mail.example.com", "NOTIFY_MAIL_TO": "c@d"], "NOTIFY_MAIL_FROM"),
        (["NOTIFY_SMTP_URL": "smtp://mail.example.com", "NOTIFY_MAIL_FROM": "a@b", "NOTIFY_MAIL_TO": "c@d\r\nBcc: e@f"], "NOTIFY_MAIL_TO"),
        (["NOTIFY_MAIL_TO": "c@d"], "NOTIFY_SMTP_URL"),
        (["NOTIFY_ONLY_ON": "sometimes"], "NOTIFY_ONLY_ON"),
        (["NOTIFY_RETRIES": "-1"], "NOTIFY_RETRIES"),
        (["NOTIFY_TIMEOUT_SECONDS": "0"], "NOTIFY_TIMEOUT_SECONDS"),
    ])
    func badSettingsAreConfigurationErrorsThatNameTheSettingButNotItsValue(env: [String: String], setting: String) {
        do {
            _ = try NotifyConfiguration.make(options: NotifyOptions(), environment: Environment(env))
            Issue.record("accepted \(env)")
        } catch let error as NotifyError {
            #expect(error.exitCode == 64)
            #expect(error.description.contains(setting), "\(error.description)")
            #expect(!error.description.contains("secretpath"))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func anUnknownChannelInOnlyOnIsAUsageError() {
        var options = NotifyOptions()
        options.onlyOn = ["teams=always"]
        #expect(throws: NotifyError.self) { try NotifyConfiguration.make(options: options, environment: Environment([:])) }
    }

    @Test func secretsIncludeURLTokensAndPasswords() throws {
        let c = try NotifyConfiguration.make(options: NotifyOptions(), environment: Environment(Self.allChannels))
        let secrets = Set(c.secrets)
        for expected in ["slacktoken123", "token=querytoken456", "webhook-signing-secret", "smtp-password-789", "6f1c2d3e-0000-4000-8000-deadbeefcafe"] {
            #expect(secrets.contains(expected), "\(expected)")
        }
    }
}

@Suite struct DeliveryPlanTests {
    static func plan(_ name: String, event: Event = .finish, env: [String: String] = ConfigurationTests.allChannels) throws -> [Delivery] {
        let c = try NotifyConfiguration.make(options: NotifyOptions(), environment: Environment(env))
        var n = try Fixtures.report(name, event: event)
        if event == .start { n.status = nil }
        return DeliveryPlan.make(n, configuration: c)
    }

    static func url(_ d: Delivery) -> String? {
        if case .http(let request) = d.payload { return request.url }
        return nil
    }

    @Test func successGoesOnlyToTheAlwaysChannels() throws {
        let plan = try Self.plan("success")
        #expect(plan.map(\.channel) == [.webhook, .pushgateway, .healthcheck])
        #expect(Self.url(plan[1]) == "http://pushgateway.monitoring:9091/metrics/job/kdl_backup")
        #expect(Self.url(plan[2]) == "https://hc-ping.com/6f1c2d3e-0000-4000-8000-deadbeefcafe")
    }

    @Test(arguments: ["partial", "failure"])
    func problemsGoEverywhereAndPingFail(name: String) throws {
        let plan = try Self.plan(name)
        #expect(plan.map(\.channel) == [.slack, .webhook, .email, .pushgateway, .healthcheck])
        #expect(Self.url(plan[4]) == "https://hc-ping.com/6f1c2d3e-0000-4000-8000-deadbeefcafe/fail")
    }

    @Test func startOnlyPingsStart() throws {
        let plan = try Self.plan("success", event: .start)
        #expect(plan.map(\.channel) == [.healthcheck])
        #expect(Self.url(plan[0]) == "https://hc-ping.com/6f1c2d3e-0000-4000-8000-deadbeefcafe/start")
    }

    @Test func verifyPingsOnlyItsOwnCheck() throws {
        #expect(try Self.plan("failure", event: .verify).map(\.channel) == [.slack, .webhook, .email, .pushgateway])
        var env = ConfigurationTests.allChannels
        env["NOTIFY_VERIFY_HEALTHCHECK_URL"] = "https://hc-ping.com/verify-check-uuid"
        let plan = try Self.plan("failure", event: .verify, env: env)
        #expect(plan.last.flatMap(Self.url) == "https://hc-ping.com/verify-check-uuid/fail")
    }

    @Test func webhookIsSignedOverTheExactBody() throws {
        let plan = try Self.plan("partial")
        guard case .http(let request) = plan[1].payload, case .bytes(let body) = request.body else {
            Issue.record("webhook is not an HTTP request with a body")
            return
        }
        let signature = request.headers.first { $0.name == "X-KDL-Backup-Signature" }?.value
        let expected = "sha256=" + HMACSHA256.authenticate(body, key: Data("webhook-signing-secret".utf8)).hexString
        #expect(signature == expected)
        #expect(request.headers.contains(HTTPHeader("Content-Type", "application/json")))
    }

    @Test func previewsNameTheTargetWithoutItsToken() throws {
        let plan = try Self.plan("failure")
        let previews = plan.map(\.preview).joined()
        #expect(previews.contains("# slack: POST https://hooks.slack.com/[REDACTED]"))
        #expect(!previews.contains("slacktoken123"))
        #expect(!previews.contains("querytoken456"))
        #expect(!previews.contains("deadbeefcafe"))
    }
}

@Suite struct DispatcherTests {
    static func deliveries(_ channels: [Channel], timeout: Double = 5) -> [Delivery] {
        channels.map { channel in
            let request = HTTPRequest(method: "POST", url: "http://127.0.0.1:9/\(channel.rawValue)", body: .bytes(Data("{}".utf8)), timeout: timeout)
            return Delivery(channel: channel, payload: .http(request), timeout: timeout)
        }
    }

    @Test func serverErrorsAreRetriedThenReportedWhileOtherChannelsDeliver() {
        let http = FakeHTTP { request in
            request.url.hasSuffix("/webhook") ? HTTPResponse(status: 500, body: Data("boom".utf8)) : HTTPResponse(status: 200)
        }
        let dispatcher = Dispatcher(http: http, mail: FakeMail(), retry: RetryPolicy(retries: 2), sleeper: NoSleep())
        let results = dispatcher.deliver(Self.deliveries([.slack, .webhook, .pushgateway]))
        #expect(results.map(\.channel) == [.slack, .webhook, .pushgateway])
        #expect(results.map(\.delivered) == [true, false, true])
        #expect(results[1].attempts == 3)
        #expect(results[1].error == "HTTP 500: boom")
        #expect(http.requests.filter { $0.url.hasSuffix("/webhook") }.count == 3)
    }

    @Test func clientErrorsAreNotRetried() {
        let http = FakeHTTP { _ in HTTPResponse(status: 404) }
        let results = Dispatcher(http: http, mail: FakeMail(), retry: RetryPolicy(retries: 3), sleeper: NoSleep()).deliver(Self.deliveries([.slack]))
        #expect(results[0].attempts == 1)
        #expect(results[0].error == "HTTP 404")
    }

    @Test func transportErrorsLoseTheURLAndKeepCurlsWords() {
        let http = FakeHTTP { request in
            throw HTTPTransportError(code: 28, message: "Timeout was reached", url: request.url, retryable: true)
        }
        let results = Dispatcher(http: http, mail: FakeMail(), retry: RetryPolicy(retries: 1), sleeper: NoSleep()).deliver(Self.deliveries([.slack]))
        #expect(results[0].attempts == 2)
        #expect(results[0].error == "Timeout was reached")
    }

    @Test func mailGoesThroughTheMailTransport() throws {
        let settings = MailSettings(url: "smtp://127.0.0.1:2525", from: "a@b.c", to: ["d@e.f"], user: nil, password: nil)
        let mail = FakeMail(failure: HTTPTransportError(code: 7, message: "Couldn't connect to server", url: "smtp://127.0.0.1:2525", retryable: true))
        let results = Dispatcher(http: FakeHTTP(), mail: mail, retry: RetryPolicy(retries: 1), sleeper: NoSleep())
            .deliver([Delivery(channel: .email, payload: .mail(settings, Data("hi".utf8)), timeout: 5)])
        #expect(results[0].error == "Couldn't connect to server")
        #expect(mail.sent.count == 2)
        #expect(mail.sent[0].to == ["d@e.f"])
    }
}

@Suite struct NotifierTests {
    static func notifier(_ env: [String: String], http: FakeHTTP, mail: FakeMail = FakeMail(), log: Log, out: OutputBox) -> Notifier {
        Notifier(environment: Environment(env), http: http, mail: mail, sleeper: NoSleep(), log: log, now: Fixtures.now, output: { out.append($0) })
    }

    @Test func aFailedChannelIsReportedButExitsZeroUnlessStrict() throws {
        let captured = try CapturedLog()
        let out = OutputBox()
        let http = FakeHTTP { $0.url.contains("hooks.slack.com") ? HTTPResponse(status: 500) : HTTPResponse(status: 200) }
        let notifier = Self.notifier(ConfigurationTests.allChannels, http: http, log: captured.log, out: out)
        var request = NotifyRequest(event: .finish)
        request.manifestPath = Fixtures.path("partial")
        let results = try notifier.run(request)
        #expect(results.filter(\.delivered).map(\.channel) == [.webhook, .email, .pushgateway, .healthcheck])
        #expect(captured.text.contains("level=warn tool=notify msg=\"notification not delivered\" channel=slack"))
        #expect(out.value.contains(#""channel":"slack","delivered":false"#))

        request.strict = true
        #expect(throws: NotifyError.deliveryFailed(["slack"])) { try notifier.run(request) }
        #expect(NotifyError.deliveryFailed(["slack"]).exitCode == 69)
    }

    @Test func noSecretReachesTheLogOrStdout() throws {
        let captured = try CapturedLog()
        let out = OutputBox()
        let http = FakeHTTP { request in
            throw HTTPTransportError(code: 7, message: "could not connect to \(request.url)", url: request.url, retryable: true)
        }
        let mail = FakeMail(failure: HTTPTransportError(code: 67, message: "Login denied for smtp-password-789", url: "smtp://x", retryable: false))
        var request = NotifyRequest(event: .finish)
        request.manifestPath = Fixtures.path("failure")
        try Self.notifier(ConfigurationTests.allChannels, http: http, mail: mail, log: captured.log, out: out).run(request)
        request.dryRun = true
        try Self.notifier(ConfigurationTests.allChannels, http: http, mail: mail, log: captured.log, out: out).run(request)
        let everything = captured.text + out.value
        #expect(everything.contains("[REDACTED]"))
        for secret in ["slacktoken123", "querytoken456", "webhook-signing-secret", "smtp-password-789", "deadbeefcafe"] {
            #expect(!everything.contains(secret), "\(secret) leaked")
        }
    }

    @Test func finishNeedsAStatusFromTheFlagOrTheManifest() throws {
        let captured = try CapturedLog()
        let notifier = Self.notifier([:], http: FakeHTTP(), log: captured.log, out: OutputBox())
        #expect(throws: NotifyError.self) { try notifier.run(NotifyRequest(event: .finish)) }
        var missing = NotifyRequest(event: .finish)
        missing.manifestPath = "/nonexistent/manifest.json"
        #expect(throws: NotifyError.manifestMissing("/nonexistent/manifest.json")) { try notifier.run(missing) }
        missing.status = .failure  // with a status, the alert still goes out without the manifest
        #expect(try notifier.run(missing).isEmpty)
        #expect(captured.text.contains("sending without the manifest"))
    }

    @Test func locationAndIdComeFromTheBackupsVariables() throws {
        let http = FakeHTTP()
        let env = ["NOTIFY_WEBHOOK_URL": "http://127.0.0.1:9/hook", "BACKUP_ID": "20250108T020000Z", "BUCKET_NAME": "kdl-backups"]
        var request = NotifyRequest(event: .finish)
        request.status = .failure
        try Self.notifier(env, http: http, log: try CapturedLog().log, out: OutputBox()).run(request)
        guard case .bytes(let body) = http.requests.first?.body else {
            Issue.record("no webhook request")
            return
        }
        let json = try JSONSerialization.jsonObject(with: body) as? [String: Any]
        #expect(json?["backupId"] as? String == "20250108T020000Z")
        #expect(json?["location"] as? String == "s3://kdl-backups/kdl-backup/20250108T020000Z/")
        #expect(json?["totalBytes"] is NSNull)
    }
}

@Suite struct LogTailTests {
    @Test func readsOnlyTheLastLinesOfALargeFile() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("tail-\(UUID().uuidString).log")
        defer { try? FileManager.default.removeItem(at: url) }
        let lines = (1...20_000).map { "ts=2025-01-07T02:00:00Z level=info step=\($0) msg=\"some padding text\"" }
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: url)
        #expect(try LogTail.read(path: url.path, lines: 3) == Array(lines.suffix(3)))
    }

    @Test func aMissingFileIsReported() {
        #expect(throws: NotifyError.logTailUnreadable("/nonexistent.log", "no such file")) { try LogTail.read(path: "/nonexistent.log", lines: 5) }
    }
}
