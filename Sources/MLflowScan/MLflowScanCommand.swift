import ArgumentParser
import BackupKit
import Foundation

extension SnapshotCheck: ExpressibleByArgument {}

/// `mlflow-scan`: find every project's MLflow store under ROOT and take consistent snapshots of the live databases.
public struct MLflowScanCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "mlflow-scan",
        abstract: "Find MLflow stores and snapshot their SQLite databases.",
        discussion: """
            Prints one JSON document on stdout describing every folder with an mlflow.db under ROOT
            (see docs/helpers.md#mlflow-scan). Stores are opened read-only and never changed.
            Exit status: 0 the scan ran (problems of single stores are in the JSON), 64 bad usage,
            66 ROOT missing, 74 ROOT unreadable or a snapshot could not be written.
            """,
        version: KDLBackupVersion.current)

    @Argument(help: ArgumentHelp("The folder holding the projects' MLflow volumes.", valueName: "root"))
    var root: String = "/shared-volume"

    @Option(name: .customLong("max-depth"), help: "How many folder levels below ROOT to search (ROOT is level 0).")
    var maxDepth: Int = 3

    @Option(help: ArgumentHelp("Also write a consistent copy of every ok store to DIR/<project>/mlflow.db.", valueName: "dir"))
    var snapshot: String?

    @Option(name: .customLong("busy-timeout"), help: "Seconds to wait for a lock held by a writer before a store is reported unreadable.")
    var busyTimeout: Double = 10

    @Flag(name: .customLong("quick-check"), help: "Also run PRAGMA quick_check on every store (reads every page).")
    var quickCheck = false

    @Option(help: "How each snapshot is checked: integrity (PRAGMA integrity_check), quick (PRAGMA quick_check, faster) or none (the caller checks the copy itself).")
    var check: SnapshotCheck = .integrity

    @Option(help: ArgumentHelp(
        "A namespace of KDL 6 claims: folders named <namespace>-<project>-mlflow-pvc-<uid> belong to <project> (repeatable).",
        valueName: "ns"))
    var namespace: [String] = []

    @Flag(help: "Indent the JSON output.")
    var pretty = false

    public init() {}

    public func validate() throws {
        guard (0...64).contains(maxDepth) else { throw ValidationError("--max-depth must be from 0 to 64") }
        guard busyTimeout.isFinite, (0...3600).contains(busyTimeout) else {
            throw ValidationError("--busy-timeout must be a number of seconds from 0 to 3600")
        }
        guard !root.isEmpty else { throw ValidationError("ROOT must not be empty") }
        if let snapshot, snapshot.isEmpty { throw ValidationError("--snapshot needs a directory") }
        for ns in namespace where ns.range(of: #"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"#, options: .regularExpression) == nil {
            throw ValidationError("--namespace \"\(ns)\" is not a Kubernetes namespace name")
        }
    }

    public func run() throws {
        try runReportingErrors(tool: "mlflow-scan") {
            let options = ScanOptions(
                root: root, maxDepth: maxDepth, snapshotDir: snapshot, busyTimeoutSeconds: busyTimeout, quickCheck: quickCheck,
                snapshotCheck: check, namespaces: namespace)
            let (report, failures) = try Scanner(options: options, log: Log.standardError).run()
            var data = try JSONOutput.encoder(pretty: pretty).encode(report)
            data.append(0x0a)
            FileHandle.standardOutput.write(data)
            if failures > 0 { throw MLflowScanError.snapshotsFailed(count: failures) }
        }
    }
}
