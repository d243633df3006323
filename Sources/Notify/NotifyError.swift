import BackupKit

/// Everything that stops notify itself. A channel that cannot be reached is not an error here:
/// it is a `DeliveryResult` the command reports (and turns into 69 only with `--strict`).
public enum NotifyError: ExitCodedError, Equatable {
    /// A flag or NOTIFY_* variable is missing, malformed or contradicts another (names the setting, never its value).
    case configuration(String)
    case manifestMissing(String)
    case manifestUnreadable(String, String)
    case logTailUnreadable(String, String)
    /// With `--strict`: the channels that could not be delivered to.
    case deliveryFailed([String])

    public var exitCode: Int32 {
        switch self {
        case .configuration: return ExitStatus.usage
        case .manifestMissing: return ExitStatus.noInput
        case .manifestUnreadable, .logTailUnreadable: return ExitStatus.ioError
        case .deliveryFailed: return ExitStatus.unavailable
        }
    }

    public var description: String {
        switch self {
        case .configuration(let message): return message
        case .manifestMissing(let path): return "manifest \(path) does not exist"
        case .manifestUnreadable(let path, let why): return "manifest \(path) cannot be read: \(why)"
        case .logTailUnreadable(let path, let why): return "log tail \(path) cannot be read: \(why)"
        case .deliveryFailed(let channels):
            return "\(channels.count) channel(s) could not be notified: \(channels.joined(separator: ", "))"
        }
    }
}

/// Why one delivery attempt failed; decides whether to try again.
enum DeliveryError: Error, CustomStringConvertible {
    case httpStatus(Int, String)
    case transport(String, retryable: Bool)

    var retryable: Bool {
        switch self {
        case .httpStatus(let status, _): return status >= 500 || status == 408 || status == 429
        case .transport(_, let retryable): return retryable
        }
    }

    var description: String {
        switch self {
        case .httpStatus(let status, let body): return body.isEmpty ? "HTTP \(status)" : "HTTP \(status): \(body)"
        case .transport(let message, _): return message
        }
    }
}
