import BackupKit
import Foundation

/// A JSON document built in code, encoded with sorted keys so payloads are byte-for-byte predictable.
public indirect enum JSONValue: Encodable, Sendable, Equatable {
    case object([String: JSONValue])
    case array([JSONValue])
    case string(String)
    case int(Int64)
    case double(Double)
    case bool(Bool)
    case null

    public static func optional(_ value: String?) -> JSONValue { value.map(JSONValue.string) ?? .null }
    public static func optional(_ value: Double?) -> JSONValue { value.map(JSONValue.double) ?? .null }
    public static func optional(_ value: Int64?) -> JSONValue { value.map(JSONValue.int) ?? .null }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .object(let members): try container.encode(members)
        case .array(let items): try container.encode(items)
        case .string(let text): try container.encode(text)
        case .int(let number): try container.encode(number)
        case .double(let number): try container.encode(number)
        case .bool(let flag): try container.encode(flag)
        case .null: try container.encodeNil()
        }
    }

    /// Compact UTF-8 JSON with sorted keys and unescaped slashes.
    public var data: Data {
        // Encoding a tree of strings, numbers and containers cannot fail except for NaN/infinity, which we never build.
        (try? JSONOutput.encoder().encode(self)) ?? Data("null".utf8)
    }
}
