import BackupKit
import Foundation
import S3

/// Reads the encoder's output for the uploader; after `abort()` its end of input is an error, so a stream
/// cut short is never completed as an object.
final class EncoderOutput: ByteSource, @unchecked Sendable {
    let descriptor: Int32
    let length: Int64? = nil
    private let lock = NSLock()
    private var aborted = false

    init(descriptor: Int32) {
        self.descriptor = descriptor
    }

    func abort() {
        lock.withLock { aborted = true }
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            let count = Glibc.read(descriptor, buffer.baseAddress, buffer.count)
            if count > 0 { return count }
            if count < 0 && errno == EINTR { continue }
            if count < 0 { throw S3Error.io("reading the encoder: \(String(cString: strerror(errno)))") }
            if lock.withLock({ aborted }) { throw S3Error.io("the stream was abandoned before its end") }
            return 0
        }
    }
}

/// Uploads registered for SIGTERM: each in-flight multipart upload is aborted before the process exits.
final class ActiveUploads: @unchecked Sendable {
    static let shared = ActiveUploads()
    private let lock = NSLock()
    private var uploaders: [ObjectIdentifier: Uploader] = [:]

    func add(_ uploader: Uploader) { lock.withLock { uploaders[ObjectIdentifier(uploader)] = uploader } }
    func remove(_ uploader: Uploader) { lock.withLock { _ = uploaders.removeValue(forKey: ObjectIdentifier(uploader)) } }
    func abortAll() {
        for uploader in lock.withLock({ Array(uploaders.values) }) { uploader.activeUpload.abortNow() }
    }
}

/// One stored object written as a stream: plaintext in, `zstd | age` in a child process, its output uploaded
/// to S3 (multipart when large) on a thread of its own. Memory: the uploader's part buffers.
final class EncodedUpload: @unchecked Sendable {
    let location: S3Location
    private let child: Subprocess
    private let input: Int32
    private let output: EncoderOutput
    private let done = DispatchSemaphore(value: 0)
    private var result: Result<PutResult, Error>?
    private(set) var plaintextBytes: Int64 = 0
    private var finished = false

    init(client: S3Client, options: PutOptions, location: S3Location, command: [String]) throws {
        self.location = location
        let toChild = try Pipe2()
        let fromChild = try Pipe2()
        do {
            child = try Subprocess(command, stdin: toChild.read, stdout: fromChild.write)
        } catch {
            [toChild.read, toChild.write, fromChild.read, fromChild.write].forEach { close($0) }
            throw error
        }
        close(toChild.read)
        close(fromChild.write)
        input = toChild.write
        output = EncoderOutput(descriptor: fromChild.read)
        let uploader = Uploader(client: client, options: options)
        let thread = Thread { [output, done] in
            ActiveUploads.shared.add(uploader)
            let outcome = Result { try uploader.upload(from: output, to: location) }
            ActiveUploads.shared.remove(uploader)
            self.result = outcome
            close(output.descriptor)
            done.signal()
        }
        thread.stackSize = 1 << 20
        thread.start()
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        do {
            try writeAll(input, bytes, what: "the encoder of \(location)")
        } catch {
            abort()
            throw error
        }
        plaintextBytes += Int64(bytes.count)
    }

    func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    /// Ends the plaintext and waits for the object to be stored; throws the encoder's or the upload's failure.
    func finish() throws -> PutResult {
        precondition(!finished)
        finished = true
        close(input)
        let status = child.wait()
        if status != 0 { output.abort() }
        done.wait()
        if status != 0 {
            throw BucketSyncError.io("the encoder of \(location) (zstd | age) exited \(status)")
        }
        return try result!.get()
    }

    /// Abandons the object: the encoder is killed and the upload fails (a multipart upload is aborted).
    func abort() {
        guard !finished else { return }
        finished = true
        output.abort()
        child.kill()
        close(input)
        _ = child.wait()
        done.wait()
    }
}
