import ArgumentParser
import BackupKit

/// `notify`: Send backup-run alerts and metrics.
public struct NotifyCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "notify",
        abstract: "Send backup-run alerts and metrics.",
        version: KDLBackupVersion.current)

    public init() {}

    public func run() throws {
        throw ExitCode(ExitStatus.failure)  // skeleton: filled in by the helper's issue
    }
}
