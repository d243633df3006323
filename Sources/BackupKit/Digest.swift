import CCrypto
import CZlib
import Foundation

/// Incremental SHA-256 over OpenSSL's libcrypto (already in the image through libcurl).
public struct SHA256Digest: ~Copyable {
    private let context: OpaquePointer

    public init() {
        guard let context = EVP_MD_CTX_new(), EVP_DigestInit_ex(context, EVP_sha256(), nil) == 1 else {
            fatalError("libcrypto could not initialise SHA-256")  // only on allocation failure
        }
        self.context = context
    }

    deinit {
        EVP_MD_CTX_free(context)
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        EVP_DigestUpdate(context, base, bytes.count)
    }

    public mutating func update<Bytes: ContiguousBytes>(_ bytes: Bytes) {
        bytes.withUnsafeBytes { update($0) }
    }

    public consuming func finalize() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        EVP_DigestFinal_ex(context, &out, &length)
        return Array(out.prefix(Int(length)))
    }

    public static func hash<Bytes: ContiguousBytes>(_ bytes: Bytes) -> [UInt8] {
        var digest = SHA256Digest()
        digest.update(bytes)
        return digest.finalize()
    }
}

public enum HMACSHA256 {
    public static func authenticate<Key: ContiguousBytes, Message: ContiguousBytes>(_ message: Message, key: Key) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        key.withUnsafeBytes { keyBytes in
            message.withUnsafeBytes { messageBytes in
                _ = HMAC(
                    EVP_sha256(), keyBytes.baseAddress, Int32(keyBytes.count),
                    messageBytes.baseAddress?.assumingMemoryBound(to: UInt8.self), messageBytes.count,
                    &out, &length)
            }
        }
        return Array(out.prefix(Int(length)))
    }
}

extension Sequence where Element == UInt8 {
    /// Lower-case hex, as S3, sha256sum and the manifest write digests.
    public var hexString: String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        for byte in self {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// MD5 over libcrypto, for S3's `Content-MD5` header (which DeleteObjects requires); not for security.
public enum MD5Digest {
    public static func hash<Bytes: ContiguousBytes>(_ bytes: Bytes) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        bytes.withUnsafeBytes { buffer in
            _ = EVP_Digest(buffer.baseAddress, buffer.count, &out, &length, EVP_md5(), nil)
        }
        return Array(out.prefix(Int(length)))
    }
}

/// Incremental CRC-32 (IEEE, as zlib and S3's `x-amz-checksum-crc32` compute it), over zlib.
public struct CRC32: Sendable {
    public private(set) var value: UInt32 = 0

    public init() {}

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard var base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return }
        var remaining = bytes.count
        var crc = UInt(value)
        while remaining > 0 {  // zlib takes a 32-bit length
            let chunk = min(remaining, 1 << 30)
            crc = crc32(crc, base, UInt32(chunk))
            base += chunk
            remaining -= chunk
        }
        value = UInt32(truncatingIfNeeded: crc)
    }

    /// The four bytes big-endian in base64, the form S3's checksum headers carry.
    public var base64: String {
        Data([UInt8(value >> 24), UInt8((value >> 16) & 0xff), UInt8((value >> 8) & 0xff), UInt8(value & 0xff)]).base64EncodedString()
    }

    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> CRC32 {
        var crc = CRC32()
        crc.update(bytes)
        return crc
    }
}
