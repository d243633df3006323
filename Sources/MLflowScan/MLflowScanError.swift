import BackupKit

/// What stops a scan as a whole, each one human line; problems of single stores are in the JSON instead.
public enum MLflowScanError: ExitCodedError, Equatable {
    case rootMissing(String)
    case rootNotDirectory(String)
    case rootUnreadable(String, reason: String)
    case snapshotDirectory(String, reason: String)
    /// The scan ran and printed its report, but some snapshots could not be written.
    case snapshotsFailed(count: Int)

    public var exitCode: Int32 {
        switch self {
        case .rootMissing, .rootNotDirectory: return ExitStatus.noInput
        case .rootUnreadable, .snapshotDirectory, .snapshotsFailed: return ExitStatus.ioError
        }
    }

    public var description: String {
        switch self {
        case .rootMissing(let root): return "ROOT \(root) does not exist"
        case .rootNotDirectory(let root): return "ROOT \(root) is not a directory"
        case .rootUnreadable(let root, let reason): return "cannot read ROOT \(root): \(reason)"
        case .snapshotDirectory(let dir, let reason): return "cannot use snapshot directory \(dir): \(reason)"
        case .snapshotsFailed(let count):
            return "\(count) snapshot\(count == 1 ? "" : "s") could not be written (see each store's snapshot.error)"
        }
    }
}
