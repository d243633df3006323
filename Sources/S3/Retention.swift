import BackupKit
import Foundation

/// The objects of one `<prefix>/<id>/` backup set.
public struct BackupSet: Sendable, Equatable {
    public var id: String
    public var date: Date
    /// `manifest.json` exists: the backup finished writing this set.
    public var complete: Bool
    public var keys: [String]
    public var bytes: Int64

    public init(id: String, date: Date, complete: Bool, keys: [String], bytes: Int64) {
        self.id = id
        self.date = date
        self.complete = complete
        self.keys = keys
        self.bytes = bytes
    }
}

/// Which sets to keep. A complete set is kept if either rule keeps it; with both rules at 0 every complete set is kept.
public struct RetentionRules: Sendable {
    public var keepLast: Int
    public var keepDays: Int
    /// Incomplete sets (no manifest) younger than this may still be being written.
    public var incompleteGrace: TimeInterval

    public init(keepLast: Int, keepDays: Int, incompleteGrace: TimeInterval = 48 * 3600) {
        self.keepLast = keepLast
        self.keepDays = keepDays
        self.incompleteGrace = incompleteGrace
    }
}

/// One line of s3-prune's output.
public struct PruneDecision: Codable, Sendable, Equatable {
    public var id: String
    public var complete: Bool
    public var action: String
    public var reason: String
    public var objects: Int
    public var bytes: Int64
}

public enum Retention {
    public static let manifestName = "manifest.json"
    /// `<prefix>/blobs/`: stored bytes shared by sets (bucket-sync); never a set, never debris.
    public static let blobsFolder = "blobs/"
    /// `<id>/minio/<bucket>.blobs.jsonl`: the blobs a set references.
    public static let blobListSuffix = ".blobs.jsonl"

    /// Groups a listing of `prefix` (ending in `/`) into sets by their id; keys that are not under a
    /// `YYYYMMDDTHHMMSSZ/` folder are returned apart and never deleted.
    public static func group(_ objects: [S3Object], prefix: String) -> (sets: [BackupSet], ignored: [String]) {
        var byID: [String: BackupSet] = [:]
        var ignored: [String] = []
        for object in objects {
            guard object.key.hasPrefix(prefix) else { continue }
            let rest = object.key.dropFirst(prefix.count)
            if rest.hasPrefix(blobsFolder) { continue }
            guard let slash = rest.firstIndex(of: "/") else {
                ignored.append(object.key)
                continue
            }
            let id = String(rest[..<slash])
            guard let date = UTCTime.parseCompact(id) else {
                ignored.append(object.key)
                continue
            }
            var set = byID[id] ?? BackupSet(id: id, date: date, complete: false, keys: [], bytes: 0)
            set.keys.append(object.key)
            set.bytes += object.size
            if rest[rest.index(after: slash)...] == manifestName { set.complete = true }
            byID[id] = set
        }
        return (byID.values.sorted { $0.id < $1.id }, ignored)
    }

    /// Decides each set's fate at time `now` (ages come from the ids, not from object times).
    public static func plan(_ sets: [BackupSet], rules: RetentionRules, now: Date) -> [PruneDecision] {
        let complete = sets.filter(\.complete).sorted { $0.date > $1.date }
        let rank = Dictionary(uniqueKeysWithValues: complete.enumerated().map { ($1.id, $0) })
        return sets.sorted { $0.id < $1.id }.map { set in
            let age = now.timeIntervalSince(set.date)
            var keep: Bool
            var reason: String
            if !set.complete {
                keep = age <= rules.incompleteGrace
                reason =
                    keep
                    ? "incomplete, within the grace period (may still be written)" : "incomplete, older than the grace period"
            } else if rank[set.id] == 0 {
                keep = true
                reason = "newest complete set"
            } else if rules.keepLast <= 0 && rules.keepDays <= 0 {
                keep = true
                reason = "no retention rule"
            } else {
                let byLast = rules.keepLast > 0 && (rank[set.id] ?? Int.max) < rules.keepLast
                let byDays = rules.keepDays > 0 && age < Double(rules.keepDays) * 86_400
                keep = byLast || byDays
                if byLast {
                    reason = "within the last \(rules.keepLast)"
                } else if byDays {
                    reason = "younger than \(rules.keepDays) days"
                } else {
                    reason = "outside the retention rules"
                }
            }
            return PruneDecision(
                id: set.id, complete: set.complete, action: keep ? "keep" : "delete", reason: reason, objects: set.keys.count,
                bytes: set.bytes)
        }
    }

    /// The keys to delete, in batches of at most `batchSize`: every manifest first, so that an interrupted prune
    /// leaves incomplete sets (cleaned up by the next run) rather than complete-looking sets with missing objects.
    public static func deletionBatches(_ sets: [BackupSet], decisions: [PruneDecision], batchSize: Int = 1000) -> [[String]] {
        let doomed = Set(decisions.filter { $0.action == "delete" }.map(\.id))
        let keys = sets.filter { doomed.contains($0.id) }.flatMap(\.keys)
        let manifests = keys.filter { $0.hasSuffix("/" + manifestName) }
        let others = keys.filter { !$0.hasSuffix("/" + manifestName) }
        func chunks(_ list: [String]) -> [[String]] {
            stride(from: 0, to: list.count, by: batchSize).map { Array(list[$0..<min($0 + batchSize, list.count)]) }
        }
        return chunks(manifests) + chunks(others)
    }

    /// The blob lists (`<id>/minio/*.blobs.jsonl`) of the sets `decisions` keeps.
    public static func keptBlobLists(_ sets: [BackupSet], decisions: [PruneDecision]) -> [String] {
        let kept = Set(decisions.filter { $0.action == "keep" }.map(\.id))
        return sets.filter { kept.contains($0.id) }.flatMap(\.keys).filter { $0.contains("/minio/") && $0.hasSuffix(blobListSuffix) }
    }

    /// The blobs under `<prefix>/blobs/` that no kept set references and that are older than `grace` (a run in
    /// progress may be writing the younger ones). `referenced` holds keys relative to the prefix.
    public static func unreferencedBlobs(_ objects: [S3Object], prefix: String, referenced: Set<String>, grace: TimeInterval, now: Date)
        -> [S3Object]
    {
        objects.filter { object in
            guard object.key.hasPrefix(prefix + blobsFolder), !referenced.contains(String(object.key.dropFirst(prefix.count))) else {
                return false
            }
            guard let written = UTCTime.parseISO8601(object.lastModified) else { return false }
            return now.timeIntervalSince(written) > grace
        }
    }
}
