import Foundation
import Synchronization
import Testing

@testable import MLflowScan

/// How snapshots are copied: rollback-journal stores byte for byte under the read transaction's SHARED lock,
/// WAL stores with the online backup API through the gathering VFS; the store's lock is held for the copy only.
@Suite struct SnapshotCopyTests {
    @Test func aRollbackStoreIsCopiedAsItsCommittedFileWhileAWriterHoldsUncommittedRuns() throws {
        let tree = try StoreTree()
        let folder = try tree.folder("kdl-roll-mlflow-claim-pvc-01")
        let writer = try tree.mlflowStore(in: folder, runs: 40)
        let committed = try Data(contentsOf: URL(fileURLWithPath: folder.appending("mlflow.db").text))
        // A writer in the middle of a transaction (RESERVED lock, changes in its own cache): not in the copy.
        try writer.execute("BEGIN IMMEDIATE")
        _ = try writer.rows(
            "INSERT INTO runs (run_uuid, status, lifecycle_stage, experiment_id) VALUES ('ffffffffffffffffffffffffffffffff', 'RUNNING', 'active', 0)")

        let store = try #require(try tree.scan(snapshot: true).store("roll"))
        let snapshot = try #require(store.snapshot)
        #expect(store.status == .ok)
        #expect(store.runs == 40)
        #expect(snapshot.method == "shared-lock-copy")
        #expect(snapshot.integrity == "ok")
        let copy = try Data(contentsOf: URL(fileURLWithPath: try #require(snapshot.path)))
        #expect(copy == committed)
        #expect(try count("runs", in: try #require(snapshot.path)) == 40)
        // The scan's lock is gone: the writer commits without waiting.
        try writer.execute("COMMIT")
        #expect(try writer.integer("SELECT count(*) FROM runs") == 41)
    }

    @Test func aWALStoreSpanningManyWritesIsCopiedWithTheBackupAPI() throws {
        let tree = try StoreTree()
        let folder = try tree.folder("kdl-walbig-mlflow-claim-pvc-02")
        let writer = try tree.mlflowStore(in: folder, runs: 10, wal: true)
        try writer.execute("PRAGMA wal_autocheckpoint = 0")
        // About 2 MiB of metrics, half checkpointed into mlflow.db and half only in mlflow.db-wal, so the copy takes
        // pages from both files and the destination sees many gathered 124 KiB writes.
        let metrics = """
            WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 14999)
            INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan)
            SELECT 'loss', i / 3.0, 1700000000000 + i, printf('%032x', i % 10), i + ?, 0 FROM n
            """
        _ = try writer.rows(metrics, [.integer(1_000_000)])
        try writer.execute("PRAGMA wal_checkpoint(PASSIVE)")
        _ = try writer.rows(metrics, [.integer(2_000_000)])
        let fingerprint = "SELECT count(*), total(value), sum(step), max(rowid) FROM metrics"
        let expected = try writer.rows(fingerprint)

        let store = try #require(try tree.scan(snapshot: true).store("walbig"))
        let snapshot = try #require(store.snapshot)
        #expect(store.status == .ok)
        #expect((store.walBytes ?? 0) > 1 << 20)
        #expect(snapshot.method == "backup-api")
        #expect(snapshot.integrity == "ok")
        let path = try #require(snapshot.path)
        #expect(try SQLiteConnection.openReadOnly(RawPath(path), busyTimeoutMilliseconds: 0).rows(fingerprint) == expected)
        // A rollback-mode file (header bytes 18 and 19 are 1) with nothing beside it.
        let header = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)).prefix(20))
        #expect(header.count == 20 && header[18] == 1 && header[19] == 1)
        let siblings = try FileManager.default.contentsOfDirectory(atPath: (path as NSString).deletingLastPathComponent)
        #expect(siblings == ["mlflow.db"])
    }

    @Test(arguments: [false, true])
    func theStoresLockIsHeldForTheCopyOnly(wal: Bool) throws {
        let tree = try StoreTree()
        let folder = try tree.folder("kdl-lock-mlflow-claim-pvc-03")
        // Kept open, as MLflow keeps its store open (a WAL store keeps its -wal and -shm files).
        let owner = try tree.mlflowStore(in: folder, runs: 5, wal: wal)
        // At every clock reading of the snapshot (start, end of copy, start and end of check, digest, end) another
        // connection tries to commit a run without waiting.
        let probe = WriteProbe(database: folder.appending("mlflow.db"))
        var inspector = Inspector(busyTimeoutMilliseconds: 1000, quickCheck: false)
        inspector.clock = { probe.tryCommit() }
        let candidate = Candidate(folder: folder, relative: RawPath("kdl-lock-mlflow-claim-pvc-03"), database: folder.appending("mlflow.db"), project: "lock")

        try FileManager.default.createDirectory(atPath: tree.snapshotDir, withIntermediateDirectories: true)
        let outcome = inspector.inspect(candidate, snapshotFolder: RawPath(tree.snapshotDir).appending("lock"))
        let snapshot = try #require(outcome.report.snapshot)
        #expect(snapshot.sha256 != nil)
        #expect(outcome.report.runs == 5)
        #expect(try count("runs", in: try #require(snapshot.path)) == 5)
        let results = probe.results
        #expect(results.count == 7)
        if wal {
            // WAL readers never block writers.
            #expect(results.allSatisfy { $0 })
        } else {
            // Blocked while the copy is made (its start and end), free from the check on.
            #expect(results.prefix(2) == [false, false])
            #expect(results.dropFirst(2).allSatisfy { $0 })
        }
        #expect(try owner.integer("SELECT count(*) FROM runs") == 5 + Int64(results.filter { $0 }.count))
    }
}

/// Tries to commit one run with no busy wait each time `tryCommit` is called; records whether it could.
final class WriteProbe: Sendable {
    private let state: Mutex<(next: Int, results: [Bool])> = Mutex((0, []))
    private let database: RawPath

    init(database: RawPath) { self.database = database }

    var results: [Bool] { state.withLock { $0.results } }

    func tryCommit() -> Double {
        state.withLock { state in
            let run = String(format: "%032x", 9000 + state.next)
            state.next += 1
            let committed: Bool
            do {
                let connection = try SQLiteConnection.openReadWrite(database)
                try connection.execute(
                    "BEGIN IMMEDIATE; INSERT INTO runs (run_uuid, status, lifecycle_stage, experiment_id) VALUES ('\(run)', 'RUNNING', 'active', 0); COMMIT")
                committed = true
            } catch {
                committed = false
            }
            state.results.append(committed)
        }
        return Date().timeIntervalSinceReferenceDate
    }
}
