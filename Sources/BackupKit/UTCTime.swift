import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// UTC timestamps written by hand from `gmtime_r`: Foundation's date formatters and `String(format:)`
/// load ICU, which costs every helper about 11 MiB of resident memory.
public enum UTCTime {
    /// `2024-05-01T12:00:00Z` (RFC 3339, whole seconds).
    public static func iso8601(_ date: Date) -> String {
        let t = fields(date)
        return "\(digits(t.year, 4))-\(digits(t.month, 2))-\(digits(t.day, 2))T\(digits(t.hour, 2)):\(digits(t.minute, 2)):\(digits(t.second, 2))Z"
    }

    /// `20240501T120000Z`, the form SigV4 signs and backup ids use.
    public static func compact(_ date: Date) -> String {
        let t = fields(date)
        return "\(digits(t.year, 4))\(digits(t.month, 2))\(digits(t.day, 2))T\(digits(t.hour, 2))\(digits(t.minute, 2))\(digits(t.second, 2))Z"
    }

    static func fields(_ date: Date) -> (year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int) {
        var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return (
            Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min),
            Int(parts.tm_sec)
        )
    }

    /// `value` in decimal, left-padded with zeros to `width` digits.
    static func digits(_ value: Int, _ width: Int) -> String {
        let text = String(value)
        return text.count >= width ? text : String(repeating: "0", count: width - text.count) + text
    }
}
