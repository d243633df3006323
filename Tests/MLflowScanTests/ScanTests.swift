import BackupKit
import Foundation
import Testing

@testable import MLflowScan

/// Scans of real SQLite stores in temporary trees (run as any user; permission cases are in Tests/e2e).
@Suite struct ScanTests {
    @Test func rollbackStoreIsCountedAndSnapshotted() throws {
        let tree = try StoreTree()
        let folder = try tree.folder("kdl-demo-mlflow-claim-pvc-1a2b3c4d")
        try tree.mlflowStore(in: folder, runs: 5)
        let artifacts = try tree.folder("kdl-demo-mlflow-claim-pvc-1a2b3c4d/mlruns/0/abc/artifacts")
        try tree.write(Array(repeating: 7, count: 1000), to: artifacts.appending("model.pkl"))
        try tree.write([1, 2, 3], to: artifacts.appending("MLmodel"))

        let report = try tree.scan(snapshot: true)
        let store = try #require(report.store("demo"))
        #expect(store.status == .ok)
        #expect(store.kind == "mlflow")
        #expect(store.journalMode == "delete")
        #expect(store.experiments == 1)
        #expect(store.runs == 5)
        #expect(store.walBytes == 0)
        #expect(store.schemaVersion == "acf3f17fdcc7")
        #expect(store.error == nil)
        #expect(store.artifacts == [ArtifactFolder(name: "mlruns", files: 2, bytes: 1003)])
        let attributes = try FileManager.default.attributesOfItem(atPath: folder.appending("mlflow.db").text)
        #expect(store.dbBytes == (attributes[.size] as? Int64))

        let snapshot = try #require(store.snapshot)
        #expect(snapshot.path == tree.snapshotDir + "/demo/mlflow.db")
        #expect(snapshot.integrity == "ok")
        #expect(snapshot.check == "integrity")
        #expect(snapshot.error == nil)
        let data = try Data(contentsOf: URL(fileURLWithPath: tree.snapshotDir + "/demo/mlflow.db"))
        #expect(snapshot.bytes == Int64(data.count))
        #expect(snapshot.sha256 == SHA256Digest.hash(data).hexString)
        #expect(try count("runs", in: tree.snapshotDir + "/demo/mlflow.db") == 5)
        #expect(try count("params", in: tree.snapshotDir + "/demo/mlflow.db") == 15)
        #expect(report.summary.ok == 1 && report.summary.snapshots == 1)
    }

    @Test func walStoreIsReadWithItsUncheckpointedWAL() throws {
        let tree = try StoreTree()
        let folder = try tree.folder("kdl-wal-mlflow-claim-pvc-77")
        // The writer stays open: its last commits are only in mlflow.db-wal.
        let writer = try tree.mlflowStore(in: folder, runs: 3, wal: true)
        try writer.execute("PRAGMA wal_autocheckpoint = 0")
        try StoreTree.addRuns(writer, from: 3, count: 4)

        let report = try tree.scan(snapshot: true)
        let store = try #require(report.store("wal"))
        #expect(store.status == .ok)
        #expect(store.journalMode == "wal")
        #expect((store.walBytes ?? 0) > 0)
        #expect(store.runs == 7)
        let copy = tree.snapshotDir + "/wal/mlflow.db"
        #expect(try count("runs", in: copy) == 7)
        // The copy is one self-contained rollback-mode file.
        #expect(try SQLiteConnection.openReadOnly(RawPath(copy), busyTimeoutMilliseconds: 0).text("PRAGMA journal_mode") == "delete")
        #expect(!FileManager.default.fileExists(atPath: copy + "-wal"))
        #expect(!FileManager.default.fileExists(atPath: tree.snapshotDir + "/wal/.mlflow.db.partial"))
        // Reading did not disturb the writer.
        try StoreTree.addRuns(writer, from: 7, count: 1)
        #expect(try writer.integer("SELECT count(*) FROM runs") == 8)
    }

    @Test func corruptZeroByteAndForeignDatabasesAreReportedNotCopied() throws {
        let tree = try StoreTree()
        try tree.write((0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }, to: try tree.folder("garbage").appending("mlflow.db"))
        try tree.write([], to: try tree.folder("zero").appending("mlflow.db"))
        let foreign = try SQLiteConnection.openReadWrite(try tree.folder("foreign").appending("mlflow.db"))
        try foreign.execute("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('not mlflow')")

        let report = try tree.scan(snapshot: true)
        let garbage = try #require(report.store("garbage"))
        #expect(garbage.status == .corrupt)
        #expect(garbage.error?.contains("not an SQLite database") == true)
        let zero = try #require(report.store("zero"))
        #expect(zero.status == .notMLflow)
        #expect(zero.dbBytes == 0)
        #expect(zero.error == "mlflow.db is empty (0 bytes)")
        let other = try #require(report.store("foreign"))
        #expect(other.status == .notMLflow)
        #expect(other.kind == "not-mlflow")
        #expect(other.runs == nil)
        for store in [garbage, zero, other] { #expect(store.snapshot == nil) }
        #expect(report.summary.corrupt == 1 && report.summary.notMLflow == 2 && report.summary.snapshots == 0)
        #expect(!FileManager.default.fileExists(atPath: tree.snapshotDir + "/garbage"))
    }

    @Test(arguments: [SnapshotCheck.integrity, .quick])
    func damagedMetricPagesFailTheCopysCheck(check: SnapshotCheck) throws {
        let tree = try StoreTree()
        let folder = try tree.folder("damaged")
        try Self.damageMetricPages(of: tree, in: folder)

        // A copy from an earlier, healthy run must not survive the failed one.
        try FileManager.default.createDirectory(atPath: tree.snapshotDir + "/damaged", withIntermediateDirectories: true)
        try tree.write([1, 2, 3], to: RawPath(tree.snapshotDir + "/damaged/mlflow.db"))
        let options = ScanOptions(root: tree.root.path, snapshotDir: tree.snapshotDir, snapshotCheck: check)
        let store = try #require(try Scanner(options: options).run().report.store("damaged"))
        #expect(store.runs == 5)
        #expect(store.status == .corrupt)
        #expect(store.error?.hasPrefix("\(check.rawValue)_check: ") == true)
        let snapshot = try #require(store.snapshot)
        #expect(snapshot.check == check.rawValue)
        #expect(snapshot.integrity != nil && snapshot.integrity != "ok")
        #expect(snapshot.sha256 == nil)
        #expect(!FileManager.default.fileExists(atPath: tree.snapshotDir + "/damaged/mlflow.db"))
        #expect(!FileManager.default.fileExists(atPath: tree.snapshotDir + "/damaged/.mlflow.db.partial"))
    }

    @Test func checkNoneLeavesTheCheckToTheCaller() throws {
        let tree = try StoreTree()
        let folder = try tree.folder("damaged")
        try Self.damageMetricPages(of: tree, in: folder)
        let options = ScanOptions(root: tree.root.path, snapshotDir: tree.snapshotDir, snapshotCheck: SnapshotCheck.none)
        let store = try #require(try Scanner(options: options).run().report.store("damaged"))
        #expect(store.status == .ok)
        let snapshot = try #require(store.snapshot)
        #expect(snapshot.check == "none")
        #expect(snapshot.integrity == nil && snapshot.checkSeconds == nil)
        #expect(snapshot.sha256 != nil)
        #expect(FileManager.default.fileExists(atPath: tree.snapshotDir + "/damaged/mlflow.db"))
    }

    /// An MLflow store of 5 runs whose last metric pages are overwritten with noise.
    static func damageMetricPages(of tree: StoreTree, in folder: RawPath) throws {
        let writer = try tree.mlflowStore(in: folder, runs: 5)
        // Many metrics after the runs: the file's last pages belong only to the metrics table and its index,
        // which counting experiments and runs never reads, so only the check of the copy can find the damage.
        try writer.execute(
            """
            WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 19999)
            INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan)
            SELECT 'loss', i / 7.0, 1700000000000 + i, printf('%032x', i % 5), i, 0 FROM n
            """)
        let path = folder.appending("mlflow.db").text
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let pageSize = 4096
        for index in (bytes.count - pageSize * 20)..<(bytes.count - pageSize * 2) { bytes[index] = UInt8(truncatingIfNeeded: index &* 131) }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    @Test func symlinksStayInsideRootAndLoopsEnd() throws {
        let tree = try StoreTree()
        try tree.mlflowStore(in: try tree.folder("alpha"))
        let outside = try tree.folder("../outside/kdl-secret-mlflow-claim-pvc-1")
        try tree.mlflowStore(in: outside)
        let fm = FileManager.default
        try fm.createSymbolicLink(atPath: tree.root.path + "/up", withDestinationPath: ".")
        try fm.createSymbolicLink(atPath: tree.root.path + "/alpha/loop", withDestinationPath: "../alpha")
        try fm.createSymbolicLink(atPath: tree.root.path + "/self", withDestinationPath: "self")
        try fm.createSymbolicLink(atPath: tree.root.path + "/escape", withDestinationPath: tree.base.path + "/outside")
        try fm.createSymbolicLink(atPath: tree.root.path + "/linked", withDestinationPath: "alpha")
        _ = try tree.folder("beta")
        try fm.createSymbolicLink(atPath: tree.root.path + "/beta/mlflow.db", withDestinationPath: outside.appending("mlflow.db").text)

        let report = try tree.scan(maxDepth: 5)
        #expect(report.stores.map(\.project) == ["alpha", "beta"])
        #expect(report.store("alpha")?.status == .ok)
        let beta = try #require(report.store("beta"))
        #expect(beta.status == .unreadable)
        #expect(beta.error?.contains("out of ROOT") == true)
        #expect(report.stores.allSatisfy { $0.runs == nil || $0.path.hasPrefix(tree.root.path) })
        let reasons = Dictionary(report.skipped.map { (URL(fileURLWithPath: $0.path).lastPathComponent, $0.reason) }, uniquingKeysWith: { a, _ in a })
        #expect(reasons["escape"]?.contains("out of ROOT") == true)
        #expect(reasons["self"] == "symlink loop")
        #expect(reasons["up"]?.contains("already searched") == true)
    }

    @Test func twoFoldersForOneProjectAreBothReportedAndBothKept() throws {
        let tree = try StoreTree()
        try tree.mlflowStore(in: try tree.folder("kdl-demo-mlflow-claim-pvc-aaaa"), runs: 1)
        try tree.mlflowStore(in: try tree.folder("demo"), runs: 2)
        try tree.mlflowStore(in: try tree.folder("kdl-other-mlflow-claim-pvc-bbbb"), runs: 3)

        let report = try tree.scan(snapshot: true)
        #expect(report.duplicates.count == 1)
        let duplicate = try #require(report.duplicates.first)
        #expect(duplicate.project == "demo")
        #expect(Set(duplicate.paths) == [tree.root.path + "/demo/mlflow.db", tree.root.path + "/kdl-demo-mlflow-claim-pvc-aaaa/mlflow.db"])
        let demos = report.stores.filter { $0.project == "demo" }
        #expect(demos.count == 2)
        #expect(demos.allSatisfy { $0.duplicate == true })
        #expect(Set(demos.compactMap(\.runs)) == [1, 2])
        let paths = demos.compactMap { $0.snapshot?.path }
        #expect(Set(paths).count == 2)
        for store in demos {
            let path = try #require(store.snapshot?.path)
            #expect(try count("runs", in: path) == store.runs)
        }
        #expect(report.store("other")?.snapshot?.path == tree.snapshotDir + "/other/mlflow.db")
        #expect(report.store("other")?.duplicate == nil)
        #expect(report.summary.duplicateProjects == 1)
    }

    @Test func namesThatAreNotUTF8OrHaveNewlinesAreKeptExactly() throws {
        let tree = try StoreTree()
        let name: [UInt8] = Array("bad".utf8) + [0xff, 0xfe] + Array("\nname with space".utf8)
        try tree.mlflowStore(in: try tree.folder(name), runs: 1)

        let report = try tree.scan(snapshot: true)
        let store = try #require(report.stores.first)
        #expect(store.status == .ok)
        #expect(store.project == "bad\u{FFFD}\u{FFFD}\nname with space")
        let exact = Array(tree.root.path.utf8) + [UInt8(ascii: "/")] + name + Array("/mlflow.db".utf8)
        #expect(store.pathBase64.flatMap { Data(base64Encoded: $0) }.map { [UInt8]($0) } == exact)
        #expect(store.snapshot?.sha256 != nil)
        let json = String(decoding: try JSONEncoder().encode(report), as: UTF8.self)
        #expect(json.contains(#"bad\ufffd\ufffd\nname with space"#) || json.contains("bad\u{FFFD}\u{FFFD}\\nname with space"))
    }

    @Test func depthIsLimited() throws {
        let tree = try StoreTree()
        try tree.mlflowStore(in: try tree.folder("a/b/c/deep"))
        try tree.mlflowStore(in: try tree.folder("a/b/three"))
        #expect(try tree.scan().stores.map(\.project) == ["three"])
        #expect(try tree.scan(maxDepth: 4).stores.map(\.project) == ["deep", "three"])
        #expect(try tree.scan(maxDepth: 0).stores.isEmpty)
    }

    @Test func aStoreAtRootTakesRootsName() throws {
        let tree = try StoreTree()
        try tree.mlflowStore(in: RawPath(tree.root.path), runs: 1)
        let report = try tree.scan()
        #expect(report.stores.map(\.project) == ["shared-volume"])
    }

    @Test func missingOrFileRootIsAnError() throws {
        let tree = try StoreTree()
        #expect(throws: MLflowScanError.rootMissing(tree.root.path + "/nope")) {
            try Scanner(options: ScanOptions(root: tree.root.path + "/nope")).run()
        }
        try tree.write([1], to: RawPath(tree.root.path + "/file"))
        #expect(throws: MLflowScanError.rootNotDirectory(tree.root.path + "/file")) {
            try Scanner(options: ScanOptions(root: tree.root.path + "/file")).run()
        }
        #expect(MLflowScanError.rootMissing("x").exitCode == 66)
        #expect(MLflowScanError.rootUnreadable("x", reason: "Permission denied").exitCode == 74)
    }

    @Test func aSnapshotThatCannotBeWrittenIsCountedButTheScanFinishes() throws {
        let tree = try StoreTree()
        try tree.mlflowStore(in: try tree.folder("alpha"))
        try tree.mlflowStore(in: try tree.folder("beta"))
        try FileManager.default.createDirectory(atPath: tree.snapshotDir, withIntermediateDirectories: true)
        try tree.write([0], to: RawPath(tree.snapshotDir + "/alpha"))  // a file where the project's folder must go

        let (report, failures) = try Scanner(options: ScanOptions(root: tree.root.path, snapshotDir: tree.snapshotDir)).run()
        #expect(failures == 1)
        #expect(report.store("alpha")?.snapshot?.error?.contains("cannot") == true)
        #expect(report.store("alpha")?.status == .ok)
        #expect(report.store("beta")?.snapshot?.sha256 != nil)
        #expect(report.summary.snapshotFailures == 1)

        #expect(throws: MLflowScanError.self) {
            try Scanner(options: ScanOptions(root: tree.root.path, snapshotDir: tree.snapshotDir + "/alpha/sub")).run()
        }
    }
}

@Suite struct ScanEdgeTests {
    @Test func aSnapshotDirectoryInsideRootIsNotScannedAgain() throws {
        let tree = try StoreTree()
        try tree.mlflowStore(in: try tree.folder("alpha"))
        let inside = tree.root.path + "/backups"
        for _ in 0..<2 {
            let (report, _) = try Scanner(options: ScanOptions(root: tree.root.path, snapshotDir: inside)).run()
            #expect(report.stores.map(\.project) == ["alpha"])
            #expect(report.store("alpha")?.snapshot?.path == inside + "/alpha/mlflow.db")
        }
    }

    @Test func aFifoNamedMlflowDbIsRefusedWithoutBlocking() throws {
        let tree = try StoreTree()
        let folder = try tree.folder("fifo")
        #expect(mkfifo(folder.appending("other").text, 0o600) == 0)
        try FileManager.default.createSymbolicLink(atPath: folder.appending("mlflow.db").text, withDestinationPath: "other")
        let store = try #require(try tree.scan().store("fifo"))
        #expect(store.status == .unreadable)
        #expect(store.error?.contains("not a regular file") == true)
    }
}
