import ArgumentParser
import BackupKit
import Foundation
import S3

/// `bucket-sync`: MinIO's buckets backed up incrementally into the backup bucket, and restored from it.
public struct BucketSyncCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "bucket-sync",
        abstract: "Back up MinIO buckets incrementally to S3 and restore them.",
        discussion: """
            The source (MinIO) comes from MINIO_ENDPOINT, MINIO_ACCESS_KEY_ID, MINIO_SECRET_ACCESS_KEY,
            MINIO_REGION and MINIO_CA_FILE; the backup bucket from the AWS_* environment and the S3 options.
            Layout and formats: docs/helpers.md#bucket-sync. Exit status: 0 done, 1 some buckets failed
            (the others are stored), 64 bad usage, 66 no such set or bucket, 69 MinIO or S3 unreachable,
            74 a stored object is damaged, 77 access refused.
            """,
        version: KDLBackupVersion.current,
        subcommands: [BackupCommand.self, RestoreCommand.self, VerifyCommand.self, BucketsCommand.self])

    public init() {}

    /// glibc gives each thread that allocates its own arena (up to 8 per core), and the batch GETs' threads would
    /// keep theirs: with two arenas the first 2 GiB run peaked at 56 MiB, without at 60 to 68 MiB.
    /// Also a fixed mmap threshold: part buffers (MiBs each) are then mapped and unmapped, not kept in the heap
    /// after glibc's dynamic threshold grows past them.
    static func limitMallocArenas() {
        #if os(Linux)
            _ = glibcMallopt(-8, 2)  // M_ARENA_MAX (malloc.h is not in Swift's Glibc module)
            _ = glibcMallopt(-3, 1 << 20)  // M_MMAP_THRESHOLD
        #endif
    }
}

#if os(Linux)
    @_silgen_name("mallopt")
    func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32
#endif

enum SetIDPattern {
    static func matches(_ id: String) -> Bool {
        id.range(of: #"^[0-9]{8}T[0-9]{6}Z$"#, options: .regularExpression) != nil
    }

    static func check(_ id: String) throws {
        guard matches(id) else { throw ValidationError("--set must be a set id YYYYMMDDTHHMMSSZ, not \(id)") }
    }
}

struct BackupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Store the buckets' new and changed objects and write each bucket's index under PREFIX/ID/minio/.",
        discussion: """
            Prints one JSON line per stored set object ({"key","bytes","sha256","format","encrypted"}, keys relative
            to the set), then {"details":{...}} (counts and bytes only).
            """)

    @Argument(help: ArgumentHelp("The backup prefix, s3://BUCKET/PREFIX.", valueName: "destination"))
    var destination: String

    @Option(help: ArgumentHelp("The set being written (YYYYMMDDTHHMMSSZ).", valueName: "id"))
    var set: String

    @Option(name: .customLong("bucket"), help: ArgumentHelp("A bucket to back up (repeatable; default: every bucket listed).", valueName: "name"))
    var buckets: [String] = []

    @Option(help: ArgumentHelp("Leave out buckets whose name matches this regular expression.", valueName: "ere"))
    var excludeRegex: String?

    @Option(help: ArgumentHelp("After this many sets that reuse earlier uploads, store every object again.", valueName: "n"))
    var fullEvery = 8

    @Option(name: .customLong("recipient"), help: ArgumentHelp("An age recipient (repeatable; none: stored unencrypted).", valueName: "age1..."))
    var recipients: [String] = []

    @Option(help: ArgumentHelp("Pack objects smaller than this many MiB; larger ones are blobs of their own.", valueName: "MiB"))
    var largeMiB = 4

    @Option(help: ArgumentHelp("Close a pack at this many MiB of plaintext.", valueName: "MiB"))
    var packMiB = 32

    @OptionGroup var s3: S3Options

    func validate() throws {
        try SetIDPattern.check(set)
        guard (0...1000).contains(fullEvery) else { throw ValidationError("--full-every must be from 0 to 1000") }
        guard (1...1024).contains(largeMiB), (1...1024).contains(packMiB) else { throw ValidationError("--large-mib and --pack-mib must be from 1 to 1024") }
        if let excludeRegex, (try? NSRegularExpression(pattern: excludeRegex)) == nil {
            throw ValidationError("--exclude-regex is not a regular expression: \(excludeRegex)")
        }
        for name in buckets where (try? S3Location(parsing: "s3://\(name)/")) == nil {
            throw ValidationError("--bucket \(name) is not a bucket name")
        }
        for recipient in recipients where !recipient.hasPrefix("age1") && !recipient.hasPrefix("ssh-") {
            throw ValidationError("--recipient must be an age recipient (age1...) or an SSH public key")
        }
    }

    func run() throws {
        BucketSyncCommand.limitMallocArenas()
        signal(SIGPIPE, SIG_IGN)
        try runReportingErrors(tool: "bucket-sync") {
            let environment = Environment.process
            var destination = try S3Location(parsing: destination)
            while destination.key.hasSuffix("/") { destination.key.removeLast() }
            var storeRequests: CountingTransport?
            var minioRequests: CountingTransport?
            let target = try s3.makeClient(tool: "bucket-sync", environment: environment) {
                let counting = CountingTransport($0)
                storeRequests = counting
                return counting
            }
            let source = try MinIOSettings.client(environment: environment, retries: s3.retries, stallTimeout: s3.stallTimeout) {
                let counting = CountingTransport($0)
                minioRequests = counting
                return counting
            }
            var options = BackupOptions(
                destination: destination, setID: set, buckets: buckets.isEmpty ? nil : buckets, excludeRegex: excludeRegex,
                fullEvery: fullEvery, codec: Codec(recipients: recipients))
            options.largeThreshold = Int64(largeMiB) << 20
            options.packSize = Int64(packMiB) << 20
            SignalTrap.install { ActiveUploads.shared.abortAll() }
            let backup = BucketBackup(
                source: source, target: target, options: options, indexKey: try MinIOSettings.indexKey(environment: environment),
                log: .standardError, emit: { try JSONOutput.printLine($0) })
            var outcome: Error?
            do { _ = try backup.run() } catch { outcome = error }
            Log.standardError.log(
                outcome == nil ? .info : .error, tool: "bucket-sync", "done",
                [("objects", "\(backup.details.objects)"), ("uploaded", "\(backup.details.objectsUploaded)"),
                 ("reused", "\(backup.details.objectsReused)"), ("bytes_uploaded", "\(backup.details.bytesUploaded)"),
                 ("requests_minio", "\(minioRequests?.count ?? 0)"), ("requests_store", "\(storeRequests?.count ?? 0)")])
            try JSONOutput.printLine(["details": backup.details])
            if let outcome { throw outcome }
        }
    }
}

struct RestoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Write a set's objects into the MinIO at MINIO_ENDPOINT, creating missing buckets.",
        discussion: """
            Objects in the target that the set does not hold are left alone and counted. Prints one JSON line per
            bucket: {"bucket","objects","bytes","blobs","extraInTarget","createdBucket","action"}.
            """)

    @OptionGroup var chosen: SetArguments

    @Flag(help: "Print the plan (buckets, objects, bytes) and change nothing.")
    var dryRun = false

    @OptionGroup var s3: S3Options

    func run() throws {
        BucketSyncCommand.limitMallocArenas()
        signal(SIGPIPE, SIG_IGN)
        try runReportingErrors(tool: "bucket-sync") {
            let environment = Environment.process
            let store = try s3.makeClient(tool: "bucket-sync", environment: environment)
            let target = try MinIOSettings.client(environment: environment, retries: s3.retries, stallTimeout: s3.stallTimeout)
            var options = try chosen.options()
            options.dryRun = dryRun
            SignalTrap.install { ActiveUploads.shared.abortAll() }
            try BucketRestore(store: store, target: target, options: options, log: .standardError, emit: { try JSONOutput.printLine($0) }).run()
        }
    }
}

struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check that every blob a set references exists with its recorded size; with --identity also each object's sha256.")

    @OptionGroup var chosen: SetArguments

    @OptionGroup var s3: S3Options

    func run() throws {
        BucketSyncCommand.limitMallocArenas()
        signal(SIGPIPE, SIG_IGN)
        try runReportingErrors(tool: "bucket-sync") {
            let store = try s3.makeClient(tool: "bucket-sync", environment: .process)
            var options = try chosen.options()
            options.verifyOnly = true
            try BucketRestore(store: store, target: nil, options: options, log: .standardError, emit: { try JSONOutput.printLine($0) }).run()
        }
    }
}

/// The set, its buckets and the identity: what `restore` and `verify` read.
struct SetArguments: ParsableArguments {
    @Argument(help: ArgumentHelp("The set, s3://BUCKET/PREFIX/ID.", valueName: "set"))
    var set: String

    @Option(name: .customLong("bucket"), help: ArgumentHelp("Only this bucket (repeatable; default: every bucket of the set).", valueName: "name"))
    var buckets: [String] = []

    @Option(help: ArgumentHelp("The age identity file of an encrypted set (verify: also decrypt every object and check its sha256).", valueName: "file"))
    var identity: String?

    func options() throws -> RestoreOptions {
        if let identity, !FileManager.default.isReadableFile(atPath: identity) {
            throw BucketSyncError.noInput("cannot read the identity file \(identity)")
        }
        return RestoreOptions(set: try setLocation(set), buckets: buckets.isEmpty ? nil : buckets, identityFile: identity)
    }
}

/// `s3://BUCKET/PREFIX/ID` with a set id as its last part.
func setLocation(_ text: String) throws -> S3Location {
    var location = try S3Location(parsing: text)
    while location.key.hasSuffix("/") { location.key.removeLast() }
    let id = location.key.split(separator: "/").last.map(String.init) ?? ""
    guard SetIDPattern.matches(id) else {
        throw BucketSyncError.usage("\(text) does not end in a set id (s3://BUCKET/PREFIX/YYYYMMDDTHHMMSSZ)")
    }
    return location
}

struct BucketsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "buckets",
        abstract: "List the buckets a backup would take, one JSON line each: {\"bucket\",\"objects\",\"bytes\"} (the preflight).")

    @Option(name: .customLong("bucket"), help: ArgumentHelp("A bucket (repeatable; default: every bucket listed).", valueName: "name"))
    var buckets: [String] = []

    @Option(help: ArgumentHelp("Leave out buckets whose name matches this regular expression.", valueName: "ere"))
    var excludeRegex: String?

    @Flag(help: "Also count each bucket's objects and bytes (one listing each).")
    var count = false

    @OptionGroup var s3: S3Options

    func run() throws {
        try runReportingErrors(tool: "bucket-sync") {
            let source = try MinIOSettings.client(environment: .process, retries: s3.retries, stallTimeout: s3.stallTimeout)
            for name in try source.selectBuckets(named: buckets.isEmpty ? nil : buckets, excludeRegex: excludeRegex) {
                var line = BucketLine(bucket: name)
                if count {
                    try source.list(bucket: name, prefix: "") { page in
                        line.objects = (line.objects ?? 0) + page.count
                        line.bytes = (line.bytes ?? 0) + page.reduce(0) { $0 + $1.size }
                    }
                } else if !buckets.isEmpty {
                    // A named bucket must exist and be listable (one key is enough to know).
                    _ = try source.listPage(bucket: name, prefix: "", continuationToken: nil, maxKeys: 1)
                }
                try JSONOutput.printLine(line)
            }
        }
    }
}

struct BucketLine: Codable {
    var bucket: String
    var objects: Int? = nil
    var bytes: Int64? = nil
}
