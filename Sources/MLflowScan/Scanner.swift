import BackupKit
import Foundation

/// What a scan is asked to do, from the command line.
public struct ScanOptions: Sendable {
    public var root: String
    public var maxDepth: Int
    public var snapshotDir: String?
    public var busyTimeoutSeconds: Double
    public var quickCheck: Bool
    public var snapshotCheck: SnapshotCheck
    /// Namespaces of KDL 6 claims: `<ns>-<project>-mlflow-pvc-<uid>` folders name `<project>`.
    public var namespaces: [String]

    public init(
        root: String, maxDepth: Int = 3, snapshotDir: String? = nil, busyTimeoutSeconds: Double = 10, quickCheck: Bool = false,
        snapshotCheck: SnapshotCheck = .integrity, namespaces: [String] = []
    ) {
        self.namespaces = namespaces
        self.root = root
        self.maxDepth = maxDepth
        self.snapshotDir = snapshotDir
        self.busyTimeoutSeconds = busyTimeoutSeconds
        self.quickCheck = quickCheck
        self.snapshotCheck = snapshotCheck
    }
}

/// How a snapshot is checked: `PRAGMA integrity_check` (everything, indexes against tables) or `quick_check`
/// (page and record structure only; much faster on large, index-heavy stores).
public enum SnapshotCheck: String, Sendable, CaseIterable {
    case integrity
    case quick
    /// No check here: the caller checks the copy itself (backup.sh does, while it uploads it).
    case none

    var pragma: String? {
        switch self {
        case .integrity: "PRAGMA integrity_check(20)"
        case .quick: "PRAGMA quick_check(20)"
        case .none: nil
        }
    }
}

/// Discovers the stores under ROOT, inspects each, snapshots the ok ones, and builds the report.
public struct Scanner {
    public var options: ScanOptions
    public var log: Log?

    public init(options: ScanOptions, log: Log? = nil) {
        self.options = options
        self.log = log
    }

    /// The report, and whether some snapshot could not be written on our side.
    public func run() throws(MLflowScanError) -> (report: ScanReport, snapshotFailures: Int) {
        let root = RawPath(options.root)
        let realRoot: RawPath
        switch FileSystem.realPath(root) {
        case .success(let path): realRoot = path
        case .failure(let error) where error.code == ENOENT: throw .rootMissing(options.root)
        case .failure(let error) where error.code == ENOTDIR: throw .rootNotDirectory(options.root)
        case .failure(let error): throw .rootUnreadable(options.root, reason: error.description)
        }
        guard case .success(let info) = FileSystem.info(realRoot), info.kind == .directory else {
            throw .rootNotDirectory(options.root)
        }
        let listing: [RawPath]
        switch FileSystem.list(realRoot) {
        case .success(let names): listing = names
        case .failure(let error): throw .rootUnreadable(options.root, reason: error.description)
        }

        var snapshotRoot: RawPath?
        if let dir = options.snapshotDir {
            let path = RawPath(dir)
            if case .failure(let error) = Self.makeDirectories(path) {
                throw .snapshotDirectory(dir, reason: error.description)
            }
            snapshotRoot = path
        }

        var discovery = Discovery(root: root, realRoot: realRoot, maxDepth: options.maxDepth)
        discovery.namespaces = options.namespaces
        discovery.run(rootListing: listing, excluding: snapshotRoot)
        let candidates = discovery.candidates
        let names = Self.snapshotNames(for: candidates)
        let groups = Dictionary(grouping: candidates.indices, by: { candidates[$0].project })

        let inspector = Inspector(
            busyTimeoutMilliseconds: Int32(min(options.busyTimeoutSeconds * 1000, Double(Int32.max))), quickCheck: options.quickCheck,
            snapshotCheck: options.snapshotCheck)
        var report = ScanReport(
            root: options.root, maxDepth: options.maxDepth, sqliteVersion: SQLiteConnection.libraryVersion,
            snapshotDir: options.snapshotDir, stores: [], duplicates: [], skipped: discovery.skipped, summary: Summary())
        var failures = 0
        for (index, candidate) in candidates.enumerated() {
            let folder = snapshotRoot.map { $0.appending(names[index]) }
            var outcome = inspector.inspect(candidate, snapshotFolder: folder)
            if (groups[candidate.project]?.count ?? 0) > 1 { outcome.report.duplicate = true }
            if outcome.destinationFailed { failures += 1 }
            report.stores.append(outcome.report)
            report.summary.add(outcome.report)
            logProblems(outcome.report)
        }
        for (project, indices) in groups where indices.count > 1 {
            report.duplicates.append(DuplicateProject(project: project, paths: indices.map { candidates[$0].database.text }))
            log?.log(.warn, tool: "mlflow-scan", "several folders map to one project", [("project", project), ("folders", "\(indices.count)")])
        }
        report.duplicates.sort { $0.project < $1.project }
        report.summary.duplicateProjects = report.duplicates.count
        report.summary.snapshotFailures = failures
        return (report, failures)
    }

    private func logProblems(_ store: StoreReport) {
        if store.status != .ok {
            log?.log(.warn, tool: "mlflow-scan", "store not ok", [("path", store.path), ("status", store.status.rawValue), ("error", store.error ?? "")])
        }
        if let error = store.snapshot?.error {
            log?.log(.error, tool: "mlflow-scan", "snapshot failed", [("path", store.path), ("error", error)])
        }
    }

    /// Snapshot folder names: the project when one folder maps to it; otherwise, for each of the folders,
    /// `<project>~<first 8 hex digits of the SHA-256 of its path relative to ROOT>`, so none overwrites another.
    static func snapshotNames(for candidates: [Candidate]) -> [RawPath] {
        let counts = Dictionary(candidates.map { ($0.project, 1) }, uniquingKeysWith: +)
        var used = Set(candidates.map(\.project).filter { counts[$0] == 1 })
        return candidates.map { candidate in
            if counts[candidate.project] == 1 { return RawPath(candidate.project) }
            let digest = SHA256Digest.hash(candidate.relative.bytes).hexString
            var length = 8
            var name = candidate.project + "~" + digest.prefix(length)
            while used.contains(name), length < digest.count {
                length += 8
                name = candidate.project + "~" + digest.prefix(length)
            }
            used.insert(name)
            return RawPath(name)
        }
    }

    /// `mkdir -p` with mode 0700 for the folders we create.
    static func makeDirectories(_ path: RawPath) -> Result<Void, SystemError> {
        var prefix: [UInt8] = []
        for (index, byte) in path.bytes.enumerated() {
            prefix.append(byte)
            let atEnd = index == path.bytes.count - 1
            if (byte == UInt8(ascii: "/") || atEnd), prefix.count > 1 {
                if case .failure(let error) = FileSystem.makeDirectory(RawPath(prefix)) { return .failure(error) }
            }
        }
        guard case .success(let info) = FileSystem.info(path, followSymlink: true) else { return .failure(.current) }
        return info.kind == .directory ? .success(()) : .failure(SystemError(code: ENOTDIR))
    }
}

extension Summary {
    mutating func add(_ store: StoreReport) {
        stores += 1
        switch store.status {
        case .ok: ok += 1
        case .corrupt: corrupt += 1
        case .unreadable: unreadable += 1
        case .notMLflow: notMLflow += 1
        }
        if store.snapshot?.sha256 != nil { snapshots += 1 }
    }
}
