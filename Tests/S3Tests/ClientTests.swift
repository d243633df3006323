import ArgumentParser
import BackupKit
import Foundation
import Testing

@testable import S3

/// Stands in for S3 over HTTP: answers each request with `handler` and records what was sent.
final class FakeTransport: HTTPTransport, @unchecked Sendable {
    struct Sent {
        var request: HTTPRequest
        var body: Data
    }

    private let lock = NSLock()
    private var sentRequests: [Sent] = []
    let handler: @Sendable (HTTPRequest, Data, HTTPBodySink?) throws -> HTTPResponse

    init(_ handler: @escaping @Sendable (HTTPRequest, Data, HTTPBodySink?) throws -> HTTPResponse) {
        self.handler = handler
    }

    var sent: [Sent] { lock.withLock { sentRequests } }

    func send(_ request: HTTPRequest, sink: HTTPBodySink?) throws -> HTTPResponse {
        var body = Data()
        switch request.body {
        case .bytes(let data):
            body = Data(data)
        case .stream(_, let reader):
            var chunk = [UInt8](repeating: 0, count: 700)
            while true {
                let count = try chunk.withUnsafeMutableBytes { try reader($0) }
                if count == 0 { break }
                body.append(contentsOf: chunk[0..<count])
            }
        case .none:
            break
        }
        lock.withLock { sentRequests.append(Sent(request: request, body: body)) }
        return try handler(request, body, sink)
    }
}

struct NoSleep: Sleeper {
    func sleep(seconds: Double) {}
}

func quietLog() -> Log {
    Log(handle: FileHandle(forWritingAtPath: "/dev/null")!)
}

func makeClient(_ transport: FakeTransport, retries: Int = 3, environment: [String: String] = [:]) throws -> S3Client {
    let env = Environment(
        [
            "AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "secret-for-tests-only",
            "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000",
        ].merging(environment) { $1 })
    let log = quietLog()
    let configuration = try S3Configuration(environment: env, log: log)
    return S3Client(
        configuration: configuration, transport: transport, retry: RetryPolicy(retries: retries), sleeper: NoSleep(), log: log)
}

func errorXML(_ code: String, _ message: String) -> Data {
    Data("<?xml version=\"1.0\"?><Error><Code>\(code)</Code><Message>\(message)</Message></Error>".utf8)
}

func query(of request: HTTPRequest) -> String {
    URLComponents(string: request.url)?.percentEncodedQuery ?? ""
}

final class MemorySource: ByteSource {
    let data: Data
    var offset = 0
    let chunk: Int
    let length: Int64?

    init(_ data: Data, chunk: Int = 1000, knownLength: Bool = false) {
        self.data = data
        self.chunk = chunk
        self.length = knownLength ? Int64(data.count) : nil
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let count = min(buffer.count, chunk, data.count - offset)
        guard count > 0 else { return 0 }
        data.withUnsafeBytes { source in
            buffer.baseAddress!.copyMemory(from: source.baseAddress! + offset, byteCount: count)
        }
        offset += count
        return count
    }
}

@Suite struct ConfigurationTests {
    @Test func flagsOverrideTheEnvironment() throws {
        let env = Environment([
            "AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s3cr3t-value", "AWS_REGION": "eu-west-1",
            "AWS_DEFAULT_REGION": "us-west-2", "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
            "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:2",
        ])
        let fromEnv = try S3Configuration(environment: env, log: quietLog())
        #expect(fromEnv.region == "eu-west-1")
        #expect(fromEnv.endpoint == "http://127.0.0.1:2")
        #expect(fromEnv.pathStyle)
        let flagged = try S3Configuration(
            environment: env, endpoint: "https://minio.kdl.local:9000/", region: "kdl-1", pathStyle: false, log: quietLog())
        #expect(flagged.region == "kdl-1")
        let url = flagged.url(bucket: "kdl-backups", key: "a b/c+d", query: [("uploads", "")])
        #expect(url.url == "https://kdl-backups.minio.kdl.local:9000/a%20b/c%2Bd?uploads=")
        #expect(url.host == "kdl-backups.minio.kdl.local:9000")
    }

    /// The chart writes `AWS_S3_FORCE_PATH_STYLE` from `s3.forcePathStyle`: flag > environment > default.
    @Test func forcePathStyleComesFromTheEnvironmentUnlessFlagged() throws {
        let keys = ["AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s3cr3t-value"]
        func configuration(_ extra: [String: String], flag: Bool? = nil) throws -> S3Configuration {
            try S3Configuration(environment: Environment(keys.merging(extra) { $1 }), pathStyle: flag, log: quietLog())
        }
        let minio = ["AWS_ENDPOINT_URL_S3": "https://minio.kdl.local:9000"]
        #expect(try !configuration(minio.merging(["AWS_S3_FORCE_PATH_STYLE": "false"]) { $1 }).pathStyle)
        #expect(try configuration(minio.merging(["AWS_S3_FORCE_PATH_STYLE": "FALSE"]) { $1 }, flag: true).pathStyle)
        #expect(try configuration(minio.merging(["AWS_S3_FORCE_PATH_STYLE": ""]) { $1 }).pathStyle)
        let aws = try configuration(["AWS_S3_FORCE_PATH_STYLE": "true", "AWS_REGION": "eu-west-1"])
        #expect(aws.pathStyle)
        #expect(aws.url(bucket: "kdl-backups", key: "k", query: []).url == "https://s3.eu-west-1.amazonaws.com/kdl-backups/k")
        #expect(try !configuration(["AWS_S3_FORCE_PATH_STYLE": "true"], flag: false).pathStyle)
        #expect(try !configuration([:]).pathStyle)
        do {
            _ = try configuration(["AWS_S3_FORCE_PATH_STYLE": "maybe"])
            Issue.record("no error")
        } catch let error as S3Error {
            #expect(error.exitCode == ExitStatus.usage)
            #expect("\(error)".contains("AWS_S3_FORCE_PATH_STYLE"))
        }
    }

    @Test func requestChecksumsFollowTheAWSVariable() throws {
        let keys = ["AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s3cr3t-value"]
        func checksums(_ value: String?) throws -> Bool {
            var env = keys
            env["AWS_REQUEST_CHECKSUM_CALCULATION"] = value
            return try S3Configuration(environment: Environment(env), log: quietLog()).requestChecksums
        }
        #expect(try checksums(nil))
        #expect(try checksums("WHEN_SUPPORTED"))
        #expect(try !checksums("when_required"))
        #expect(throws: S3Error.self) { try checksums("always") }
    }

    @Test func awsDefaultsToVirtualHostedStyle() throws {
        let configuration = try S3Configuration(
            environment: Environment(["AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s3cr3t-value", "AWS_DEFAULT_REGION": "eu-west-1"]),
            log: quietLog())
        #expect(!configuration.pathStyle)
        #expect(configuration.url(bucket: "b", key: "k/é", query: []).url == "https://b.s3.eu-west-1.amazonaws.com/k/%C3%A9")
        let pathStyle = try S3Configuration(
            environment: Environment(["AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "s3cr3t-value"]), pathStyle: true,
            log: quietLog())
        #expect(pathStyle.region == "us-east-1")
        #expect(pathStyle.url(bucket: "b", key: nil, query: [("list-type", "2")]).url == "https://s3.amazonaws.com/b?list-type=2")
    }

    @Test func missingCredentialsAreAUsageError() {
        #expect(throws: S3Error.self) { try S3Configuration(environment: Environment([:]), log: quietLog()) }
        do {
            _ = try S3Configuration(environment: Environment(["AWS_ACCESS_KEY_ID": "x"]), log: quietLog())
        } catch let error as S3Error {
            #expect(error.exitCode == ExitStatus.usage)
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func secretsAreRegisteredWithTheLog() throws {
        let log = quietLog()
        _ = try S3Configuration(
            environment: Environment(["AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "very-secret-key", "AWS_SESSION_TOKEN": "session-tok"]),
            log: log)
        #expect(log.redact("a very-secret-key and session-tok") == "a [REDACTED] and [REDACTED]")
    }

    @Test func badLocationsAreUsageErrors() {
        for text in ["bucket/key", "s3://", "s3:///key", "s3://bad bucket/key", "http://b/k"] {
            #expect(throws: S3Error.self, "\(text)") { try S3Location(parsing: text) }
        }
        #expect((try? S3Location(parsing: "s3://kdl-backups/kdl-backup/x"))?.key == "kdl-backup/x")
        #expect((try? S3Location(parsing: "s3://kdl-backups"))?.key == "")
    }

    @Test func webIdentityIsExchangedWithSTS() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kdl-s3-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let tokenFile = directory.appendingPathComponent("token").path
        try "eyJ-projected-token\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        let transport = FakeTransport { request, body, _ in
            let form = String(decoding: body, as: UTF8.self)
            if request.url.hasPrefix("http://127.0.0.1:7777/") {
                #expect(form.contains("Action=AssumeRoleWithWebIdentity"))
                #expect(form.contains("WebIdentityToken=eyJ-projected-token"))
                #expect(form.contains("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fkdl-backup"))
                return HTTPResponse(
                    status: 200,
                    body: Data(
                        """
                        <AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>
                        <AccessKeyId>ASIATEMP</AccessKeyId><SecretAccessKey>temp-secret-key</SecretAccessKey>
                        <SessionToken>temp-session-token</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration>
                        </Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>
                        """.utf8))
            }
            #expect(request.headers.contains(HTTPHeader("x-amz-security-token", "temp-session-token")))
            #expect(request.headers.last?.value.contains("Credential=ASIATEMP/") == true)
            return HTTPResponse(status: 200, body: Data("<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>".utf8))
        }
        let log = quietLog()
        let env = Environment([
            "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/kdl-backup", "AWS_WEB_IDENTITY_TOKEN_FILE": tokenFile,
            "AWS_ENDPOINT_URL_STS": "http://127.0.0.1:7777", "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000",
        ])
        let client = S3Client(
            configuration: try S3Configuration(environment: env, log: log), transport: transport, sleeper: NoSleep(), log: log)
        _ = try client.listPage(bucket: "kdl-backups", prefix: "", continuationToken: nil)
        _ = try client.listPage(bucket: "kdl-backups", prefix: "", continuationToken: nil)
        #expect(transport.sent.filter { $0.request.url.hasPrefix("http://127.0.0.1:7777") }.count == 1)  // cached until expiry
        #expect(log.redact("temp-secret-key temp-session-token eyJ-projected-token") == "[REDACTED] [REDACTED] [REDACTED]")
    }
}

@Suite struct ErrorTests {
    @Test(arguments: [
        ("AccessDenied", 403, ExitStatus.noPermission), ("SignatureDoesNotMatch", 403, ExitStatus.noPermission),
        ("InvalidAccessKeyId", 403, ExitStatus.noPermission), ("NoSuchBucket", 404, ExitStatus.noInput),
        ("NoSuchKey", 404, ExitStatus.noInput), ("SlowDown", 503, ExitStatus.unavailable),
        ("InternalError", 500, ExitStatus.unavailable), ("InvalidArgument", 400, ExitStatus.failure),
    ])
    func s3CodesMapToSysexits(code: String, status: Int, exit: Int32) {
        let error = S3Error.service(operation: "PutObject", bucket: "b", key: "k", status: status, code: code, message: "m")
        #expect(error.exitCode == exit)
        #expect(error.description == "PutObject s3://b/k: \(code): m (HTTP \(status))")
    }

    @Test func anEmptyMessageIsExplainedByTheCode() {
        let missing = S3Error.service(operation: "GetObject", bucket: "b", key: "no/such/key", status: 404, code: "NoSuchKey", message: "")
        #expect(missing.description == "GetObject s3://b/no/such/key: NoSuchKey: The specified key does not exist. (HTTP 404)")
        let unknown = S3Error.service(operation: "GetObject", bucket: "b", key: "k", status: 400, code: "SomethingNew", message: "")
        #expect(unknown.description == "GetObject s3://b/k: SomethingNew (HTTP 400)")
    }

    @Test func serviceErrorsNameOperationBucketKeyAndCode() throws {
        let transport = FakeTransport { _, _, _ in
            HTTPResponse(status: 403, body: errorXML("SignatureDoesNotMatch", "The request signature we calculated does not match"))
        }
        let client = try makeClient(transport)
        #expect(throws: S3Error.service(
            operation: "HeadObject", bucket: "kdl-backups", key: "x/y", status: 403, code: "SignatureDoesNotMatch",
            message: "The request signature we calculated does not match")) {
            _ = try client.headObject(bucket: "kdl-backups", key: "x/y")
        }
        #expect(transport.sent.count == 1)  // permission errors are not retried
    }

    @Test func throttlingIsRetriedThenReportedAsUnavailable() throws {
        let transport = FakeTransport { _, _, _ in HTTPResponse(status: 503, body: errorXML("SlowDown", "Please reduce your request rate.")) }
        let client = try makeClient(transport, retries: 2)
        do {
            _ = try client.listPage(bucket: "b", prefix: "p/", continuationToken: nil)
            Issue.record("no error")
        } catch let error as S3Error {
            #expect(error.exitCode == ExitStatus.unavailable)
            #expect(error.description.contains("SlowDown"))
        }
        #expect(transport.sent.count == 3)
    }

    @Test func requestsAreSignedAndNeverCarryTheSecret() throws {
        let transport = FakeTransport { _, _, _ in HTTPResponse(status: 200, headers: [HTTPHeader("ETag", "\"abc\"")]) }
        let client = try makeClient(transport)
        let data = Data("x".utf8)
        _ = try data.withUnsafeBytes {
            try client.putObject(bucket: "b", key: "k", data: $0, sha256: SHA256Digest.hash(data).hexString, headers: [])
        }
        let request = try #require(transport.sent.first?.request)
        #expect(request.url == "http://127.0.0.1:9000/b/k")
        #expect(request.headers.contains { $0.name == "Authorization" && $0.value.contains("Credential=AKIDTEST/") })
        #expect(request.headers.contains { $0.name == "x-amz-content-sha256" })
        #expect(!request.headers.contains { $0.value.contains("secret-for-tests-only") })
        #expect(!request.headers.contains { $0.name.lowercased() == "host" })  // curl sends Host from the URL
    }
}

/// ArgumentParser reports a missing required positional before an unknown option; the commands take their
/// positionals as optional so that the unknown option is what a user is told about.
@Suite struct CommandLineTests {
    static let commands: [(ParsableCommand.Type, [String])] = [
        (S3PutCommand.self, ["-", "s3://kdl-backups/k"]), (S3GetCommand.self, ["s3://kdl-backups/k", "-"]),
        (S3LsCommand.self, ["s3://kdl-backups/p"]), (S3PruneCommand.self, ["s3://kdl-backups/p"]),
    ]

    @Test func anUnknownOptionIsNamedEvenWithoutPositionals() {
        for (command, _) in Self.commands {
            do {
                _ = try command.parseAsRoot(["--no-such-option"])
                Issue.record("\(command) accepted an unknown option")
            } catch {
                #expect(command.message(for: error).contains("--no-such-option"))
                #expect(command.exitCode(for: error).rawValue == 64)
            }
        }
    }

    @Test func aMissingPositionalIsStillAUsageError() throws {
        for (command, arguments) in Self.commands {
            for count in 0..<arguments.count {
                var parsed = try command.parseAsRoot(Array(arguments.prefix(count)))
                do {
                    try parsed.run()
                    Issue.record("\(command) ran without its arguments")
                } catch {
                    #expect(command.message(for: error).contains("Missing expected argument '<"))
                    #expect(command.exitCode(for: error).rawValue == 64)
                }
            }
        }
    }

    @Test func usageLinesShowThePositionalsAsRequired() {
        #expect(S3PutCommand.helpMessage().contains("USAGE: s3-put [<options>] <source> <destination>"))
        #expect(S3PruneCommand.helpMessage().contains("USAGE: s3-prune [<options>] <prefix>"))
    }
}
