import Foundation
import Testing

/// Runs the built helper binaries as a user would: `--help`, `--version`, usage errors and their exit codes.
/// The binaries are found next to the test bundle (same build) unless KDL_BIN_DIR names another folder.
@Suite struct HelperCLITests {
    static let helpers = ["s3-put", "s3-get", "s3-ls", "s3-prune", "k8s-export", "mlflow-scan", "notify", "bucket-sync"]

    static var binDir: URL {
        if let dir = ProcessInfo.processInfo.environment["KDL_BIN_DIR"], !dir.isEmpty {
            return URL(fileURLWithPath: dir)
        }
        // .build/<triple>/debug/kdl-backupPackageTests.xctest → .build/<triple>/debug
        var url = Bundle.main.bundleURL
        while url.pathComponents.count > 1, !FileManager.default.fileExists(atPath: url.appendingPathComponent("s3-put").path) {
            url.deleteLastPathComponent()
        }
        return url
    }

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    static func run(_ helper: String, _ arguments: [String], environment: [String: String] = [:]) throws -> Result {
        let process = Process()
        process.executableURL = binDir.appendingPathComponent(helper)
        process.arguments = arguments
        process.environment = environment
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(
            status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
            stderr: String(decoding: stderr, as: UTF8.self))
    }

    @Test(arguments: helpers)
    func versionRunsWithAnEmptyEnvironment(helper: String) throws {
        let result = try Self.run(helper, ["--version"])
        #expect(result.status == 0)
        #expect(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines).range(of: #"^\d+\.\d+\.\d+"#, options: .regularExpression) != nil)
    }

    @Test(arguments: helpers)
    func helpDescribesEveryOption(helper: String) throws {
        let result = try Self.run(helper, ["--help"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("USAGE: \(helper)"))
        #expect(result.stdout.contains("--version"))
    }

    /// Arguments that satisfy each helper's required positionals, so only the unknown option is wrong.
    static let validArguments: [String: [String]] = [
        "s3-put": ["-", "s3://kdl-backups/k"], "s3-get": ["s3://kdl-backups/k", "-"], "s3-ls": ["s3://kdl-backups/p"],
        "s3-prune": ["s3://kdl-backups/p"], "k8s-export": ["secrets"], "mlflow-scan": ["/shared-volume"],
        "notify": ["--event", "start"], "bucket-sync": ["buckets"],
    ]

    @Test(arguments: helpers)
    func anUnknownOptionIsAUsageError(helper: String) throws {
        let result = try Self.run(helper, (Self.validArguments[helper] ?? []) + ["--no-such-option"])
        #expect(result.status == 64)
        #expect(result.stderr.contains("--no-such-option"))
        #expect(!result.stderr.contains("Fatal error"))
    }

    @Test func bucketSyncWithoutMinIOSettingsIsAUsageError() throws {
        let result = try Self.run("bucket-sync", ["buckets"], environment: ["AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"])
        #expect(result.status == 64)
        #expect(result.stderr.contains("MINIO_ENDPOINT is not set"))
    }

    @Test func bucketSyncRefusesASetIDThatIsNotATime() throws {
        let result = try Self.run("bucket-sync", ["backup", "s3://kdl-backups/kdl-backup", "--set", "yesterday"])
        #expect(result.status == 64)
        #expect(result.stderr.contains("--set must be a set id"))
    }

    @Test func bucketSyncRestoreNeedsASetURL() throws {
        let environment = [
            "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "MINIO_ENDPOINT": "http://127.0.0.1:9",
            "MINIO_ACCESS_KEY_ID": "k", "MINIO_SECRET_ACCESS_KEY": "s",
        ]
        let result = try Self.run("bucket-sync", ["restore", "s3://kdl-backups/kdl-backup"], environment: environment)
        #expect(result.status == 64)
        #expect(result.stderr.contains("does not end in a set id"))
    }
}
