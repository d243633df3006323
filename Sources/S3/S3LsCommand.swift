import ArgumentParser
import BackupKit
import Foundation

/// `s3-ls`: List the objects under an S3 prefix.
public struct S3LsCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "s3-ls",
        abstract: "List the objects under an S3 prefix.",
        usage: "s3-ls [<options>] <prefix>",
        discussion: """
            Lists every key under the prefix (no delimiter), following continuation tokens. Each line is
            `LAST-MODIFIED SIZE KEY`, or with --json one object a line: {"etag","key","lastModified","size"}.
            """,
        version: KDLBackupVersion.current)

    // Optional for the parser only (see `required`); run() requires it.
    @Argument(help: ArgumentHelp("The bucket and key prefix, s3://BUCKET/PREFIX (required).", valueName: "prefix"))
    public var prefix: String?

    @Flag(help: "One JSON object a line.")
    public var json = false

    @OptionGroup public var s3: S3Options

    public init() {}

    public func run() throws {
        let prefix = try required(prefix, "<prefix>")
        try runReportingErrors(tool: "s3-ls") {
            let location = try S3Location(parsing: prefix)
            let client = try s3.makeClient(tool: "s3-ls", environment: .process)
            let encoder = JSONOutput.encoder()
            try client.list(bucket: location.bucket, prefix: location.key) { page in
                var out = Data()
                for object in page {
                    if json {
                        out.append(try encoder.encode(object))
                        out.append(0x0a)
                    } else {
                        out.append(Data("\(object.lastModified) \(object.size) \(object.key)\n".utf8))
                    }
                }
                FileHandle.standardOutput.write(out)
            }
        }
    }
}
