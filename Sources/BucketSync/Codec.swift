import BackupKit
import Foundation

/// How stored bytes are encoded: `zstd`, then `age` to the recipients when there are any. Both run as
/// child processes (one pair per pack, blob or index); age is never re-implemented here.
public struct Codec: Sendable {
    public var recipients: [String]

    public init(recipients: [String]) {
        self.recipients = recipients
    }

    public var encrypted: Bool { !recipients.isEmpty }
    /// The suffix of every stored key.
    public var suffix: String { encrypted ? ".zst.age" : ".zst" }

    /// The encoder's command: plaintext on stdin, stored bytes on stdout.
    func encoder(extraRecipients: [String] = []) -> [String] {
        let all = recipients + (recipients.isEmpty ? [] : extraRecipients)
        // --single-thread: 8 MiB of memory where zstd's default (one worker thread) takes 54 MiB.
        guard !all.isEmpty else { return ["zstd", "-q", "-c", "--single-thread"] }
        return ["bash", "-c", "set -o pipefail; zstd -q -c --single-thread | age -e \"$@\"", "encode"] + all.flatMap { ["-r", $0] }
    }

    /// The decoder's command: stored bytes on stdin, plaintext on stdout. `identityFile` names the age identity;
    /// `identityOnFD3` reads it from descriptor 3 instead (a secret never written to disk).
    static func decoder(encrypted: Bool, identityFile: String?, identityOnFD3: Bool = false) -> [String] {
        guard encrypted else { return ["zstd", "-d", "-q", "-c"] }
        let identity = identityOnFD3 ? "/dev/fd/3" : (identityFile ?? "/dev/null")
        return ["bash", "-c", "set -o pipefail; age -d -i \"$1\" | zstd -d -q -c", "decode", identity]
    }
}

/// The job's own age identity for the indexes, derived from the MinIO secret key: it lets the next run read
/// the previous index (to reuse unchanged objects) while the cluster still holds no key to the data. Whoever
/// can derive it can read MinIO itself, so it reveals nothing the credentials do not.
public struct IndexKey: Sendable {
    /// `AGE-SECRET-KEY-1...`: never logged, never an argument.
    let identity: String

    public init(minioSecret: String) {
        let scalar = HMACSHA256.authenticate(Array("kdl-backup minio index v1".utf8), key: Array(minioSecret.utf8))
        identity = Bech32.encode(hrp: "age-secret-key-", data: scalar).uppercased()
    }

    /// The matching `age1...` recipient, from `age-keygen -y` (the identity goes in on stdin).
    public func recipient() throws -> String {
        let input = try Pipe2()
        let output = try Pipe2()
        let child = try Subprocess(["age-keygen", "-y"], stdin: input.read, stdout: output.write)
        close(input.read)
        close(output.write)
        defer { close(output.read) }
        let line = Array((identity + "\n").utf8)
        try line.withUnsafeBytes { try writeAll(input.write, $0, what: "age-keygen") }
        close(input.write)
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 256)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(output.read, $0.baseAddress, 256) }
            if count <= 0 { break }
            bytes += buffer[0..<count]
        }
        let status = child.wait()
        let text = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard status == 0, text.hasPrefix("age1") else {
            throw BucketSyncError.unavailable("age-keygen -y failed (exit \(status)): is age installed?")
        }
        return text
    }
}

/// BIP-173 bech32, as age encodes its keys.
enum Bech32 {
    static let charset = Array("qpzry9x8gf2tvdw0s3jn54khce6mua7l".utf8)

    static func polymod(_ values: [UInt8]) -> UInt32 {
        let generator: [UInt32] = [0x3b6a_57b2, 0x2650_8e6d, 0x1ea1_19fa, 0x3d42_33dd, 0x2a14_62b3]
        var check: UInt32 = 1
        for value in values {
            let top = check >> 25
            check = (check & 0x1ff_ffff) << 5 ^ UInt32(value)
            for i in 0..<5 where (top >> i) & 1 == 1 { check ^= generator[i] }
        }
        return check
    }

    static func encode(hrp: String, data: [UInt8]) -> String {
        var groups: [UInt8] = []
        var accumulator: UInt32 = 0
        var bits = 0
        for byte in data {
            accumulator = accumulator << 8 | UInt32(byte)
            bits += 8
            while bits >= 5 {
                bits -= 5
                groups.append(UInt8((accumulator >> UInt32(bits)) & 31))
            }
        }
        if bits > 0 { groups.append(UInt8((accumulator << UInt32(5 - bits)) & 31)) }
        let hrpBytes = Array(hrp.utf8)
        let expanded = hrpBytes.map { $0 >> 5 } + [0] + hrpBytes.map { $0 & 31 }
        let mod = polymod(expanded + groups + [0, 0, 0, 0, 0, 0]) ^ 1
        let checksum = (0..<6).map { UInt8((mod >> UInt32(5 * (5 - $0))) & 31) }
        return hrp + "1" + String(decoding: (groups + checksum).map { charset[Int($0)] }, as: UTF8.self)
    }
}
