import Foundation

/// What `mlflow-scan` prints on stdout (one JSON object; see docs/helpers.md#mlflow-scan).
public struct ScanReport: Encodable, Sendable {
    public var root: String
    public var maxDepth: Int
    public var sqliteVersion: String
    public var snapshotDir: String?
    public var stores: [StoreReport]
    /// Projects that more than one folder maps to; every such store is also in `stores`, with `duplicate: true`.
    public var duplicates: [DuplicateProject]
    /// Folders and symlinks the walk did not enter, with the reason.
    public var skipped: [SkippedPath]
    public var summary: Summary
}

public enum StoreStatus: String, Encodable, Sendable {
    case ok
    case corrupt
    case unreadable
    case notMLflow = "not-mlflow"
}

/// One `mlflow.db` found under ROOT.
public struct StoreReport: Encodable, Sendable {
    public var project: String
    /// The database file; lossy UTF-8 (U+FFFD) when the name is not UTF-8, then `pathBase64` holds the exact bytes.
    public var path: String
    public var pathBase64: String?
    public var status: StoreStatus
    /// `mlflow` when MLflow's tables are present, `not-mlflow` when the file is a database without them.
    public var kind: String?
    public var dbBytes: Int64?
    public var journalMode: String?
    public var walBytes: Int64?
    public var experiments: Int64?
    public var runs: Int64?
    /// MLflow's schema revision (`alembic_version.version_num`).
    public var schemaVersion: String?
    public var artifacts: [ArtifactFolder] = []
    /// Another folder maps to the same project (see `duplicates`).
    public var duplicate: Bool?
    public var snapshot: SnapshotReport?
    public var error: String?
}

/// A local artifact folder of a store (`mlruns/`, `artifacts/`): regular files below it, symlinks not followed.
public struct ArtifactFolder: Encodable, Sendable, Equatable {
    public var name: String
    public var files: Int64
    public var bytes: Int64
    /// Sub-folders that could not be listed (their content is not counted).
    public var unreadableFolders: Int64?
}

/// The consistent copy written with `--snapshot`.
public struct SnapshotReport: Encodable, Sendable {
    public var path: String?
    public var pathBase64: String?
    public var bytes: Int64?
    public var sha256: String?
    /// Which check ran on the copy (`integrity` or `quick`, see `--check`) and its result (`ok`).
    public var check: String?
    public var integrity: String?
    /// How the copy was made (`backup-api` for WAL stores, `shared-lock-copy` for rollback-journal stores).
    public var method: String?
    /// Wall-clock seconds in all, then of the copy, the check and the SHA-256.
    public var seconds: Double?
    public var copySeconds: Double?
    public var checkSeconds: Double?
    public var digestSeconds: Double?
    public var error: String?
}

/// How a snapshot was copied (see docs/helpers.md#mlflow-scan).
public enum SnapshotMethod: String, Sendable {
    /// SQLite's online backup API (WAL stores: pages from the database file and the WAL).
    case backupAPI = "backup-api"
    /// The database file's pages read as they are while a SHARED lock keeps writers out (rollback-journal stores).
    case sharedLockCopy = "shared-lock-copy"
}

public struct DuplicateProject: Encodable, Sendable {
    public var project: String
    public var paths: [String]
}

public struct SkippedPath: Encodable, Sendable {
    public var path: String
    public var pathBase64: String?
    public var reason: String
}

public struct Summary: Encodable, Sendable {
    public var stores = 0
    public var ok = 0
    public var corrupt = 0
    public var unreadable = 0
    public var notMLflow = 0
    public var duplicateProjects = 0
    public var snapshots = 0
    public var snapshotFailures = 0

    enum CodingKeys: String, CodingKey {
        case stores, ok, corrupt, unreadable, notMLflow = "notMlflow", duplicateProjects, snapshots, snapshotFailures
    }
}

extension RawPath {
    /// The exact bytes for JSON when `text` is not exact.
    var base64IfNeeded: String? { isValidUTF8 ? nil : Data(bytes).base64EncodedString() }
}
