import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Every UTC timestamp the helpers write or read, in one place, from `gmtime_r`/`timegm`: Foundation's date
/// formatters and `String(format:)` load ICU, which costs every helper about 11 MiB of resident memory.
public enum UTCTime {
    /// `2024-05-01T12:00:00Z` (RFC 3339, whole seconds): logs, manifests, notifications.
    public static func iso8601(_ date: Date) -> String {
        let t = fields(date)
        return "\(digits(t.year, 4))-\(digits(t.month, 2))-\(digits(t.day, 2))T\(digits(t.hour, 2)):\(digits(t.minute, 2)):\(digits(t.second, 2))Z"
    }

    /// `20240501T120000Z`, the form SigV4 signs and backup ids use.
    public static func compact(_ date: Date) -> String {
        let t = fields(date)
        return "\(digits(t.year, 4))\(digits(t.month, 2))\(digits(t.day, 2))T\(digits(t.hour, 2))\(digits(t.minute, 2))\(digits(t.second, 2))Z"
    }

    /// `Wed, 01 May 2024 12:00:00 +0000`, an e-mail's Date header (RFC 5322), in English whatever the locale.
    public static func rfc5322(_ date: Date) -> String {
        let t = fields(date)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        return "\(days[t.weekday]), \(digits(t.day, 2)) \(months[t.month - 1]) \(digits(t.year, 4)) "
            + "\(digits(t.hour, 2)):\(digits(t.minute, 2)):\(digits(t.second, 2)) +0000"
    }

    /// Parses exactly `YYYYMMDDTHHMMSSZ` (a valid calendar time); nil for anything else.
    public static func parseCompact(_ text: String) -> Date? {
        let bytes = Array(text.utf8)
        guard bytes.count == 16, bytes[8] == UInt8(ascii: "T"), bytes[15] == UInt8(ascii: "Z") else { return nil }
        func number(_ range: Range<Int>) -> Int? {
            var value = 0
            for byte in bytes[range] {
                guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { return nil }
                value = value * 10 + Int(byte - UInt8(ascii: "0"))
            }
            return value
        }
        guard let year = number(0..<4), let month = number(4..<6), let day = number(6..<8),
            let hour = number(9..<11), let minute = number(11..<13), let second = number(13..<15),
            (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 60
        else { return nil }
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month - 1)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(hour)
        parts.tm_min = Int32(minute)
        parts.tm_sec = Int32(second)
        let date = Date(timeIntervalSince1970: TimeInterval(timegm(&parts)))
        // timegm normalises 31 February into March: refuse dates that do not round-trip.
        return compact(date) == text ? date : nil
    }

    /// Parses RFC 3339 UTC times as the manifest and S3 write them: `2024-05-01T12:00:00Z`, with optional
    /// fractional seconds (`2024-05-01T12:00:00.5Z`). Nil for anything else.
    public static func parseISO8601(_ text: String) -> Date? {
        let bytes = Array(text.utf8)
        guard bytes.count >= 20, bytes.last == UInt8(ascii: "Z"), bytes[4] == UInt8(ascii: "-"), bytes[7] == UInt8(ascii: "-"),
            bytes[10] == UInt8(ascii: "T"), bytes[13] == UInt8(ascii: ":"), bytes[16] == UInt8(ascii: ":")
        else { return nil }
        var fractionSeconds = 0.0
        if bytes.count > 20 {
            let fraction = bytes[19..<(bytes.count - 1)]
            guard fraction.first == UInt8(ascii: "."), fraction.count > 1,
                fraction.dropFirst().allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }),
                let value = Double("0" + String(decoding: fraction, as: UTF8.self))
            else { return nil }
            fractionSeconds = value
        }
        let compactText = String(decoding: bytes[0..<4] + bytes[5..<7] + bytes[8..<10], as: UTF8.self) + "T"
            + String(decoding: bytes[11..<13] + bytes[14..<16] + bytes[17..<19], as: UTF8.self) + "Z"
        return parseCompact(compactText).map { $0.addingTimeInterval(fractionSeconds) }
    }

    static func fields(_ date: Date) -> (year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int, weekday: Int) {
        var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return (
            Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min),
            Int(parts.tm_sec), Int(parts.tm_wday)
        )
    }

    /// `value` in decimal, left-padded with zeros to `width` digits.
    static func digits(_ value: Int, _ width: Int) -> String {
        let text = String(value)
        return text.count >= width ? text : String(repeating: "0", count: width - text.count) + text
    }
}
