/// Parses sizes written as `5MiB`, `8MB`, `512KiB`, `1GiB` or a plain byte count.
public enum ByteSize {
    private static let units: [(String, Int64)] = [
        ("kib", 1 << 10), ("mib", 1 << 20), ("gib", 1 << 30), ("tib", 1 << 40),
        ("kb", 1_000), ("mb", 1_000_000), ("gb", 1_000_000_000), ("tb", 1_000_000_000_000),
        ("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30), ("t", 1 << 40), ("b", 1),
    ]

    public static func parse(_ text: String) -> Int64? {
        let trimmed = text.trimmingCharacters(in: .whitespaces).lowercased()
        let digits = trimmed.prefix { $0.isNumber }
        guard !digits.isEmpty, let number = Int64(digits) else { return nil }
        let unit = trimmed.dropFirst(digits.count).trimmingCharacters(in: .whitespaces)
        if unit.isEmpty { return number }
        guard let factor = units.first(where: { $0.0 == unit })?.1 else { return nil }
        let (product, overflow) = number.multipliedReportingOverflow(by: factor)
        return overflow ? nil : product
    }

    /// A short human form (`1.5 GiB`) for logs and summaries.
    public static func format(_ bytes: Int64) -> String {
        let names = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes)
        var index = 0
        while value >= 1024, index < names.count - 1 {
            value /= 1024
            index += 1
        }
        guard index > 0 else { return "\(bytes) B" }
        // One decimal, rounded half up, without String(format:) (which loads ICU).
        let tenths = Int((value * 10).rounded())
        return "\(tenths / 10).\(tenths % 10) \(names[index])"
    }
}

import Foundation
