import ArgumentParser
import BackupKit
import Foundation

/// `s3-get`: Download an S3 object to a file or stdout, checking its sha256.
public struct S3GetCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "s3-get",
        abstract: "Download an S3 object to a file or stdout, checking its sha256.",
        usage: "s3-get [<options>] <source> <destination>",
        discussion: """
            Streams the object (nothing is held in memory); a broken connection is resumed with ranged GETs
            pinned to the object's ETag. With a file destination, prints one JSON line:
            {"bucket","key","size","sha256","resumes","seconds"}. On any failure, including a --sha256
            mismatch (exit 74), the partial file is removed.
            """,
        version: KDLBackupVersion.current)

    // Positionals are optional for the parser only (see `required`); run() requires them.
    @Argument(help: ArgumentHelp("The object to download, s3://BUCKET/KEY (required).", valueName: "source"))
    public var source: String?

    @Argument(help: ArgumentHelp("The file to write, or - for stdout (required).", valueName: "destination"))
    public var destination: String?

    @Option(help: ArgumentHelp("Expected SHA-256 of the object (64 hex digits); a mismatch fails with exit 74.", valueName: "hex"))
    public var sha256: String?

    @OptionGroup public var s3: S3Options

    public init() {}

    public func validate() throws {
        if let sha256, sha256.count != 64 || !sha256.allSatisfy(\.isHexDigit) {
            throw ValidationError("--sha256 must be 64 hexadecimal digits")
        }
    }

    public func run() throws {
        let source = try required(source, "<source>")
        let destination = try required(destination, "<destination>")
        try runReportingErrors(tool: "s3-get") {
            let location = try S3Location(parsing: source)
            let client = try s3.makeClient(tool: "s3-get", environment: .process)
            let sink = try FileDescriptorSink(path: destination)
            if destination != "-" {
                SignalTrap.install { sink.discard() }
            }
            let result = try Downloader(client: client).download(location, to: sink, expectedSHA256: sha256)
            if destination != "-" { try JSONOutput.printLine(result) }
        }
    }
}
