import BackupKit
import Foundation
import Testing

@testable import BucketSync
@testable import S3

@Suite(.serialized) struct BackupTests {
    static func unzstd(_ data: Data) throws -> Data {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["zstd", "-d", "-q", "-c"]
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        input.fileHandleForWriting.write(data)
        try input.fileHandleForWriting.close()
        let plain = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return plain
    }

    func run(_ server: FakeBuckets, set: String = "20261206T020000Z", progressEvery: Double = 10, log: Log? = nil) throws -> (
        BackupDetails, [StoredObject]
    ) {
        let client = try server.client()
        var stored: [StoredObject] = []
        var options = BackupOptions(
            destination: S3Location(bucket: "kdl-backups", key: "kdl-backup"), setID: set, buckets: ["churn"], excludeRegex: nil,
            fullEvery: 8, codec: Codec(recipients: []))
        options.progressInterval = progressEvery
        let backup = BucketBackup(
            source: client, target: client, options: options, indexKey: IndexKey(minioSecret: "s"), log: log ?? client.log,
            emit: { stored.append($0) })
        return (try backup.run(), stored)
    }

    func index(_ server: FakeBuckets, set: String = "20261206T020000Z") throws -> [IndexEntry] {
        let body = try #require(server.buckets["kdl-backups"]?["kdl-backup/\(set)/minio/churn.index.jsonl.zst"]?.body)
        return try Self.unzstd(body).split(separator: 0x0a).map { try JSONDecoder().decode(IndexEntry.self, from: Data($0)) }
    }

    @Test func anObjectChangedBetweenTheListingAndTheReadIsStoredAsItIsNowAndCounted() throws {
        let server = FakeBuckets()
        server.put("kdl-backups", "kdl-backup/.keep", Data())
        server.put("churn", "data/raw/a.csv", Data("a,1\n".utf8))
        server.put("churn", "data/raw/b é.csv", Data("b,1\n".utf8), metadata: ["origin": "seed"])
        server.put("churn", "data/raw/c.csv", Data("c,1\n".utf8))
        var changed = false
        server.beforeGet = { bucket, key in
            guard bucket == "churn", key == "data/raw/b é.csv", !changed else { return }
            changed = true
            server.put("churn", key, Data("b,2 rewritten\n".utf8), metadata: ["origin": "writer"])
        }
        let (details, stored) = try run(server)
        #expect(details.changedDuringBackup == 1)
        #expect(details.objects == 3 && details.objectsUploaded == 3)
        let entry = try #require(try index(server).first { $0.key == "data/raw/b é.csv" })
        #expect(entry.sha256 == SHA256Digest.hash(Data("b,2 rewritten\n".utf8)).hexString)
        #expect(entry.size == 14 && entry.metadata == ["origin": "writer"])
        #expect(entry.etag == server.buckets["churn"]!["data/raw/b é.csv"]!.etag)
        #expect(stored.map(\.key) == ["minio/churn.index.jsonl.zst", "minio/churn.blobs.jsonl"])
    }

    @Test func anUnchangedBucketReusesEveryObjectAndReadsNone() throws {
        let server = FakeBuckets()
        server.put("kdl-backups", "kdl-backup/.keep", Data())
        for n in 0..<5 { server.put("churn", "data/raw/\(n).csv", Data("row \(n)\n".utf8)) }
        let (_, stored) = try run(server)
        let manifest: [String: Any] = [
            "components": [[
                "name": "minio", "status": "success", "details": ["chainLength": 0],
                "objects": stored.map { ["key": $0.key, "sha256": $0.sha256, "encrypted": false] },
            ]]
        ]
        server.put("kdl-backups", "kdl-backup/20261206T020000Z/manifest.json", try JSONSerialization.data(withJSONObject: manifest))
        server.gets.removeAll()
        let (details, _) = try run(server, set: "20261207T020000Z")
        #expect((details.objectsReused, details.objectsUploaded, details.chainLength) == (5, 0, 1))
        #expect(!server.gets.contains { $0.hasPrefix("data/") })  // no source object read
        #expect(try index(server, set: "20261207T020000Z") == (try index(server)))
    }

    @Test func progressLinesSayObjectsAndBytesDoneOfTheTotal() throws {
        let server = FakeBuckets()
        server.put("kdl-backups", "kdl-backup/.keep", Data())
        for n in 0..<3 { server.put("churn", "data/raw/\(n).csv", Data("row \(n)\n".utf8)) }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("bucket-sync-log-\(UUID().uuidString)").path
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        defer { try? FileManager.default.removeItem(atPath: path) }
        _ = try run(server, progressEvery: 0, log: Log(handle: FileHandle(forWritingAtPath: path)!))
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").filter { $0.contains("msg=progress") }
        #expect(lines.count == 4)  // one per object, then the last one with the totals counted
        #expect(lines.last?.contains("bucket=churn objects_done=3 objects_total=3 bytes_done=18 bytes_total=18") == true)
    }
}
