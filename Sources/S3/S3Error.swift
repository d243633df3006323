import BackupKit
import Foundation

/// Every failure of the S3 helpers, as one human line naming the operation, bucket, key and S3's own code.
public enum S3Error: ExitCodedError, Equatable {
    /// Bad arguments or configuration.
    case usage(String)
    /// S3 answered with an error status.
    case service(operation: String, bucket: String, key: String?, status: Int, code: String, message: String)
    /// No answer: connection refused, reset, timeout (after retries when `retryable`).
    case transport(operation: String, bucket: String, key: String?, message: String, retryable: Bool)
    /// A local file could not be read or written.
    case io(String)
    /// The local source does not exist.
    case noInput(String)
    /// Downloaded bytes do not match the expected digest or length.
    case integrity(String)
    /// Credentials could not be obtained (web identity, missing keys).
    case credentials(String, exitCode: Int32)

    static let permissionCodes: Set<String> = [
        "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "ExpiredToken", "InvalidToken",
        "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "InvalidClientTokenId",
    ]
    static let missingCodes: Set<String> = ["NoSuchBucket", "NoSuchKey", "NoSuchUpload"]
    /// What a code means, for servers that answer with an empty `<Message>` (Ceph RGW does): S3's own wording.
    static let meanings: [String: String] = [
        "NoSuchKey": "The specified key does not exist.",
        "NoSuchBucket": "The specified bucket does not exist.",
        "NoSuchUpload": "The specified multipart upload does not exist.",
        "AccessDenied": "Access Denied",
        "SignatureDoesNotMatch": "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
        "InvalidAccessKeyId": "The AWS Access Key Id you provided does not exist in our records.",
        "XAmzContentSHA256Mismatch": "The provided 'x-amz-content-sha256' header does not match what was computed.",
        "BadDigest": "The Content-MD5 or checksum value that you specified did not match what the server received.",
        "EntityTooSmall": "Your proposed upload is smaller than the minimum allowed object size.",
        "InvalidPart": "One or more of the specified parts could not be found.",
        "SlowDown": "Please reduce your request rate.",
    ]

    public var exitCode: Int32 {
        switch self {
        case .usage: return ExitStatus.usage
        case .service(_, _, _, let status, let code, _):
            if Self.permissionCodes.contains(code) || status == 403 { return ExitStatus.noPermission }
            if Self.missingCodes.contains(code) || status == 404 { return ExitStatus.noInput }
            if Self.isRetryable(status: status, code: code) { return ExitStatus.unavailable }
            return ExitStatus.failure
        case .transport(_, _, _, _, let retryable): return retryable ? ExitStatus.unavailable : ExitStatus.failure
        case .io: return ExitStatus.ioError
        case .noInput: return ExitStatus.noInput
        case .integrity: return ExitStatus.ioError
        case .credentials(_, let code): return code
        }
    }

    public var description: String {
        switch self {
        case .usage(let message), .io(let message), .noInput(let message), .integrity(let message):
            return message
        case .credentials(let message, _):
            return "credentials: \(message)"
        case .service(let operation, let bucket, let key, let status, let code, let message):
            let meaning = message.isEmpty ? Self.meanings[code] ?? "" : message
            let text = meaning.isEmpty ? "" : ": \(meaning)"
            return "\(operation) \(Self.uri(bucket, key)): \(code)\(text) (HTTP \(status))"
        case .transport(let operation, let bucket, let key, let message, _):
            return "\(operation) \(Self.uri(bucket, key)): \(message)"
        }
    }

    /// Whether another attempt may succeed: throttling, server errors, timeouts, dropped connections.
    public var isRetryable: Bool {
        switch self {
        case .service(_, _, _, let status, let code, _): return Self.isRetryable(status: status, code: code)
        case .transport(_, _, _, _, let retryable): return retryable
        default: return false
        }
    }

    static func isRetryable(status: Int, code: String) -> Bool {
        status >= 500 || status == 429
            || ["SlowDown", "RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable", "Throttling"]
                .contains(code)
    }

    static func uri(_ bucket: String, _ key: String?) -> String {
        "s3://\(bucket)/\(key ?? "")"
    }
}

/// Just enough XML for S3's answers: the text of elements by name, in document order.
/// S3 bodies are flat and machine-written; entities are decoded, CDATA is not used.
enum XMLText {
    /// The text of every `<name>...</name>` element (no nesting of the same name).
    static func all(_ name: String, in xml: String) -> [String] {
        blocks(name, in: xml).map(decode)
    }

    static func first(_ name: String, in xml: String) -> String? {
        guard let start = xml.range(of: "<\(name)>"),
            let end = xml.range(of: "</\(name)>", range: start.upperBound..<xml.endIndex)
        else { return nil }
        return decode(String(xml[start.upperBound..<end.lowerBound]))
    }

    /// The raw inner XML of every `<name>` block (for `<Contents>` and `<Error>` lists).
    static func blocks(_ name: String, in xml: String) -> [String] {
        var results: [String] = []
        var rest = xml[...]
        let open = "<\(name)>", close = "</\(name)>"
        while let start = rest.range(of: open) {
            guard let end = rest.range(of: close, range: start.upperBound..<rest.endIndex) else { break }
            results.append(String(rest[start.upperBound..<end.lowerBound]))
            rest = rest[end.upperBound...]
        }
        return results
    }

    static func decode(_ text: String) -> String {
        guard text.contains("&") else { return text }
        var out = ""
        var index = text.startIndex
        while index < text.endIndex {
            if text[index] == "&", let semicolon = text[index...].firstIndex(of: ";") {
                let entity = text[text.index(after: index)..<semicolon]
                var replacement: String?
                switch entity {
                case "amp": replacement = "&"
                case "lt": replacement = "<"
                case "gt": replacement = ">"
                case "quot": replacement = "\""
                case "apos": replacement = "'"
                default:
                    if entity.hasPrefix("#x"), let value = UInt32(entity.dropFirst(2), radix: 16), let scalar = Unicode.Scalar(value) {
                        replacement = String(Character(scalar))
                    } else if entity.hasPrefix("#"), let value = UInt32(entity.dropFirst()), let scalar = Unicode.Scalar(value) {
                        replacement = String(Character(scalar))
                    }
                }
                if let replacement {
                    out += replacement
                    index = text.index(after: semicolon)
                    continue
                }
            }
            out.append(text[index])
            index = text.index(after: index)
        }
        return out
    }

    static func escape(_ text: String) -> String {
        var out = ""
        for character in text {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default: out.append(character)
            }
        }
        return out
    }
}
