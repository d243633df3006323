import Foundation
import Testing

@testable import BackupKit

@Suite struct DigestTests {
    // FIPS 180-2 test vectors.
    @Test func sha256OfKnownInputs() {
        #expect(SHA256Digest.hash(Data()).hexString == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256Digest.hash(Data("abc".utf8)).hexString == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test func incrementalEqualsOneShot() {
        let text = Data("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
        var digest = SHA256Digest()
        digest.update(text.prefix(7))
        digest.update(text.dropFirst(7))
        #expect(digest.finalize().hexString == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }

    // The CRC-32 check value and a classic sentence; S3's headers carry the big-endian bytes in base64.
    @Test func crc32OfKnownInputs() {
        func crc(_ text: String, split: Int = 0) -> CRC32 {
            let bytes = Array(text.utf8)
            var crc = CRC32()
            bytes.withUnsafeBytes { all in
                crc.update(UnsafeRawBufferPointer(rebasing: all[0..<split]))
                crc.update(UnsafeRawBufferPointer(rebasing: all[split...]))
            }
            return crc
        }
        #expect(crc("123456789").value == 0xCBF4_3926)
        #expect(crc("123456789", split: 4).base64 == "y/Q5Jg==")
        #expect(crc("The quick brown fox jumps over the lazy dog", split: 10).value == 0x414F_A339)
        #expect(CRC32().base64 == "AAAAAA==")
    }

    // RFC 4231 test case 2.
    @Test func hmacSHA256() {
        let mac = HMACSHA256.authenticate(Data("what do ya want for nothing?".utf8), key: Data("Jefe".utf8))
        #expect(mac.hexString == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }
}

@Suite struct ByteSizeTests {
    @Test(arguments: [
        ("5MiB", Int64(5 << 20)), ("8mb", 8_000_000), ("512KiB", 512 << 10), ("1GiB", 1 << 30), ("42", 42), (" 2 GiB ", 2 << 30),
    ])
    func parsesSizes(text: String, bytes: Int64) {
        #expect(ByteSize.parse(text) == bytes)
    }

    @Test(arguments: ["", "MiB", "5XB", "-1", "1.5GiB", "99999999999999999999TiB"])
    func rejectsNonsense(text: String) {
        #expect(ByteSize.parse(text) == nil)
    }

    @Test func formatsForHumans() {
        #expect(ByteSize.format(512) == "512 B")
        #expect(ByteSize.format(3 << 29) == "1.5 GiB")
        #expect(ByteSize.format(1024) == "1.0 KiB")
        #expect(ByteSize.format(1_048_063) == "1023.5 KiB")
        #expect(ByteSize.format(8 << 20) == "8.0 MiB")
    }
}
