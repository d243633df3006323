import ArgumentParser
import BackupKit

/// `mlflow-scan`: Find MLflow stores and snapshot their SQLite databases.
public struct MLflowScanCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "mlflow-scan",
        abstract: "Find MLflow stores and snapshot their SQLite databases.",
        version: KDLBackupVersion.current)

    public init() {}

    public func run() throws {
        throw ExitCode(ExitStatus.failure)  // skeleton: filled in by the helper's issue
    }
}
