import Foundation

/// Results on stdout are JSON with sorted keys and no escaped slashes, so scripts and diffs read them easily.
public enum JSONOutput {
    public static func encoder(pretty: Bool = false) -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.sortedKeys, .withoutEscapingSlashes, .prettyPrinted] : [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    /// Encodes `value` as one line on stdout.
    public static func printLine<T: Encodable>(_ value: T) throws {
        var data = try encoder().encode(value)
        data.append(0x0a)
        FileHandle.standardOutput.write(data)
    }
}
