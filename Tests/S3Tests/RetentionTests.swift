import BackupKit
import Foundation
import Testing

@testable import S3

@Suite struct RetentionTests {
    static let now = UTCTime.parseCompact("20250110T020000Z")!

    static func objects(_ sets: [(String, Bool)], prefix: String = "kdl-backup/") -> [S3Object] {
        sets.flatMap { id, complete in
            var keys = ["\(prefix)\(id)/gitea/postgres.dump", "\(prefix)\(id)/mongodb/kdl.archive.gz"]
            if complete { keys.append("\(prefix)\(id)/manifest.json") }
            return keys.map { S3Object(key: $0, size: 10, lastModified: "2020-01-01T00:00:00.000Z", etag: "e") }
        }
    }

    static let nightly = (1...9).map { (String(format: "202501%02dT020000Z", $0), true) }

    func actions(_ sets: [(String, Bool)], _ rules: RetentionRules) -> [String: String] {
        let grouped = Retention.group(Self.objects(sets), prefix: "kdl-backup/")
        return Dictionary(uniqueKeysWithValues: Retention.plan(grouped.sets, rules: rules, now: Self.now).map { ($0.id, $0.action) })
    }

    func deleted(_ sets: [(String, Bool)], _ rules: RetentionRules) -> [String] {
        actions(sets, rules).filter { $0.value == "delete" }.keys.sorted()
    }

    @Test func keepLastKeepsTheNewestN() {
        #expect(deleted(Self.nightly, RetentionRules(keepLast: 3, keepDays: 0)) == (1...6).map { String(format: "202501%02dT020000Z", $0) })
    }

    @Test func keepDaysKeepsTheYoungOnes() {
        // Younger than 2 days at 10 January 02:00: the 9th only (the 8th is exactly 2 days old).
        #expect(deleted(Self.nightly, RetentionRules(keepLast: 0, keepDays: 2)) == (1...8).map { String(format: "202501%02dT020000Z", $0) })
    }

    @Test func eitherRuleKeeps() {
        #expect(deleted(Self.nightly, RetentionRules(keepLast: 2, keepDays: 4)) == (1...6).map { String(format: "202501%02dT020000Z", $0) })
    }

    @Test func noRuleKeepsEveryCompleteSet() {
        #expect(deleted(Self.nightly, RetentionRules(keepLast: 0, keepDays: 0)) == [])
    }

    @Test func theNewestCompleteSetSurvivesEverything() {
        let old = [("20200101T000000Z", true), ("20200102T000000Z", true), ("20240101T000000Z", false)]
        #expect(deleted(old, RetentionRules(keepLast: 0, keepDays: 1, incompleteGrace: 0)) == ["20200101T000000Z", "20240101T000000Z"])
    }

    @Test func incompleteSetsWaitForTheGracePeriod() {
        let sets = Self.nightly + [("20250110T010000Z", false), ("20250107T000000Z", false)]
        let result = actions(sets, RetentionRules(keepLast: 100, keepDays: 0))
        #expect(result["20250110T010000Z"] == "keep")  // an hour old: perhaps still being written
        #expect(result["20250107T000000Z"] == "delete")
        #expect(actions(sets, RetentionRules(keepLast: 100, keepDays: 0, incompleteGrace: 7 * 86_400))["20250107T000000Z"] == "keep")
    }

    @Test func keysOutsideSetsAreIgnored() {
        let stray = ["kdl-backup/README", "kdl-backup/latest/x", "kdl-backup/2025-01-01/x", "other/20250101T000000Z/x"].map {
            S3Object(key: $0, size: 1, lastModified: "", etag: "")
        }
        let grouped = Retention.group(Self.objects(Self.nightly) + stray, prefix: "kdl-backup/")
        #expect(grouped.sets.count == 9)
        #expect(grouped.ignored == ["kdl-backup/README", "kdl-backup/latest/x", "kdl-backup/2025-01-01/x"])
        #expect(grouped.sets.allSatisfy { $0.complete && $0.keys.count == 3 && $0.bytes == 30 })
    }

    @Test func manifestsAreDeletedFirstInBatchesOfAThousand() {
        let many = (0..<700).map { (UTCTime.compact(Self.now.addingTimeInterval(Double(-86_400 * ($0 + 1)))), true) }
        let grouped = Retention.group(Self.objects(many), prefix: "kdl-backup/")
        let decisions = Retention.plan(grouped.sets, rules: RetentionRules(keepLast: 1, keepDays: 0), now: Self.now)
        let batches = Retention.deletionBatches(grouped.sets, decisions: decisions)
        #expect(batches.allSatisfy { $0.count <= 1000 })
        #expect(batches.reduce(0) { $0 + $1.count } == 699 * 3)
        #expect(batches[0].allSatisfy { $0.hasSuffix("/manifest.json") } && batches[0].count == 699)
        #expect(batches.dropFirst().allSatisfy { $0.allSatisfy { !$0.hasSuffix("/manifest.json") } })
    }

    @Test func pruneSendsDeleteObjectsWithContentMD5() throws {
        let listing = Self.objects([("20250101T020000Z", true), ("20250109T020000Z", true)])
        let transport = FakeTransport { request, body, _ in
            if request.method == "GET" {
                let contents = listing.map { "<Contents><Key>\($0.key)</Key><Size>\($0.size)</Size></Contents>" }.joined()
                return HTTPResponse(status: 200, body: Data("<R><IsTruncated>false</IsTruncated>\(contents)</R>".utf8))
            }
            #expect(request.headers.contains(HTTPHeader("Content-MD5", Data(MD5Digest.hash(body)).base64EncodedString())))
            #expect(query(of: request) == "delete=")
            return HTTPResponse(status: 200, body: Data("<DeleteResult></DeleteResult>".utf8))
        }
        let pruner = Pruner(client: try makeClient(transport), rules: RetentionRules(keepLast: 1, keepDays: 0))
        let dry = try pruner.prune(bucket: "b", prefix: "kdl-backup/", now: Self.now, dryRun: true)
        #expect(dry.map(\.action) == ["delete", "keep"])
        #expect(transport.sent.count == 1)
        _ = try pruner.prune(bucket: "b", prefix: "kdl-backup/", now: Self.now, dryRun: false)
        let deletes = transport.sent.filter { $0.request.method == "POST" }
        #expect(deletes.count == 2)  // the manifest batch, then the rest
        #expect(String(decoding: deletes[0].body, as: UTF8.self).contains("<Key>kdl-backup/20250101T020000Z/manifest.json</Key>"))
    }

    @Test func aRefusedDeleteIsReported() throws {
        let transport = FakeTransport { request, _, _ in
            if request.method == "GET" {
                return HTTPResponse(
                    status: 200,
                    body: Data(
                        "<R><IsTruncated>false</IsTruncated><Contents><Key>p/20200101T000000Z/x</Key><Size>1</Size></Contents></R>".utf8))
            }
            return HTTPResponse(
                status: 200,
                body: Data("<DeleteResult><Error><Key>p/20200101T000000Z/x</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error></DeleteResult>".utf8))
        }
        let pruner = Pruner(client: try makeClient(transport), rules: RetentionRules(keepLast: 1, keepDays: 0, incompleteGrace: 0))
        do {
            _ = try pruner.prune(bucket: "b", prefix: "p/", now: Self.now, dryRun: false)
            Issue.record("no error")
        } catch let error as S3Error {
            #expect(error.exitCode == ExitStatus.noPermission)
            #expect(error.description.contains("DeleteObjects s3://b/p/20200101T000000Z/x: AccessDenied"))
        }
    }

    @Test func blobsAreNeitherSetsNorDebris() {
        var objects = Self.objects([("20250109T020000Z", true)])
        objects.append(S3Object(key: "kdl-backup/blobs/20250109T020000Z/ab-1.zst.age", size: 5, lastModified: "2025-01-09T02:00:00.000Z", etag: "e"))
        let grouped = Retention.group(objects, prefix: "kdl-backup/")
        #expect(grouped.sets.map(\.id) == ["20250109T020000Z"])
        #expect(grouped.sets[0].keys.allSatisfy { !$0.contains("/blobs/") })
        #expect(grouped.ignored.isEmpty)
    }

    @Test func onlyUnreferencedBlobsOlderThanTheGraceGo() {
        func blob(_ name: String, _ written: String) -> S3Object {
            S3Object(key: "kdl-backup/blobs/\(name)", size: 5, lastModified: written, etag: "e")
        }
        let blobs = [
            blob("old-kept", "2025-01-01T00:00:00.000Z"), blob("old-unreferenced", "2025-01-01T00:00:00.000Z"),
            blob("young-unreferenced", "2025-01-09T12:00:00.000Z"),
        ]
        let doomed = Retention.unreferencedBlobs(
            blobs, prefix: "kdl-backup/", referenced: ["blobs/old-kept"], grace: 48 * 3600, now: Self.now)
        #expect(doomed.map(\.key) == ["kdl-backup/blobs/old-unreferenced"])
    }

    @Test func theBlobListsReadAreThoseOfKeptSets() {
        var objects = Self.objects([("20250101T020000Z", true), ("20250109T020000Z", true)])
        for id in ["20250101T020000Z", "20250109T020000Z"] {
            objects.append(S3Object(key: "kdl-backup/\(id)/minio/project-a.blobs.jsonl", size: 5, lastModified: "2025-01-01T00:00:00.000Z", etag: "e"))
        }
        let grouped = Retention.group(objects, prefix: "kdl-backup/")
        let decisions = Retention.plan(grouped.sets, rules: RetentionRules(keepLast: 1, keepDays: 0), now: Self.now)
        #expect(Retention.keptBlobLists(grouped.sets, decisions: decisions) == ["kdl-backup/20250109T020000Z/minio/project-a.blobs.jsonl"])
    }
}
