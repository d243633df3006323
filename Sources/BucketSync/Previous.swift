import BackupKit
import Foundation
import S3

/// The newest complete set whose `minio` component succeeded: its id, chain length and, per bucket, the index
/// and blob list a new set may reuse.
struct PreviousSet {
    var id: String
    var chainLength: Int
    /// Manifest objects of the component: key (relative to the set) → (sha256, encrypted).
    var objects: [String: (sha256: String, encrypted: Bool)]

    /// Reads the listing of the prefix and the manifests, newest first, until one has a successful `minio`.
    static func find(client: S3Client, destination: S3Location, before setID: String, log: Log) throws -> PreviousSet? {
        var ids: [String] = []
        let root = destination.key.isEmpty ? "" : destination.key + "/"
        try client.list(bucket: destination.bucket, prefix: destination.key) { page in
            for object in page where object.key.hasPrefix(root) && object.key.hasSuffix("/manifest.json") {
                let id = object.key.dropFirst(root.count).dropLast("/manifest.json".count)
                if !id.contains("/"), UTCTime.parseCompact(String(id)) != nil, id < setID { ids.append(String(id)) }
            }
        }
        for id in ids.sorted(by: >) {
            let key = "\(root)\(id)/manifest.json"
            let body = try client.getData(bucket: destination.bucket, key: key)
            guard let manifest = try? JSONSerialization.jsonObject(with: body) as? [String: Any],
                let components = manifest["components"] as? [[String: Any]],
                let minio = components.first(where: { $0["name"] as? String == "minio" })
            else { continue }
            guard minio["status"] as? String == "success" else {
                log.log(.info, tool: "bucket-sync", "previous set skipped", [("id", id), ("reason", "its minio component did not succeed")])
                continue
            }
            let details = minio["details"] as? [String: Any] ?? [:]
            var objects: [String: (String, Bool)] = [:]
            for object in minio["objects"] as? [[String: Any]] ?? [] {
                if let key = object["key"] as? String, let sha = object["sha256"] as? String {
                    objects[key] = (sha, object["encrypted"] as? Bool ?? false)
                }
            }
            return PreviousSet(id: id, chainLength: details["chainLength"] as? Int ?? 0, objects: objects)
        }
        return nil
    }

    /// The stored key (relative to the set) of `bucket`'s object `name` (`index.jsonl` or `blobs.jsonl`).
    func object(bucket: String, _ name: String) -> (key: String, sha256: String, encrypted: Bool)? {
        for (key, value) in objects where key.hasPrefix("minio/\(bucket).\(name)") {
            return (key, value.sha256, value.encrypted)
        }
        return nil
    }
}

/// The previous index of one bucket, read line by line in key order beside the new listing.
final class PreviousIndex {
    private let download: DecodedDownload
    private var pending: IndexEntry?
    private var exhausted = false
    let blobs: [String: BlobEntry]

    init(download: DecodedDownload, blobs: [String: BlobEntry]) {
        self.download = download
        self.blobs = blobs
    }

    /// The previous entry for `key`, if any (entries before it are passed over: deleted since).
    func entry(for key: String) throws -> IndexEntry? {
        while !exhausted {
            if pending == nil {
                guard let line = try download.reader.readLine() else {
                    exhausted = true
                    break
                }
                pending = try JSONLine.decode(IndexEntry.self, line, what: "\(download.location)")
            }
            guard let candidate = pending else { break }
            if candidate.key == key {
                pending = nil
                return candidate
            }
            if keyPrecedes(key, candidate.key) { return nil }
            pending = nil
        }
        return nil
    }

    /// Reads the rest and checks the download's sha256 (reused entries are trusted only after this).
    func finish() throws { try download.finish() }
    func abandon() { download.abandon() }
}
