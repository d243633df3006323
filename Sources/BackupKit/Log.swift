import Foundation

/// Writes logfmt lines to stderr, replacing every registered secret with `[REDACTED]`.
/// Secrets are registered as soon as they are read so that no later message can carry them.
public final class Log: @unchecked Sendable {
    public enum Level: Int, Comparable, Sendable {
        case debug, info, warn, error
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
        var name: String { ["debug", "info", "warn", "error"][rawValue] }
    }

    public static let standardError = Log(handle: FileHandle.standardError)

    private let handle: FileHandle
    private let lock = NSLock()
    private var secrets: [String] = []
    public var minimumLevel: Level = .info

    public init(handle: FileHandle) {
        self.handle = handle
    }

    /// Registers a value that must never be printed (short values are ignored: they would redact ordinary words).
    public func addSecret(_ value: String?) {
        guard let value, value.count >= 4 else { return }
        lock.withLock {
            if !secrets.contains(value) {
                secrets.append(value)
                secrets.sort { $0.count > $1.count }
            }
        }
    }

    public func redact(_ text: String) -> String {
        lock.withLock {
            secrets.reduce(text) { $0.replacingOccurrences(of: $1, with: "[REDACTED]") }
        }
    }

    /// Writes text as is (after redaction).
    public func write(_ text: String) {
        let safe = redact(text)
        lock.withLock { handle.write(Data(safe.utf8)) }
    }

    /// One logfmt line: `ts=... level=... tool=... msg="..." key=value ...`.
    public func log(_ level: Level, tool: String, _ message: String, _ fields: [(String, String)] = []) {
        guard level >= minimumLevel else { return }
        var line = "ts=\(Self.timestamp()) level=\(level.name) tool=\(tool) msg=\(Self.quote(message))"
        for (key, value) in fields {
            line += " \(key)=\(Self.quote(value))"
        }
        write(line + "\n")
    }

    static func quote(_ value: String) -> String {
        let plain =
            !value.isEmpty
            && value.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7f && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "=") && $0 != UInt8(ascii: "\\") }
        if plain { return value }
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    static func timestamp() -> String {
        UTCTime.iso8601(Date())
    }
}

/// Strips what may carry a secret from a URL before it is printed: userinfo, query and, for
/// webhook-style URLs whose path is the token, everything after the host.
public enum Redact {
    public static func url(_ text: String, keepPath: Bool = true) -> String {
        guard var parts = URLComponents(string: text), parts.host != nil else { return "[REDACTED-URL]" }
        parts.user = nil
        parts.password = nil
        parts.query = nil
        parts.fragment = nil
        let redactPath = !keepPath && !parts.path.isEmpty && parts.path != "/"
        if redactPath { parts.path = "" }
        guard let text = parts.string else { return "[REDACTED-URL]" }
        return redactPath ? text + "/[REDACTED]" : text
    }
}
