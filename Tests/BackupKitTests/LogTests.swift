import Foundation
import Testing

@testable import BackupKit

@Suite struct LogTests {
    private func capture(_ body: (Log) -> Void) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("log-\(UUID().uuidString)").path
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let handle = try #require(FileHandle(forWritingAtPath: path))
        body(Log(handle: handle))
        try handle.close()
        return try String(contentsOfFile: path, encoding: .utf8)
    }

    @Test func registeredSecretsNeverReachTheOutput() throws {
        let text = try capture { log in
            log.addSecret("s3cr3t-KEY/with+chars")
            log.log(.error, tool: "s3-put", "request failed", [("detail", "signed with s3cr3t-KEY/with+chars")])
            log.write("raw s3cr3t-KEY/with+chars\n")
        }
        #expect(!text.contains("s3cr3t-KEY"))
        #expect(text.contains("[REDACTED]"))
    }

    @Test func logfmtQuotesWhatNeedsQuoting() throws {
        let text = try capture { log in
            log.log(.info, tool: "t", "two words", [("key", "plain"), ("path", "a \"b\"\nc")])
        }
        #expect(text.contains("level=info tool=t msg=\"two words\" key=plain path=\"a \\\"b\\\"\\nc\""))
        #expect(text.hasSuffix("\n"))
    }

    @Test func controlCharactersBecomeUnicodeEscapes() {
        #expect(Log.quote("a\u{01}b\u{1f}") == "\"a\\u0001b\\u001f\"")
    }

    @Test func linesStartWithAnRFC3339UTCTime() throws {
        let text = try capture { log in log.log(.info, tool: "t", "m") }
        let stamp = try #require(text.split(separator: " ").first)
        #expect(stamp.hasPrefix("ts=") && stamp.hasSuffix("Z"))
        #expect(stamp.count == "ts=2024-05-01T12:00:00Z".count)
    }

    @Test func utcTimesAreZeroPadded() {
        let date = Date(timeIntervalSince1970: 1_704_164_645.9)  // 2024-01-02T03:04:05.9Z
        #expect(UTCTime.iso8601(date) == "2024-01-02T03:04:05Z")
        #expect(UTCTime.compact(date) == "20240102T030405Z")
        #expect(UTCTime.iso8601(Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00Z")
        #expect(UTCTime.rfc5322(date) == "Tue, 02 Jan 2024 03:04:05 +0000")
        let whole = Date(timeIntervalSince1970: 1_704_164_645)
        #expect(UTCTime.parseISO8601("2024-01-02T03:04:05Z") == whole)
        #expect(UTCTime.parseISO8601("2024-01-02T03:04:05.25Z") == whole.addingTimeInterval(0.25))
        for bad in ["2024-01-02T03:04:05", "2024-01-02 03:04:05Z", "2024-01-02T03:04:05.Z", "2024-02-30T03:04:05Z", "2024-01-02T03:04:05+01:00"] {
            #expect(UTCTime.parseISO8601(bad) == nil, "\(bad)")
        }
    }

    @Test func levelsBelowTheMinimumAreDropped() throws {
        let text = try capture { log in
            log.log(.debug, tool: "t", "hidden")
        }
        #expect(text.isEmpty)
    }

    @Test func urlRedactionDropsUserinfoQueryAndTokenPaths() {
        #expect(Redact.url("https://user:pw@example.com/path?X-Amz-Signature=abc") == "https://example.com/path")
        #expect(Redact.url("https://hooks.slack.com/services/T000/B000/XXXX", keepPath: false) == "https://hooks.slack.com/[REDACTED]")
        #expect(Redact.url("not a url") == "[REDACTED-URL]")
    }
}

@Suite struct RetryTests {
    final class RecordingSleeper: Sleeper, @unchecked Sendable {
        var delays: [Double] = []
        func sleep(seconds: Double) { delays.append(seconds) }
    }

    struct Flaky: Error {}

    @Test func retriesUntilSuccessWithBoundedBackoff() throws {
        let sleeper = RecordingSleeper()
        let policy = RetryPolicy(retries: 5, baseDelay: 0.1, maxDelay: 0.3)
        let result = try policy.run(sleeper: sleeper, isRetryable: { _ in true }) { attempt in
            if attempt < 3 { throw Flaky() }
            return attempt
        }
        #expect(result == 3)
        #expect(sleeper.delays.count == 3)
        #expect(sleeper.delays.allSatisfy { $0 >= 0 && $0 <= 0.3 })
    }

    @Test func givesUpAfterTheLastAttempt() {
        let sleeper = RecordingSleeper()
        var calls = 0
        #expect(throws: Flaky.self) {
            try RetryPolicy(retries: 2).run(sleeper: sleeper, isRetryable: { _ in true }) { _ in
                calls += 1
                throw Flaky()
            }
        }
        #expect(calls == 3)
    }

    @Test func doesNotRetryWhatIsNotRetryable() {
        var calls = 0
        #expect(throws: Flaky.self) {
            try RetryPolicy(retries: 5).run(sleeper: RecordingSleeper(), isRetryable: { _ in false }) { _ in
                calls += 1
                throw Flaky()
            }
        }
        #expect(calls == 1)
    }
}
