import BackupKit
import Foundation

/// AWS credentials for signing. `description` never shows the secret or the token.
public struct AWSCredentials: Sendable, CustomStringConvertible {
    public var accessKeyID: String
    public var secretAccessKey: String
    public var sessionToken: String?
    /// When temporary credentials stop working (web identity); nil for long-lived keys.
    public var expiration: Date?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil, expiration: Date? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
        self.expiration = expiration
    }

    public var description: String { "AWSCredentials(\(accessKeyID), secret: [REDACTED])" }
}

/// S3's URI encoding (the one SigV4 signs): every byte except the unreserved
/// `A-Z a-z 0-9 - . _ ~` becomes `%XX` in upper-case hex; `/` is kept in paths only.
public enum URIEncoding {
    public static func encode(_ text: String, keepSlash: Bool = false) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        var out = [UInt8]()
        out.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."),
                UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.append(byte)
            case UInt8(ascii: "/") where keepSlash:
                out.append(byte)
            default:
                out.append(UInt8(ascii: "%"))
                out.append(hex[Int(byte >> 4)])
                out.append(hex[Int(byte & 0x0f)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The canonical query string: each name and value encoded, sorted by name then value.
    public static func canonicalQuery(_ items: [(String, String)]) -> String {
        let encoded: [(name: String, value: String)] = items.map { (encode($0.0), encode($0.1)) }
        let sorted = encoded.sorted { (a, b) -> Bool in
            a.name == b.name ? a.value < b.value : a.name < b.name
        }
        return sorted.map { "\($0.name)=\($0.value)" }.joined(separator: "&")
    }
}

/// Signature Version 4 over libcrypto, each stage exposed so tests check it against AWS's published vectors.
public struct SigV4Signer: Sendable {
    public static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    public static let unsignedPayload = "UNSIGNED-PAYLOAD"

    public var region: String
    public var service: String

    public init(region: String, service: String = "s3") {
        self.region = region
        self.service = service
    }

    /// `20130524T000000Z`
    public static func amzDate(_ date: Date) -> String {
        UTCTime.compact(date)
    }

    /// Header names lower-cased, values trimmed with inner runs of spaces collapsed, sorted by name;
    /// repeated names joined with commas in the order given.
    public static func canonicalHeaders(_ headers: [HTTPHeader]) -> (block: String, signed: String) {
        var merged: [String: [String]] = [:]
        for header in headers {
            let value = header.value.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
            merged[header.name.lowercased(), default: []].append(value.trimmingCharacters(in: .whitespaces))
        }
        let names = merged.keys.sorted()
        let block = names.map { "\($0):\(merged[$0]!.joined(separator: ","))\n" }.joined()
        return (block, names.joined(separator: ";"))
    }

    /// The canonical request. `path` is the URI path exactly as sent (already encoded, S3 style: no second encoding).
    public func canonicalRequest(
        method: String, path: String, query: [(String, String)], headers: [HTTPHeader], payloadHash: String
    ) -> String {
        let canonical = Self.canonicalHeaders(headers)
        return [
            method.uppercased(), path.isEmpty ? "/" : path, URIEncoding.canonicalQuery(query),
            canonical.block, canonical.signed, payloadHash,
        ].joined(separator: "\n")
    }

    public func scope(date: Date) -> String {
        "\(Self.amzDate(date).prefix(8))/\(region)/\(service)/aws4_request"
    }

    public func stringToSign(canonicalRequest: String, date: Date) -> String {
        [
            "AWS4-HMAC-SHA256", Self.amzDate(date), scope(date: date),
            SHA256Digest.hash(Data(canonicalRequest.utf8)).hexString,
        ].joined(separator: "\n")
    }

    public func signingKey(secret: String, date: Date) -> [UInt8] {
        let day = String(Self.amzDate(date).prefix(8))
        var key = HMACSHA256.authenticate(Data(day.utf8), key: Data("AWS4\(secret)".utf8))
        for part in [region, service, "aws4_request"] {
            key = HMACSHA256.authenticate(Data(part.utf8), key: key)
        }
        return key
    }

    public func signature(stringToSign: String, secret: String, date: Date) -> String {
        HMACSHA256.authenticate(Data(stringToSign.utf8), key: signingKey(secret: secret, date: date)).hexString
    }

    /// Adds `x-amz-date`, the session token when there is one, and `Authorization` to `headers`
    /// (which must include `host` and, for S3, `x-amz-content-sha256`). Every header given is signed.
    public func sign(
        method: String, path: String, query: [(String, String)], headers: [HTTPHeader], payloadHash: String,
        credentials: AWSCredentials, date: Date
    ) -> [HTTPHeader] {
        var signed = headers
        signed.append(HTTPHeader("x-amz-date", Self.amzDate(date)))
        if let token = credentials.sessionToken {
            signed.append(HTTPHeader("x-amz-security-token", token))
        }
        let request = canonicalRequest(method: method, path: path, query: query, headers: signed, payloadHash: payloadHash)
        let toSign = stringToSign(canonicalRequest: request, date: date)
        let signatureHex = signature(stringToSign: toSign, secret: credentials.secretAccessKey, date: date)
        let names = Self.canonicalHeaders(signed).signed
        signed.append(
            HTTPHeader(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope(date: date)), SignedHeaders=\(names), Signature=\(signatureHex)"
            ))
        return signed
    }
}
