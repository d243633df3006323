import ArgumentParser
import BackupKit
import Foundation

/// `s3-prune`: Delete old backup sets under an S3 prefix by retention rules.
public struct S3PruneCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "s3-prune",
        abstract: "Delete old backup sets under an S3 prefix by retention rules.",
        usage: "s3-prune [<options>] <prefix>",
        discussion: """
            Backup sets are the folders PREFIX/<id>/ whose id is a UTC time YYYYMMDDTHHMMSSZ; a set is complete
            when it holds manifest.json. A complete set is kept if either --keep-last or --keep-days keeps it
            (both 0: all are kept); the newest complete set is always kept. Incomplete sets are deleted once
            older than --incomplete-grace. Ages come from the ids. Prints one JSON line per set:
            {"action","bytes","complete","id","objects","reason"}. Blobs under PREFIX/blobs/ (bucket-sync's stored
            bytes) are deleted once no kept set's blob list references them and they are older than
            --incomplete-grace; if a kept set's list cannot be read, no blob is deleted. Other keys under the
            prefix are never touched.
            """,
        version: KDLBackupVersion.current)

    // Optional for the parser only (see `required`); run() requires it.
    @Argument(help: ArgumentHelp("The bucket and the prefix holding the sets, s3://BUCKET/PREFIX (required, not empty).", valueName: "prefix"))
    public var prefix: String?

    @Option(help: ArgumentHelp("Keep the newest N complete sets (0: no count rule).", valueName: "n"))
    public var keepLast: Int = 0

    @Option(help: ArgumentHelp("Keep complete sets younger than D days (0: no age rule).", valueName: "days"))
    public var keepDays: Int = 0

    @Option(help: ArgumentHelp("Age after which an incomplete set (no manifest.json) is deleted, e.g. 48h, 2d, 90m.", valueName: "duration"))
    public var incompleteGrace: String = "48h"

    @Flag(help: "Print what would be deleted; delete nothing.")
    public var dryRun = false

    @Option(help: ArgumentHelp("Judge ages as of this UTC time, YYYYMMDDTHHMMSSZ (default: now).", valueName: "time"))
    public var now: String?

    @OptionGroup public var s3: S3Options

    public init() {}

    /// `48h`, `2d`, `90m`, `3600s` or plain seconds.
    static func parseDuration(_ text: String) -> TimeInterval? {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
        guard let last = text.last else { return nil }
        if let factor = units[last], let value = Double(text.dropLast()), value >= 0 { return value * factor }
        if let value = Double(text), value >= 0 { return value }
        return nil
    }

    public func validate() throws {
        guard keepLast >= 0, keepDays >= 0 else { throw ValidationError("--keep-last and --keep-days cannot be negative") }
        guard Self.parseDuration(incompleteGrace) != nil else {
            throw ValidationError("--incomplete-grace is not a duration (e.g. 48h): \(incompleteGrace)")
        }
        if let now, UTCTime.parseCompact(now) == nil { throw ValidationError("--now must look like 20240501T020000Z") }
    }

    public func run() throws {
        let prefix = try required(prefix, "<prefix>")
        try runReportingErrors(tool: "s3-prune") {
            let location = try S3Location(parsing: prefix)
            let trimmed = location.key.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
            guard !trimmed.isEmpty else {
                throw S3Error.usage("refusing to prune a whole bucket: give a prefix, e.g. s3://\(location.bucket)/kdl-backup")
            }
            let client = try s3.makeClient(tool: "s3-prune", environment: .process)
            let pruner = Pruner(
                client: client,
                rules: RetentionRules(keepLast: keepLast, keepDays: keepDays, incompleteGrace: Self.parseDuration(incompleteGrace) ?? 0))
            let instant = now.flatMap(UTCTime.parseCompact) ?? Date()
            let decisions = try pruner.prune(bucket: location.bucket, prefix: trimmed + "/", now: instant, dryRun: dryRun)
            for decision in decisions { try JSONOutput.printLine(decision) }
        }
    }
}

/// Lists a prefix, plans retention and deletes with batched DeleteObjects.
public struct Pruner {
    let client: S3Client
    let rules: RetentionRules

    public init(client: S3Client, rules: RetentionRules) {
        self.client = client
        self.rules = rules
    }

    public func prune(bucket: String, prefix: String, now: Date, dryRun: Bool) throws -> [PruneDecision] {
        var objects: [S3Object] = []
        try client.list(bucket: bucket, prefix: prefix) { objects.append(contentsOf: $0) }
        let grouped = Retention.group(objects, prefix: prefix)
        if !grouped.ignored.isEmpty {
            client.log.log(
                .warn, tool: "s3-prune", "keys outside any backup set are left alone",
                [("bucket", bucket), ("prefix", prefix), ("count", "\(grouped.ignored.count)"), ("example", grouped.ignored[0])])
        }
        let decisions = Retention.plan(grouped.sets, rules: rules, now: now)
        var batches = Retention.deletionBatches(grouped.sets, decisions: decisions)
        let blobs = try unreferencedBlobs(objects, sets: grouped.sets, decisions: decisions, bucket: bucket, prefix: prefix, now: now)
        let blobKeys = blobs.map(\.key)
        batches += stride(from: 0, to: blobKeys.count, by: 1000).map { Array(blobKeys[$0..<min($0 + 1000, blobKeys.count)]) }
        if !dryRun {
            for batch in batches { try client.deleteObjects(bucket: bucket, keys: batch) }
        }
        if blobs.count > 0 || objects.contains(where: { $0.key.hasPrefix(prefix + Retention.blobsFolder) }) {
            client.log.log(
                .info, tool: "s3-prune", dryRun ? "dry run: unreferenced blobs" : "unreferenced blobs deleted",
                [("bucket", bucket), ("prefix", prefix), ("blobs", "\(blobs.count)"), ("bytes", "\(blobs.reduce(0) { $0 + $1.size })")])
        }
        let deleted = decisions.filter { $0.action == "delete" }
        client.log.log(
            .info, tool: "s3-prune", dryRun ? "dry run: nothing deleted" : "pruned",
            [("bucket", bucket), ("prefix", prefix), ("sets", "\(decisions.count)"), ("deleted_sets", "\(deleted.count)"),
             ("deleted_objects", "\(batches.reduce(0) { $0 + $1.count })")])
        return decisions
    }

    /// Blobs no kept set references (their lists read from S3), older than the grace period; none when a kept
    /// set's list cannot be read (a blob it needs might otherwise go).
    func unreferencedBlobs(_ objects: [S3Object], sets: [BackupSet], decisions: [PruneDecision], bucket: String, prefix: String, now: Date)
        throws -> [S3Object]
    {
        guard objects.contains(where: { $0.key.hasPrefix(prefix + Retention.blobsFolder) }) else { return [] }
        var referenced = Set<String>()
        for list in Retention.keptBlobLists(sets, decisions: decisions) {
            let body = try client.getData(bucket: bucket, key: list)
            for line in body.split(separator: 0x0a) where !line.isEmpty {
                guard let entry = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any], let key = entry["key"] as? String
                else {
                    throw S3Error.integrity("s3://\(bucket)/\(list) is not a blob list: no blob is deleted")
                }
                referenced.insert(key)
            }
        }
        return Retention.unreferencedBlobs(objects, prefix: prefix, referenced: referenced, grace: rules.incompleteGrace, now: now)
    }
}
