import BackupKit

/// bucket-sync's own failures (S3's are `S3Error`), each one line with a sysexits code.
public enum BucketSyncError: ExitCodedError, Equatable {
    case usage(String)
    case noInput(String)
    case unavailable(String)
    case io(String)
    case integrity(String)
    /// Some buckets failed; the others were stored (their lines are printed).
    case partial(String)

    public var exitCode: Int32 {
        switch self {
        case .usage: ExitStatus.usage
        case .noInput: ExitStatus.noInput
        case .unavailable: ExitStatus.unavailable
        case .io, .integrity: ExitStatus.ioError
        case .partial: ExitStatus.failure
        }
    }

    public var description: String {
        switch self {
        case .usage(let m), .noInput(let m), .unavailable(let m), .io(let m), .integrity(let m), .partial(let m): m
        }
    }
}
