import BackupKit
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The compact UTC timestamp SigV4 signs and backup ids use: `YYYYMMDDTHHMMSSZ`.
public enum CompactTimestamp {
    public static func format(_ date: Date) -> String {
        UTCTime.compact(date)
    }

    /// Parses exactly `YYYYMMDDTHHMMSSZ` (a valid calendar time); nil for anything else.
    public static func parse(_ text: String) -> Date? {
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
        let seconds = timegm(&parts)
        let date = Date(timeIntervalSince1970: TimeInterval(seconds))
        // timegm normalises 31 February into March: refuse dates that do not round-trip.
        return format(date) == text ? date : nil
    }

    /// S3's ISO 8601 times (`2024-05-01T12:00:00.000Z`) as dates.
    public static func parseISO8601(_ text: String) -> Date? {
        let trimmed = text.count > 19 ? String(text.prefix(19)) : text
        let compact = trimmed.replacingOccurrences(of: "-", with: "").replacingOccurrences(of: ":", with: "") + "Z"
        return parse(compact)
    }
}
