import ArgumentParser
import BackupKit

/// `s3-get`: Download an S3 object to a file or stdout, checking its sha256.
public struct S3GetCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "s3-get",
        abstract: "Download an S3 object to a file or stdout, checking its sha256.",
        version: KDLBackupVersion.current)

    public init() {}

    public func run() throws {
        throw ExitCode(ExitStatus.failure)  // skeleton: filled in by the helper's issue
    }
}
