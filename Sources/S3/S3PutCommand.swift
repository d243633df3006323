import ArgumentParser
import BackupKit
import Foundation

/// `s3-put`: Upload a file or stdin to S3, streaming, and print what was stored.
public struct S3PutCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "s3-put",
        abstract: "Upload a file or stdin to S3, streaming, and print what was stored.",
        usage: "s3-put [<options>] <source> <destination>",
        discussion: """
            Below the part size the object is sent with one PutObject; above it, as a multipart upload of
            --concurrency parts at a time. Part buffers take part size × max(concurrency, 2): 32 MiB at the defaults.
            A stream of unknown length doubles its part size every 1,000 parts so that up to 5 TiB fits in
            S3's 10,000 parts (memory follows the part size). Prints one JSON line:
            {"bucket","key","size","sha256","etag","parts","seconds"}, sha256 being of the bytes stored.
            """,
        version: KDLBackupVersion.current)

    // Positionals are optional for the parser only (see `required`); run() requires them.
    @Argument(help: ArgumentHelp("The file to upload, or - for stdin (required).", valueName: "source"))
    public var source: String?

    @Argument(help: ArgumentHelp("The destination object, s3://BUCKET/KEY (required).", valueName: "destination"))
    public var destination: String?

    @Option(help: ArgumentHelp("Size of each part of a multipart upload, e.g. 8MiB (5MiB to 5GiB).", valueName: "size"))
    public var partSize: String = "8MiB"

    @Option(help: ArgumentHelp("Parts uploaded at the same time.", valueName: "n"))
    public var concurrency: Int = 4

    @Option(help: ArgumentHelp("Server-side encryption: AES256 or aws:kms.", valueName: "algorithm"))
    public var sse: String?

    @Option(help: ArgumentHelp("KMS key for --sse aws:kms (default: the account's S3 key).", valueName: "key-id"))
    public var sseKmsKeyId: String?

    @Option(help: ArgumentHelp("Storage class, e.g. STANDARD_IA or GLACIER_IR.", valueName: "class"))
    public var storageClass: String?

    @Option(help: ArgumentHelp("Content-Type stored with the object.", valueName: "type"))
    public var contentType: String?

    @Flag(help: "Log progress on stderr (the default when stderr is a terminal).")
    public var progress = false

    @OptionGroup public var s3: S3Options

    public init() {}

    public func validate() throws {
        guard let size = ByteSize.parse(partSize) else { throw ValidationError("--part-size is not a size: \(partSize)") }
        guard size >= PartSizing.minimumPart, size <= PartSizing.maximumPart else {
            throw ValidationError("--part-size must be between 5MiB and 5GiB")
        }
        guard (1...64).contains(concurrency) else { throw ValidationError("--concurrency must be between 1 and 64") }
        if let sse, !["AES256", "aws:kms"].contains(sse) { throw ValidationError("--sse must be AES256 or aws:kms") }
        if sseKmsKeyId != nil, sse != "aws:kms" { throw ValidationError("--sse-kms-key-id needs --sse aws:kms") }
    }

    func putOptions() -> PutOptions {
        var options = PutOptions()
        options.partSize = ByteSize.parse(partSize) ?? options.partSize
        options.concurrency = concurrency
        options.progress = progress || isatty(2) == 1
        if let sse { options.headers.append(HTTPHeader("x-amz-server-side-encryption", sse)) }
        if let sseKmsKeyId { options.headers.append(HTTPHeader("x-amz-server-side-encryption-aws-kms-key-id", sseKmsKeyId)) }
        if let storageClass { options.headers.append(HTTPHeader("x-amz-storage-class", storageClass)) }
        if let contentType { options.headers.append(HTTPHeader("Content-Type", contentType)) }
        return options
    }

    public func run() throws {
        let source = try required(source, "<source>")
        let destination = try required(destination, "<destination>")
        try runReportingErrors(tool: "s3-put") {
            let location = try S3Location(parsing: destination)
            let client = try s3.makeClient(tool: "s3-put", environment: .process)
            let input = try FileDescriptorSource(path: source)
            let uploader = Uploader(client: client, options: putOptions())
            let active = uploader.activeUpload
            SignalTrap.install { active.abortNow() }
            let result = try uploader.upload(from: input, to: location)
            try JSONOutput.printLine(result)
        }
    }
}
