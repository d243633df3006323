import BackupKit
import Foundation
import S3

/// A stored object read back as plaintext: downloaded (resumed on a broken connection, its sha256 checked when
/// known) into the decoder (`age -d | zstd -d`) on a thread of its own; the caller reads the plaintext.
final class DecodedDownload: @unchecked Sendable {
    let location: S3Location
    let reader: StreamReader
    private let child: Subprocess
    private let output: Int32
    private let done = DispatchSemaphore(value: 0)
    private var downloadError: Error?
    private var finished = false

    /// `identity`: the age identity's text, handed to age on fd 3 (else `decoder` names its identity file).
    init(client: S3Client, location: S3Location, expectedSHA256: String?, decoder: [String], identity: String? = nil) throws {
        self.location = location
        let toChild = try Pipe2()
        let fromChild = try Pipe2()
        let secret = try identity.map { _ in try Pipe2() }
        do {
            child = try Subprocess(decoder, stdin: toChild.read, stdout: fromChild.write, fd3: secret?.read)
        } catch {
            [toChild.read, toChild.write, fromChild.read, fromChild.write].forEach { close($0) }
            if let secret { close(secret.read); close(secret.write) }
            throw error
        }
        close(toChild.read)
        close(fromChild.write)
        if let secret, let identity {
            close(secret.read)
            // An identity is ~75 bytes: it fits the pipe, so this never blocks.
            try? Array((identity + "\n").utf8).withUnsafeBytes { try writeAll(secret.write, $0, what: "age") }
            close(secret.write)
        }
        output = fromChild.read
        reader = StreamReader(descriptor: fromChild.read, what: "\(location)")
        let input = toChild.write
        let thread = Thread { [done] in
            do {
                _ = try Downloader(client: client).download(
                    location, to: FileDescriptorSink(descriptor: input), expectedSHA256: expectedSHA256)
            } catch {
                self.downloadError = error
            }
            close(input)
            done.signal()
        }
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// Waits for both sides; the download's failure first (it explains the decoder's), then the decoder's.
    func finish() throws {
        guard !finished else { return }
        finished = true
        try? reader.drain()
        let status = child.wait()
        done.wait()
        close(output)
        if let downloadError { throw downloadError }
        if status != 0 {
            throw BucketSyncError.integrity("decoding \(location) failed (age -d | zstd -d exited \(status)): wrong identity or damaged object")
        }
    }

    /// Stops early (an error of the reader): the decoder is killed, the download ends on its closed pipe.
    func abandon() {
        guard !finished else { return }
        finished = true
        child.kill()
        close(output)
        _ = child.wait()
        done.wait()
    }
}
