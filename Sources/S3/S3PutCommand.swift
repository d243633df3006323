import ArgumentParser
import BackupKit

/// `s3-put`: Upload a file or stdin to S3, streaming, and print what was stored.
public struct S3PutCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "s3-put",
        abstract: "Upload a file or stdin to S3, streaming, and print what was stored.",
        version: KDLBackupVersion.current)

    public init() {}

    public func run() throws {
        throw ExitCode(ExitStatus.failure)  // skeleton: filled in by the helper's issue
    }
}
