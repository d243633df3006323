import Foundation

/// A parsed JSON value that keeps number text as written and object members in their order.
indirect enum JSONNode: Equatable {
    case null
    case bool(Bool)
    case number(String)
    case string(String)
    case array([JSONNode])
    case object([(String, JSONNode)])

    static func == (a: JSONNode, b: JSONNode) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case (.bool(let x), .bool(let y)): return x == y
        case (.number(let x), .number(let y)): return x == y
        case (.string(let x), .string(let y)): return x == y
        case (.array(let x), .array(let y)): return x == y
        case (.object(let x), .object(let y)): return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    /// Parses one JSON text (as jq prints it). Throws on anything that is not exactly one JSON value.
    static func parse(_ text: String) throws -> JSONNode {
        var parser = JSONParser(bytes: Array(text.utf8))
        let value = try parser.value()
        parser.skipSpace()
        guard parser.index == parser.bytes.count else { throw JSONParser.Failure(offset: parser.index) }
        return value
    }
}

/// What the exporter needs from one list page, found in one pass over its bytes: the list's apiVersion,
/// kind and continue token, and for each item its namespace, name and exact bytes (handed to jq as they are).
struct ListPageScan {
    struct Item {
        var namespace: String
        var name: String
        var range: Range<Int>
    }

    var apiVersion = ""
    var kind = ""
    var continueToken = ""
    var items: [Item] = []

    static func scan(_ bytes: [UInt8]) throws -> ListPageScan {
        var parser = JSONParser(bytes: bytes)
        var page = ListPageScan()
        parser.skipSpace()
        guard parser.index < bytes.count, bytes[parser.index] == UInt8(ascii: "{") else { throw JSONParser.Failure(offset: parser.index) }
        try parser.members { key, parser in
            switch key {
            case "items":
                parser.skipSpace()
                if parser.index < bytes.count, bytes[parser.index] == UInt8(ascii: "n") {
                    _ = try parser.value()  // null: no items
                    return
                }
                guard parser.index < bytes.count, bytes[parser.index] == UInt8(ascii: "[") else { throw JSONParser.Failure(offset: parser.index) }
                try parser.elements { parser in
                    let start = parser.index
                    let item = try parser.value()
                    let metadata = item["metadata"]
                    page.items.append(Item(namespace: metadata?["namespace"]?.text ?? "", name: metadata?["name"]?.text ?? "", range: start..<parser.index))
                }
            case "apiVersion": page.apiVersion = try parser.value().text ?? ""
            case "kind": page.kind = try parser.value().text ?? ""
            case "metadata": page.continueToken = try parser.value()["continue"]?.text ?? ""
            default: _ = try parser.value()
            }
        }
        parser.skipSpace()
        guard parser.index == bytes.count else { throw JSONParser.Failure(offset: parser.index) }
        return page
    }
}

extension JSONNode {
    /// The member `key` of an object.
    subscript(key: String) -> JSONNode? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.0 == key }?.1
    }

    /// A string's text.
    var text: String? {
        guard case .string(let text) = self else { return nil }
        return text
    }
}

struct JSONParser {
    struct Failure: Error, CustomStringConvertible {
        var offset: Int
        var description: String { "invalid JSON at byte \(offset)" }
    }

    let bytes: [UInt8]
    var index = 0

    init(bytes: [UInt8]) { self.bytes = bytes }

    mutating func skipSpace() {
        while index < bytes.count, [0x20, 0x0a, 0x0d, 0x09].contains(bytes[index]) { index += 1 }
    }

    mutating func value() throws -> JSONNode {
        skipSpace()
        guard index < bytes.count else { throw Failure(offset: index) }
        switch bytes[index] {
        case UInt8(ascii: "{"): return try object()
        case UInt8(ascii: "["): return try array()
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        default: return try number()
        }
    }

    mutating func literal(_ word: String) throws {
        let expected = Array(word.utf8)
        guard index + expected.count <= bytes.count, Array(bytes[index..<index + expected.count]) == expected else {
            throw Failure(offset: index)
        }
        index += expected.count
    }

    mutating func number() throws -> JSONNode {
        let start = index
        while index < bytes.count, Self.numberBytes.contains(bytes[index]) { index += 1 }
        guard index > start else { throw Failure(offset: index) }
        return .number(String(decoding: bytes[start..<index], as: UTF8.self))
    }

    static let numberBytes = Set("0123456789+-.eE".utf8)

    mutating func object() throws -> JSONNode {
        var members: [(String, JSONNode)] = []
        try self.members { key, parser in members.append((key, try parser.value())) }
        return .object(members)
    }

    mutating func array() throws -> JSONNode {
        var items: [JSONNode] = []
        try elements { parser in items.append(try parser.value()) }
        return .array(items)
    }

    /// Walks an object (the parser is at its `{`): `body` reads each member's value after its key.
    mutating func members(_ body: (String, inout JSONParser) throws -> Void) throws {
        index += 1
        skipSpace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
            index += 1
            return
        }
        while true {
            skipSpace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw Failure(offset: index) }
            let key = try string()
            skipSpace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw Failure(offset: index) }
            index += 1
            try body(key, &self)
            skipSpace()
            guard index < bytes.count else { throw Failure(offset: index) }
            if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
            guard bytes[index] == UInt8(ascii: "}") else { throw Failure(offset: index) }
            index += 1
            return
        }
    }

    /// Walks an array (the parser is at its `[`): `body` reads each element.
    mutating func elements(_ body: (inout JSONParser) throws -> Void) throws {
        index += 1
        skipSpace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
            index += 1
            return
        }
        while true {
            skipSpace()
            try body(&self)
            skipSpace()
            guard index < bytes.count else { throw Failure(offset: index) }
            if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
            guard bytes[index] == UInt8(ascii: "]") else { throw Failure(offset: index) }
            index += 1
            return
        }
    }

    mutating func string() throws -> String {
        index += 1  // opening quote
        var out: [UInt8] = []
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            switch byte {
            case UInt8(ascii: "\""):
                return String(decoding: out, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard index < bytes.count else { throw Failure(offset: index) }
                let escape = bytes[index]
                index += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(escape)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0c)
                case UInt8(ascii: "n"): out.append(0x0a)
                case UInt8(ascii: "r"): out.append(0x0d)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xD800..<0xDC00).contains(scalar), index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") {
                        index += 2
                        let low = try hex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw Failure(offset: index) }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    }
                    out.append(contentsOf: String(Character(Unicode.Scalar(scalar) ?? "\u{FFFD}")).utf8)
                default:
                    throw Failure(offset: index - 1)
                }
            default:
                out.append(byte)
            }
        }
        throw Failure(offset: index)
    }

    mutating func hex4() throws -> UInt32 {
        guard index + 4 <= bytes.count, let value = UInt32(String(decoding: bytes[index..<index + 4], as: UTF8.self), radix: 16) else {
            throw Failure(offset: index)
        }
        index += 4
        return value
    }
}

/// Writes JSON values as block-style YAML that YAML 1.1 readers (kubectl's, PyYAML) read back to the same JSON.
/// Deterministic: at the top of a document `apiVersion`, `kind`, `metadata` come first, every other mapping is in
/// byte order of its keys; strings are plain only when no reader could take them for anything else.
enum YAMLEmitter {
    static let leadingKeys = ["apiVersion", "kind", "metadata"]

    /// One document, starting with `---`.
    static func document(_ value: JSONNode, into out: inout [UInt8]) {
        out.append(contentsOf: "---\n".utf8)
        switch value {
        case .object(let members) where !members.isEmpty:
            mapping(ordered(members, top: true), indent: 0, firstLinePrefix: nil, into: &out)
        case .array(let items) where !items.isEmpty:
            sequence(items, indent: 0, firstLinePrefix: nil, into: &out)
        default:
            scalar(value, into: &out)
            out.append(0x0a)
        }
    }

    static func ordered(_ members: [(String, JSONNode)], top: Bool) -> [(String, JSONNode)] {
        func rank(_ key: String) -> Int { top ? (leadingKeys.firstIndex(of: key) ?? leadingKeys.count) : 0 }
        return members.sorted { a, b in
            let (ra, rb) = (rank(a.0), rank(b.0))
            if ra != rb { return ra < rb }
            return a.0.utf8.lexicographicallyPrecedes(b.0.utf8)
        }
    }

    /// Writes the start of a line: `indent` spaces, or the pending `- ` prefix of a sequence item.
    private static func lineStart(_ indent: Int, _ prefix: inout [UInt8]?, into out: inout [UInt8]) {
        if let pending = prefix {
            out.append(contentsOf: pending)
            prefix = nil
        } else {
            out.append(contentsOf: repeatElement(UInt8(ascii: " "), count: indent))
        }
    }

    private static func mapping(_ members: [(String, JSONNode)], indent: Int, firstLinePrefix: [UInt8]?, into out: inout [UInt8]) {
        var prefix = firstLinePrefix
        for (key, value) in members {
            lineStart(indent, &prefix, into: &out)
            string(key, into: &out)
            out.append(UInt8(ascii: ":"))
            switch value {
            case .object(let inner) where !inner.isEmpty:
                out.append(0x0a)
                mapping(ordered(inner, top: false), indent: indent + 2, firstLinePrefix: nil, into: &out)
            case .array(let items) where !items.isEmpty:
                out.append(0x0a)
                sequence(items, indent: indent, firstLinePrefix: nil, into: &out)  // kubectl's style: `- ` under the key
            default:
                out.append(UInt8(ascii: " "))
                scalar(value, into: &out)
                out.append(0x0a)
            }
        }
    }

    private static func sequence(_ items: [JSONNode], indent: Int, firstLinePrefix: [UInt8]?, into out: inout [UInt8]) {
        var prefix = firstLinePrefix
        for item in items {
            var itemPrefix: [UInt8] = []
            if let pending = prefix {
                itemPrefix = pending
                prefix = nil
            } else {
                itemPrefix = Array(repeating: UInt8(ascii: " "), count: indent)
            }
            itemPrefix.append(contentsOf: "- ".utf8)
            switch item {
            case .object(let inner) where !inner.isEmpty:
                mapping(ordered(inner, top: false), indent: indent + 2, firstLinePrefix: itemPrefix, into: &out)
            case .array(let inner) where !inner.isEmpty:
                sequence(inner, indent: indent + 2, firstLinePrefix: itemPrefix, into: &out)
            default:
                out.append(contentsOf: itemPrefix)
                scalar(item, into: &out)
                out.append(0x0a)
            }
        }
    }

    private static func scalar(_ value: JSONNode, into out: inout [UInt8]) {
        switch value {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let flag): out.append(contentsOf: (flag ? "true" : "false").utf8)
        case .number(let text): out.append(contentsOf: text.utf8)
        case .string(let text): string(text, into: &out)
        case .array: out.append(contentsOf: "[]".utf8)
        case .object: out.append(contentsOf: "{}".utf8)
        }
    }

    /// Words YAML 1.1 reads as booleans or null (checked case-insensitively, which covers every spelling).
    static let reservedWords: Set<String> = ["y", "yes", "n", "no", "true", "false", "on", "off", "null", "~"]

    /// Plain when the string starts with a letter, `_` or `/`, holds only `[A-Za-z0-9_./+=-]` and single inner
    /// spaces, and is not a reserved word; everything else is double-quoted. That excludes numbers, dates,
    /// `.inf`, indicators (`-`, `:`, `#`, `&`, `*`, `!`, `|`, `>`, `'`, `"`, `%`, `@`, backquote) and edge spaces.
    static func isPlainSafe(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard let first = bytes.first, let last = bytes.last, last != UInt8(ascii: " ") else { return false }
        guard isLetter(first) || first == UInt8(ascii: "_") || first == UInt8(ascii: "/") else { return false }
        var previousSpace = false
        for byte in bytes {
            if byte == UInt8(ascii: " ") {
                if previousSpace { return false }
                previousSpace = true
                continue
            }
            previousSpace = false
            guard isLetter(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || plainPunctuation.contains(byte) else {
                return false
            }
        }
        return !reservedWords.contains(text.lowercased())
    }

    private static let plainPunctuation = Set("_./+=-".utf8)

    private static func isLetter(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
    }

    static func string(_ text: String, into out: inout [UInt8]) {
        if isPlainSafe(text) {
            out.append(contentsOf: text.utf8)
            return
        }
        out.append(UInt8(ascii: "\""))
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out.append(contentsOf: #"\""#.utf8)
            case "\\": out.append(contentsOf: #"\\"#.utf8)
            case "\n": out.append(contentsOf: #"\n"#.utf8)
            case "\t": out.append(contentsOf: #"\t"#.utf8)
            case "\r": out.append(contentsOf: #"\r"#.utf8)
            default:
                // Controls, DEL, C1 controls, YAML's own line breaks (NEL, LS, PS) and the BOM are escaped.
                let v = scalar.value
                if v < 0x20 || (0x7f...0x9f).contains(v) || v == 0x2028 || v == 0x2029 || v == 0xfeff {
                    out.append(contentsOf: String(format: "\\u%04X", v).utf8)
                } else {
                    out.append(contentsOf: String(scalar).utf8)
                }
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
