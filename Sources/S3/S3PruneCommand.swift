import ArgumentParser
import BackupKit

/// `s3-prune`: Delete old backup sets under an S3 prefix by retention rules.
public struct S3PruneCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "s3-prune",
        abstract: "Delete old backup sets under an S3 prefix by retention rules.",
        version: KDLBackupVersion.current)

    public init() {}

    public func run() throws {
        throw ExitCode(ExitStatus.failure)  // skeleton: filled in by the helper's issue
    }
}
