import Foundation
import Testing

@testable import MLflowScan

/// Builds real SQLite stores in a fresh temporary tree, with MLflow's schema from Tests/e2e/test_mlflow_scan_schema.sql.
final class StoreTree {
    let root: URL
    let base: URL

    static let schema: String = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("e2e/test_mlflow_scan_schema.sql")
        return (try? String(contentsOf: url, encoding: .utf8)) ?? "-- schema file missing: \(url.path)"
    }()

    init() throws {
        base = FileManager.default.temporaryDirectory.appendingPathComponent("mlflow-scan-tests-\(UUID().uuidString)")
        root = base.appendingPathComponent("shared-volume")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: base) }

    var snapshotDir: String { base.appendingPathComponent("snapshots").path }

    /// A folder under ROOT given as raw bytes (so names may be invalid UTF-8).
    func folder(_ relative: [UInt8]) throws -> RawPath {
        var path = RawPath(root.path)
        for component in relative.split(separator: UInt8(ascii: "/")) {
            path = path.appending(RawPath(Array(component)))
            if case .failure(let error) = FileSystem.makeDirectory(path) { throw error }
        }
        return path
    }

    func folder(_ relative: String) throws -> RawPath { try folder(Array(relative.utf8)) }

    /// An MLflow store with `runs` runs (each with 3 params and 2 metrics) in `folder/mlflow.db`; returns the open
    /// connection so a test can keep writing (and, in WAL mode, keep the WAL from being checkpointed away).
    @discardableResult
    func mlflowStore(in folder: RawPath, runs: Int = 2, wal: Bool = false) throws -> SQLiteConnection {
        let connection = try SQLiteConnection.openReadWrite(folder.appending("mlflow.db"))
        if wal { try connection.execute("PRAGMA journal_mode = WAL") }
        try connection.execute(Self.schema)
        try Self.addRuns(connection, from: 0, count: runs)
        return connection
    }

    static func addRuns(_ connection: SQLiteConnection, from start: Int, count: Int) throws {
        try connection.execute("BEGIN")
        for index in start..<(start + count) {
            let run = String(format: "%032x", index)
            _ = try connection.rows(
                "INSERT INTO runs (run_uuid, name, source_type, status, start_time, lifecycle_stage, artifact_uri, experiment_id) VALUES (?, ?, 'LOCAL', 'FINISHED', ?, 'active', ?, 0)",
                [.text(run), .text("run-\(index)"), .integer(1_700_000_000_000 + Int64(index)), .text("s3://kdl-mlflow-artifacts/0/\(run)")])
            for key in ["alpha", "epochs", "lr"] {
                _ = try connection.rows("INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)", [.text(key), .text("\(index)"), .text(run)])
            }
            for step in 0..<2 {
                _ = try connection.rows(
                    "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES ('loss', ?, ?, ?, ?, 0)",
                    [.real(1.0 / Double(step + 1)), .integer(1_700_000_000_000 + Int64(step)), .text(run), .integer(Int64(step))])
            }
        }
        try connection.execute("COMMIT")
    }

    func write(_ bytes: [UInt8], to path: RawPath) throws {
        let url = URL(fileURLWithPath: path.text)
        try Data(bytes).write(to: url)
    }

    func scan(maxDepth: Int = 3, snapshot: Bool = false) throws -> ScanReport {
        try Scanner(options: ScanOptions(root: root.path, maxDepth: maxDepth, snapshotDir: snapshot ? snapshotDir : nil)).run().report
    }
}

extension ScanReport {
    func store(_ project: String) -> StoreReport? { stores.first { $0.project == project } }
}

/// Counts rows in a snapshot, opened read-only like the scan does.
func count(_ table: String, in path: String) throws -> Int64? {
    try SQLiteConnection.openReadOnly(RawPath(path), busyTimeoutMilliseconds: 1000).integer("SELECT count(*) FROM \(table)")
}
