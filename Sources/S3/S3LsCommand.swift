import ArgumentParser
import BackupKit

/// `s3-ls`: List the objects under an S3 prefix.
public struct S3LsCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "s3-ls",
        abstract: "List the objects under an S3 prefix.",
        version: KDLBackupVersion.current)

    public init() {}

    public func run() throws {
        throw ExitCode(ExitStatus.failure)  // skeleton: filled in by the helper's issue
    }
}
