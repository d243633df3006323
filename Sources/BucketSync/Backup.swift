import BackupKit
import Foundation
import S3

public struct BackupOptions: Sendable {
    /// The backup bucket and prefix (no trailing slash).
    public var destination: S3Location
    public var setID: String
    /// nil: every bucket the credentials list.
    public var buckets: [String]?
    public var excludeRegex: String?
    public var fullEvery: Int
    public var codec: Codec
    public var packSize: Int64 = 32 << 20
    public var largeThreshold: Int64 = 4 << 20
    /// Small objects read at once: at most this many, and this many bytes.
    public var batchObjects = 16
    public var batchBytes: Int64 = 4 << 20
    public var progressInterval: Double = 10
    /// Part buffers: a pack, the index and a large object may upload at once; with the runtime (about 25 MiB)
    /// they stay within the 64 MiB a process may use: 3 × 2 × 5 MiB, or a batch of small objects (4 MiB) in
    /// place of the large object's.
    public var packPutOptions = BackupOptions.putOptions(partMiB: 5, concurrency: 2)
    public var indexPutOptions = BackupOptions.putOptions(partMiB: 5, concurrency: 2)
    public var blobPutOptions = BackupOptions.putOptions(partMiB: 5, concurrency: 2)

    static func putOptions(partMiB: Int64, concurrency: Int) -> PutOptions {
        var options = PutOptions()
        options.partSize = partMiB << 20
        options.concurrency = concurrency
        return options
    }

    public init(destination: S3Location, setID: String, buckets: [String]?, excludeRegex: String?, fullEvery: Int, codec: Codec) {
        self.destination = destination
        self.setID = setID
        self.buckets = buckets
        self.excludeRegex = excludeRegex
        self.fullEvery = fullEvery
        self.codec = codec
    }
}

/// What a run did, summed over its buckets (the manifest's `details`: counts and bytes only).
public struct BackupDetails: Codable, Sendable, Equatable {
    public var buckets = 0
    public var objects = 0
    public var objectsUploaded = 0
    public var objectsReused = 0
    public var bytes: Int64 = 0
    public var bytesUploaded: Int64 = 0
    public var chainLength = 0
    public var changedDuringBackup = 0
    public var bucketsFailed = 0
    public var previous: String?
}

/// `bucket-sync backup`: each bucket listed, compared with the previous set's index, new and changed objects
/// packed (small) or stored alone (large), the index and the blob list written; unchanged objects cost nothing.
public final class BucketBackup {
    let source: S3Client
    let target: S3Client
    let options: BackupOptions
    let indexKey: IndexKey
    let log: Log
    let emit: (StoredObject) throws -> Void
    var details = BackupDetails()
    private var indexRecipient = ""

    public init(source: S3Client, target: S3Client, options: BackupOptions, indexKey: IndexKey, log: Log, emit: @escaping (StoredObject) throws -> Void) {
        self.source = source
        self.target = target
        self.options = options
        self.indexKey = indexKey
        self.log = log
        self.emit = emit
    }

    var root: String { options.destination.key.isEmpty ? "" : options.destination.key + "/" }

    /// Runs every bucket; a bucket that fails is logged and counted and the others still run.
    public func run() throws -> BackupDetails {
        let names = try selectedBuckets()
        if options.codec.encrypted { indexRecipient = try indexKey.recipient() }
        let previous = try PreviousSet.find(client: target, destination: options.destination, before: options.setID, log: log)
        var reuse = previous
        if let previous, previous.chainLength >= options.fullEvery {
            log.log(.info, tool: "bucket-sync", "full upload", [("previous", previous.id), ("chain_length", "\(previous.chainLength)"), ("full_every", "\(options.fullEvery)")])
            reuse = nil
        }
        details.chainLength = reuse.map { $0.chainLength + 1 } ?? 0
        details.previous = reuse?.id
        log.log(.info, tool: "bucket-sync", "start", [("buckets", "\(names.count)"), ("previous", reuse?.id ?? "none"), ("chain_length", "\(details.chainLength)")])
        var failures: [String] = []
        for name in names {
            do {
                try backup(bucket: name, previous: reuse)
                details.buckets += 1
            } catch {
                details.bucketsFailed += 1
                failures.append(name)
                log.log(.error, tool: "bucket-sync", "bucket failed", [("bucket", name), ("error", "\(error)")])
            }
        }
        if !failures.isEmpty {
            throw BucketSyncError.partial("\(failures.count) of \(names.count) buckets failed: \(failures.joined(separator: " "))")
        }
        return details
    }

    func selectedBuckets() throws -> [String] {
        try source.selectBuckets(named: options.buckets, excludeRegex: options.excludeRegex)
    }

    func openPrevious(bucket: String, previous: PreviousSet?) -> PreviousIndex? {
        guard let previous, let index = previous.object(bucket: bucket, "index.jsonl"), let list = previous.object(bucket: bucket, "blobs.jsonl") else {
            return nil
        }
        do {
            let blobs = try BlobEntry.loadList(client: target, location("\(previous.id)/\(list.key)"), sha256: list.sha256)
            let download = try DecodedDownload(
                client: target, location: S3Location(bucket: options.destination.bucket, key: "\(root)\(previous.id)/\(index.key)"),
                expectedSHA256: index.sha256, decoder: Codec.decoder(encrypted: index.encrypted, identityFile: nil, identityOnFD3: true),
                identity: index.encrypted ? indexKey.identity : nil)
            return PreviousIndex(download: download, blobs: blobs)
        } catch {
            log.log(.warn, tool: "bucket-sync", "previous index unusable: storing every object again", [("bucket", bucket), ("error", "\(error)")])
            return nil
        }
    }

    func backup(bucket: String, previous: PreviousSet?) throws {
        let work = BucketWork(backup: self, bucket: bucket)
        let previousIndex = openPrevious(bucket: bucket, previous: previous)
        do {
            try work.run(previous: previousIndex)
        } catch {
            previousIndex?.abandon()
            work.abandon()
            throw error
        }
    }

    func location(_ relative: String) -> S3Location {
        S3Location(bucket: options.destination.bucket, key: root + relative)
    }

    func encoder(forIndex: Bool) -> [String] {
        options.codec.encoder(extraRecipients: forIndex ? [indexRecipient] : [])
    }
}
