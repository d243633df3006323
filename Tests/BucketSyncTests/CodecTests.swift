import BackupKit
import Foundation
import Testing

@testable import BucketSync

@Suite struct CodecTests {
    // BIP-173's own test vector: an empty data part under hrp "a".
    @Test func bech32MatchesTheSpecificationVector() {
        #expect(Bech32.encode(hrp: "a", data: []) == "a12uel5l")
    }

    @Test func theIndexKeyIsAnAgeIdentityFixedByTheSecret() throws {
        let key = IndexKey(minioSecret: "minio-secret")
        #expect(key.identity.hasPrefix("AGE-SECRET-KEY-1"))
        #expect(key.identity == IndexKey(minioSecret: "minio-secret").identity)
        #expect(key.identity != IndexKey(minioSecret: "rotated").identity)
        // age itself accepts it (age-keygen -y derives its recipient).
        #expect(try key.recipient().hasPrefix("age1"))
    }

    @Test func keysCompareInS3Order() {
        // UTF-8 byte order, as ListObjectsV2 returns keys: "Z" < "a" < "é"; Swift's String < would differ for some.
        #expect(keyPrecedes("Z", "a"))
        #expect(keyPrecedes("a", "é"))
        #expect(keyPrecedes("a/b", "a0"))
        #expect(!keyPrecedes("b", "a"))
    }

    @Test func aReaderHandsOutLinesAndExactByteCounts() throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        let text = Array("{\"a\":1}\n0123456789tail\n".utf8)
        _ = text.withUnsafeBytes { write(fds[1], $0.baseAddress, $0.count) }
        close(fds[1])
        let reader = StreamReader(descriptor: fds[0], what: "test")
        #expect(try reader.readLine() == Array("{\"a\":1}".utf8))
        var got: [UInt8] = []
        try reader.read(10) { got += $0 }
        #expect(got == Array("0123456789".utf8))
        #expect(try reader.readLine() == Array("tail".utf8))
        #expect(try reader.readLine() == nil)
        #expect(reader.consumed == Int64(text.count))
        close(fds[0])
    }

    @Test func aStreamEndingInsideAnObjectIsDamage() throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        _ = Array("0123".utf8).withUnsafeBytes { write(fds[1], $0.baseAddress, $0.count) }
        close(fds[1])
        let reader = StreamReader(descriptor: fds[0], what: "blob")
        #expect(throws: BucketSyncError.integrity("blob: ends inside an object")) { try reader.read(10) { _ in } }
        close(fds[0])
    }
}
