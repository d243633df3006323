import ArgumentParser
import BackupKit

/// `k8s-export`: Export Kubernetes objects, cleaned for re-apply.
public struct K8sExportCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "k8s-export",
        abstract: "Export Kubernetes objects, cleaned for re-apply.",
        version: KDLBackupVersion.current)

    public init() {}

    public func run() throws {
        throw ExitCode(ExitStatus.failure)  // skeleton: filled in by the helper's issue
    }
}
