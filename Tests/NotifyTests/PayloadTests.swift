import BackupKit
import Foundation
import Testing

@testable import Notify

@Suite struct ManifestTests {
    @Test func readsTheSampleManifests() throws {
        let success = try Fixtures.manifest("success")
        #expect(success.id == "20250105T020000Z")
        #expect(success.status == .success)
        #expect(success.components.map(\.name) == ["gitea", "mongodb", "mlflow", "kubernetes"])
        #expect(success.components[0].bytes == 48_213_344 + 1_073_741_824)
        #expect(success.durationSeconds == 451)
        #expect(success.encryption?.recipients.count == 1)

        let failure = try Fixtures.manifest("failure")
        #expect(failure.durationSeconds == 90.5)  // fractional seconds in finishedAt
        #expect(failure.totalBytes == 0)
    }

    @Test func ordersFailuresFirstThenSuccessesThenSkipped() throws {
        let partial = try Fixtures.manifest("partial")
        #expect(partial.componentsFailuresFirst.map(\.name) == ["mongodb", "gitea", "kubernetes", "mlflow"])
    }

    @Test func aMissingManifestIsNoInput() {
        #expect(throws: NotifyError.manifestMissing("/nonexistent/manifest.json")) {
            try Manifest.load(path: "/nonexistent/manifest.json")
        }
        #expect(NotifyError.manifestMissing("x").exitCode == 66)
    }

    @Test(arguments: [
        ("{not json", "not valid JSON"),
        (#"{"format":"kdl-backup/v1","status":"success"}"#, "missing .id"),
        (#"{"format":"kdl-backup/v1","id":"x","status":"maybe"}"#, "bad value at .status"),
        (#"{"format":"other/v9","id":"x"}"#, "format other/v9"),
        (#"{"format":"kdl-backup/v1","id":"x","startedAt":"yesterday"}"#, "bad value at .startedAt"),
    ])
    func aMalformedManifestNamesWhatIsWrong(text: String, expected: String) throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("manifest-\(UUID().uuidString).json")
        try Data(text.utf8).write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        do {
            _ = try Manifest.load(path: url.path)
            Issue.record("decoded a malformed manifest")
        } catch let error as NotifyError {
            #expect(error.exitCode == 74)
            #expect(error.description.contains(expected), "\(error.description)")
        }
    }
}

@Suite struct SlackPayloadTests {
    static func attachmentTexts(_ payload: [String: Any]) -> [(color: String, text: String)] {
        let attachments = payload["attachments"] as? [[String: Any]] ?? []
        return attachments.map { attachment in
            let blocks = attachment["blocks"] as? [[String: Any]] ?? []
            let text = (blocks.first?["text"] as? [String: Any])?["text"] as? String ?? ""
            return (attachment["color"] as? String ?? "", text)
        }
    }

    @Test func partialPutsTheFailureFirstAndInRedThenTheLogTail() throws {
        let n = try Fixtures.report("partial", logTail: ["step=mongodump level=error", "a <b> & c"])
        let payload = try Fixtures.object(Payloads.slack(n))
        #expect(payload["text"] as? String == "KDL backup 20250106T020000Z partially failed (1 of 3 components failed)")
        let attachments = Self.attachmentTexts(payload)
        #expect(attachments.map(\.color) == ["#d92d20", "#2eb67d", "#2eb67d", "#9e9e9e", "#d92d20"])
        #expect(
            attachments[0].text
                == "*mongodb*: failure · 0 B · 0 objects · 30.0s\n> mongodump: server selection error: connection refused (mongodb://mongo.kdl:27017) &lt;after 3 attempts&gt; &amp; gave up"
        )
        #expect(attachments[1].text == "*gitea*: success · 1.0 GiB · 2 objects · 4m 00s")
        #expect(attachments[2].text == "*kubernetes*: success · 10.0 KiB · 2 objects · 3.8s")
        #expect(attachments[3].text == "*mlflow*: skipped")
        #expect(attachments[4].text == "*Log tail*\n```\nstep=mongodump level=error\na &lt;b&gt; &amp; c\n```")
    }

    @Test func summaryFieldsCarryStatusIdDurationAndSize() throws {
        let payload = try Fixtures.object(Payloads.slack(try Fixtures.report("success")))
        let blocks = payload["blocks"] as? [[String: Any]] ?? []
        #expect(blocks.count == 2)
        #expect((blocks[0]["text"] as? [String: Any])?["text"] as? String == "KDL backup 20250105T020000Z succeeded")
        let fields = (blocks[1]["fields"] as? [[String: Any]] ?? []).compactMap { $0["text"] as? String }
        #expect(fields == ["*Status*\nsuccess", "*Backup id*\n20250105T020000Z", "*Duration*\n7m 31s", "*Total size*\n1.0 GiB"])
    }

    @Test func successIsAllGreenAndCarriesNoLogTail() throws {
        let n = try Fixtures.report("success", logTail: ["should not be sent"])
        let attachments = Self.attachmentTexts(try Fixtures.object(Payloads.slack(n)))
        #expect(attachments.map(\.color) == Array(repeating: "#2eb67d", count: 4))
        #expect(!Fixtures.json(Payloads.slack(n)).contains("should not be sent"))
    }

    @Test func failureListsEveryComponentInRed() throws {
        let attachments = Self.attachmentTexts(try Fixtures.object(Payloads.slack(try Fixtures.report("failure"))))
        #expect(attachments.map(\.color) == ["#d92d20", "#d92d20", "#d92d20"])
        #expect(attachments[0].text.hasPrefix("*gitea*: failure · 0 B · 0 objects · 1m 01s\n> pg_dump: error: connection to server at \"postgres\""))
    }
}

@Suite struct WebhookPayloadTests {
    @Test func failureBodyIsExactlyTheDocumentedV1Schema() throws {
        let n = try Fixtures.report("failure", logTail: ["level=error step=pg_dump"])
        let expected = #"""
            {"backupId":"20250107T020000Z","components":[\#
            {"bytes":0,"error":"pg_dump: error: connection to server at \"postgres\" (10.0.0.12), port 5432 failed: Connection refused","name":"gitea","objects":0,"seconds":60.5,"status":"failure"},\#
            {"bytes":0,"error":"mongodump: server selection error: connection refused","name":"mongodb","objects":0,"seconds":30,"status":"failure"},\#
            {"bytes":0,"error":"k8s-export: 403 Forbidden: secrets is forbidden","name":"kubernetes","objects":0,"seconds":0.2,"status":"failure"}],\#
            "durationSeconds":90.5,"encrypted":false,"event":"finish","failedComponents":["gitea","mongodb","kubernetes"],\#
            "finishedAt":"2025-01-07T02:01:30Z","location":null,"logTail":["level=error step=pg_dump"],\#
            "notifier":{"name":"notify","version":"\#(KDLBackupVersion.current)"},"schema":"kdl-backup/notification/v1",\#
            "startedAt":"2025-01-07T02:00:00Z","status":"failure","summary":"KDL backup 20250107T020000Z failed","totalBytes":0}
            """#
        #expect(Fixtures.json(Payloads.webhook(n)) == expected)
    }

    @Test func successCarriesSizesButNoLogTail() throws {
        let n = try Fixtures.report("success", logTail: ["noise"])
        let body = try Fixtures.object(Payloads.webhook(n))
        #expect(body["totalBytes"] as? Int == 1_121_955_168 + 2_101_248 + 786_432 + 14_336)
        #expect(body["encrypted"] as? Bool == true)
        #expect((body["logTail"] as? [Any])?.isEmpty == true)
        #expect((body["failedComponents"] as? [Any])?.isEmpty == true)
        #expect(body["verify"] == nil)
    }

    @Test func signatureIsHMACSHA256OfTheBodyInHex() {
        // RFC 4231 test case 2.
        let signature = Payloads.webhookSignature(body: Data("what do ya want for nothing?".utf8), secret: "Jefe")
        #expect(signature == "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }

    @Test func verifyAddsItsOwnSection() throws {
        var n = try Fixtures.report("success", event: .verify)
        n.status = .failure
        n.verify = VerifyInfo(setAgeSeconds: 777_600, checked: ["sha256 of 9 objects", "manifest well formed"])
        let body = try Fixtures.object(Payloads.webhook(n))
        #expect(body["event"] as? String == "verify")
        let verify = body["verify"] as? [String: Any]
        #expect(verify?["setAgeSeconds"] as? Int == 777_600)
        #expect(verify?["checked"] as? [String] == ["sha256 of 9 objects", "manifest well formed"])
        #expect(body["summary"] as? String == "KDL backup verification failed (set 20250105T020000Z)")
    }
}

@Suite struct ExpositionTests {
    /// The samples of one metric, label set → value.
    static func samples(_ text: String, _ name: String) -> [String: String] {
        var out: [String: String] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix(name + " ") || line.hasPrefix(name + "{") {
            let parts = line.split(separator: " ")
            let labels = parts[0].dropFirst(name.count)
            out[String(labels)] = String(parts[1])
        }
        return out
    }

    @Test func successReportsEveryMetricWithHelpAndType() throws {
        let text = Payloads.exposition(try Fixtures.report("success"))
        let names = [
            "kdl_backup_last_run_timestamp_seconds", "kdl_backup_last_success_timestamp_seconds", "kdl_backup_duration_seconds",
            "kdl_backup_status", "kdl_backup_size_bytes", "kdl_backup_component_success",
        ]
        for name in names {
            #expect(text.contains("# HELP \(name) "), "\(name)")
            #expect(text.contains("# TYPE \(name) gauge\n"), "\(name)")
        }
        // 2025-01-05T02:07:31Z
        #expect(Self.samples(text, "kdl_backup_last_run_timestamp_seconds") == ["": "1736042851"])
        #expect(Self.samples(text, "kdl_backup_last_success_timestamp_seconds") == ["": "1736042851"])
        #expect(Self.samples(text, "kdl_backup_duration_seconds") == ["": "451"])
        #expect(Self.samples(text, "kdl_backup_status") == ["": "1"])
        #expect(
            Self.samples(text, "kdl_backup_size_bytes") == [
                #"{component="gitea"}"#: "1121955168", #"{component="mongodb"}"#: "2101248",
                #"{component="mlflow"}"#: "786432", #"{component="kubernetes"}"#: "14336",
            ])
    }

    @Test func partialKeepsTheLastSuccessAndLeavesSkippedComponentsOut() throws {
        let text = Payloads.exposition(try Fixtures.report("partial"))
        #expect(!text.contains("kdl_backup_last_success_timestamp_seconds"))
        #expect(Self.samples(text, "kdl_backup_status") == ["": "0.5"])
        #expect(Self.samples(text, "kdl_backup_duration_seconds") == ["": "312"])
        #expect(
            Self.samples(text, "kdl_backup_component_success") == [
                #"{component="gitea"}"#: "1", #"{component="mongodb"}"#: "0", #"{component="kubernetes"}"#: "1",
            ])
        #expect(Self.samples(text, "kdl_backup_size_bytes")[#"{component="mongodb"}"#] == "0")
    }

    @Test func failureStatusIsZeroAndDurationKeepsItsFraction() throws {
        let text = Payloads.exposition(try Fixtures.report("failure"))
        #expect(Self.samples(text, "kdl_backup_status") == ["": "0"])
        #expect(Self.samples(text, "kdl_backup_duration_seconds") == ["": "90.5"])
    }

    @Test func verifyReportsItsThreeMetrics() throws {
        let n = RunReport(event: .verify, status: .success, time: Fixtures.now, verify: VerifyInfo(setAgeSeconds: 3600.25))
        let text = Payloads.exposition(n)
        #expect(Self.samples(text, "kdl_backup_last_verify_timestamp_seconds") == ["": "1736215320"])
        #expect(Self.samples(text, "kdl_backup_verify_status") == ["": "1"])
        #expect(Self.samples(text, "kdl_backup_latest_set_age_seconds") == ["": "3600.25"])
        #expect(!text.contains("kdl_backup_status "))
    }

    @Test func labelValuesAreEscaped() {
        #expect(Payloads.label(#"a"b\c"#) == #"{component="a\"b\\c"}"#)
    }
}

@Suite struct EmailTests {
    @Test func partialMessageIsPlainTextWithCRLFAndFailuresFirst() throws {
        let n = try Fixtures.report("partial", logTail: ["line one", "line two"])
        let message = String(decoding: Payloads.email(n, from: "backup@kdl.example.com", to: ["ops@example.com", "dev@example.com"]), as: UTF8.self)
        let parts = message.components(separatedBy: "\r\n\r\n")
        let headers = parts[0].components(separatedBy: "\r\n")
        #expect(headers.contains("From: backup@kdl.example.com"))
        #expect(headers.contains("To: ops@example.com, dev@example.com"))
        #expect(headers.contains("Subject: [kdl-backup] partial: KDL backup 20250106T020000Z partially failed (1 of 3 components failed)"))
        #expect(headers.contains("Date: Tue, 07 Jan 2025 02:02:00 +0000"))
        #expect(headers.contains("Content-Type: text/plain; charset=utf-8"))
        #expect(!message.replacingOccurrences(of: "\r\n", with: "").contains("\n"))
        let body = parts.dropFirst().joined(separator: "\r\n\r\n").replacingOccurrences(of: "\r\n", with: "\n")
        let expected = """
            KDL backup 20250106T020000Z partially failed (1 of 3 components failed)

            Status:      partial
            Backup id:   20250106T020000Z
            Started:     2025-01-06T02:00:00Z
            Finished:    2025-01-06T02:05:12Z
            Duration:    5m 12s
            Total size:  1.0 GiB (1121965408 bytes)
            Encrypted:   no

            Components (failures first):
              mongodb: failure · 0 B · 0 objects · 30.0s
                  error: mongodump: server selection error: connection refused (mongodb://mongo.kdl:27017) <after 3 attempts> & gave up
              gitea: success · 1.0 GiB · 2 objects · 4m 00s
              kubernetes: success · 10.0 KiB · 2 objects · 3.8s
              mlflow: skipped

            Log tail (last 2 lines):
              line one
              line two

            """
        #expect(body == expected)
    }

    @Test func nonASCIISubjectsAreEncoded() {
        #expect(Payloads.encodedHeader("día") == "=?utf-8?B?ZMOtYQ==?=")
        #expect(Payloads.encodedHeader("plain\r\nBcc: x") == "plain  Bcc: x")
    }
}
