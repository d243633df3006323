import BackupKit

/// Everything that stops an export, each as one human line; the command maps them to exit statuses.
public enum KubeExportError: ExitCodedError, Equatable {
    /// A RESOURCE argument, regular expression, namespace or similar that cannot be used.
    case usage(String)
    /// No API server could be worked out from the flags, the kubeconfig or the pod's environment.
    case noServer
    /// A kubeconfig that cannot be read or used.
    case kubeconfig(path: String, reason: String)
    /// A file we must read is missing.
    case missingFile(what: String, path: String)
    /// A file we must read exists but may not be read.
    case unreadableFile(what: String, path: String, reason: String)
    /// 401 or 403: the credentials may not `verb` the resource in the namespace.
    case forbidden(status: Int, verb: String, resource: String, namespace: String, message: String)
    /// The API server refused the request as malformed (for example a bad label selector).
    case badRequest(resource: String, message: String)
    /// The list's continue token expired again after the list was restarted once.
    case expiredTwice(resource: String)
    /// 5xx, 429 or a transport failure that outlasted the retries.
    case unavailable(resource: String, reason: String)
    /// Any other answer we cannot use.
    case unexpected(resource: String, reason: String)
    /// The clean-up filter does not compile; jq's message on one line.
    case filterCompile(String)
    /// The clean-up filter failed on one object (the message carries no value from the object).
    case filterFailed(resource: String, object: String, message: String)
    /// Writing the output failed.
    case output(path: String, reason: String)

    public var exitCode: Int32 {
        switch self {
        case .usage, .noServer, .kubeconfig, .badRequest, .filterCompile: return ExitStatus.usage
        case .missingFile: return ExitStatus.noInput
        case .unreadableFile: return ExitStatus.noPermission
        case .forbidden: return ExitStatus.noPermission
        case .expiredTwice: return ExitStatus.tempFailure
        case .unavailable: return ExitStatus.unavailable
        case .unexpected, .filterFailed: return ExitStatus.failure
        case .output: return ExitStatus.ioError
        }
    }

    public var description: String {
        switch self {
        case .usage(let message):
            return message
        case .noServer:
            return "no API server: not in a pod (KUBERNETES_SERVICE_HOST is not set); give --kubeconfig FILE or --server URL"
        case .kubeconfig(let path, let reason):
            return "kubeconfig \(path): \(reason)"
        case .missingFile(let what, let path):
            return "\(what) \(path) does not exist"
        case .unreadableFile(let what, let path, let reason):
            return "\(what) \(path) cannot be read: \(reason)"
        case .forbidden(let status, let verb, let resource, let namespace, let message):
            let why = status == 401 ? "the API server did not accept the credentials (401)" : "permission denied (403)"
            return "\(why): cannot \(verb) \(resource) in namespace \(namespace)" + (message.isEmpty ? "" : ": \(message)")
        case .badRequest(let resource, let message):
            return "the API server refused the request for \(resource): \(message)"
        case .expiredTwice(let resource):
            return "listing \(resource): the continue token expired again after a restart (410 Gone); try again"
        case .unavailable(let resource, let reason):
            return "API server unavailable while listing \(resource): \(reason)"
        case .unexpected(let resource, let reason):
            return "listing \(resource): \(reason)"
        case .filterCompile(let message):
            return "jq program does not compile: \(message)"
        case .filterFailed(let resource, let object, let message):
            return "the clean-up filter failed on \(resource) \(object): \(message)"
        case .output(let path, let reason):
            return "cannot write \(path): \(reason)"
        }
    }
}
