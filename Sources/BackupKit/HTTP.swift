import CCurl
import Foundation

/// One header line; kept in order because signing and some servers care.
public struct HTTPHeader: Sendable, Equatable {
    public var name: String
    public var value: String
    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
}

/// A request body: nothing, bytes in memory, or a pull-based stream of known length
/// (the reader fills the buffer and returns how many bytes it wrote, 0 at the end).
public enum HTTPBody: Sendable {
    case none
    case bytes(Data)
    case stream(length: Int64, reader: @Sendable (UnsafeMutableRawBufferPointer) throws -> Int)

    var length: Int64? {
        switch self {
        case .none: return nil
        case .bytes(let data): return Int64(data.count)
        case .stream(let length, _): return length
        }
    }
}

public struct HTTPRequest: Sendable {
    public var method: String
    public var url: String
    public var headers: [HTTPHeader]
    public var body: HTTPBody
    /// Whole-request limit in seconds; nil means only the stall detection applies.
    public var timeout: Double?

    public init(method: String, url: String, headers: [HTTPHeader] = [], body: HTTPBody = .none, timeout: Double? = nil) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
    }
}

public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: [HTTPHeader]
    /// The body, unless a sink consumed it (2xx responses with a sink leave this empty).
    public var body: Data

    public init(status: Int, headers: [HTTPHeader] = [], body: Data = Data()) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// The last header of that name, case-insensitively.
    public func header(_ name: String) -> String? {
        let wanted = name.lowercased()
        return headers.last { $0.name.lowercased() == wanted }?.value
    }
}

/// Receives a successful response's body piece by piece instead of holding it in memory.
public typealias HTTPBodySink = (UnsafeRawBufferPointer) throws -> Void

/// What the helpers need from HTTP; tests substitute fakes.
public protocol HTTPTransport: Sendable {
    /// Sends the request. With a sink, a 2xx body goes to the sink; any other body is collected (up to 1 MiB) for its error message.
    func send(_ request: HTTPRequest, sink: HTTPBodySink?) throws -> HTTPResponse
}

extension HTTPTransport {
    public func send(_ request: HTTPRequest) throws -> HTTPResponse {
        try send(request, sink: nil)
    }
}

/// A failure below HTTP: DNS, connect, TLS, timeout, reset. HTTP statuses are not errors here.
public struct HTTPTransportError: ExitCodedError {
    public var code: Int
    public var message: String
    /// The URL without userinfo or query, safe to print.
    public var url: String
    public var retryable: Bool

    public init(code: Int, message: String, url: String, retryable: Bool) {
        self.code = code
        self.message = message
        self.url = url
        self.retryable = retryable
    }

    public var exitCode: Int32 { retryable ? ExitStatus.unavailable : ExitStatus.failure }
    public var description: String { "\(url): \(message)" }
}

/// TLS and connection settings for a transport.
public struct HTTPClientOptions: Sendable {
    /// PEM bundle of trusted CAs; nil uses the system's.
    public var caFile: String?
    public var clientCertFile: String?
    public var clientKeyFile: String?
    public var connectTimeout: Double = 10
    /// A transfer below `lowSpeedBytes` per second for `lowSpeedSeconds` is aborted as stalled.
    public var lowSpeedBytes: Int = 1
    public var lowSpeedSeconds: Int = 60
    public var userAgent: String = "kdl-backup/\(KDLBackupVersion.current)"

    public init() {}
}

/// HTTP over libcurl. Thread-safe: each request takes an easy handle from a small pool,
/// so concurrent uploads reuse connections without sharing a handle.
public final class CurlTransport: HTTPTransport, @unchecked Sendable {
    private static let globalInit: Void = {
        curl_global_init(Int(CURL_GLOBAL_DEFAULT))
    }()

    private let options: HTTPClientOptions
    private let lock = NSLock()
    private var idle: [UnsafeMutableRawPointer] = []

    public init(options: HTTPClientOptions = HTTPClientOptions()) {
        _ = Self.globalInit
        self.options = options
    }

    deinit {
        for handle in idle {
            curl_easy_cleanup(handle)
        }
    }

    public func send(_ request: HTTPRequest, sink: HTTPBodySink?) throws -> HTTPResponse {
        let handle = checkout()
        defer { checkin(handle) }
        let transfer = Transfer(body: request.body, sink: sink)
        let headers = try configure(handle, for: request, transfer: transfer)
        defer { curl_slist_free_all(headers) }

        let code = curl_easy_perform(handle)
        if let error = transfer.callbackError {
            throw error
        }
        guard code == CURLE_OK else {
            throw HTTPTransportError(
                code: Int(code.rawValue), message: String(cString: curl_easy_strerror(code)),
                url: Redact.url(request.url), retryable: Self.isRetryable(code))
        }
        return HTTPResponse(status: transfer.status(handle), headers: transfer.headers, body: transfer.collected)
    }

    /// Sends one e-mail over SMTP (smtp:// with STARTTLS when offered, or smtps://).
    public func sendMail(url: String, from: String, to: [String], user: String?, password: String?, message: Data, timeout: Double) throws {
        let handle = checkout()
        defer {
            curl_easy_reset(handle)
            checkin(handle)
        }
        let transfer = Transfer(body: .bytes(message), sink: nil)
        var recipients: UnsafeMutablePointer<curl_slist>?
        for address in to {
            recipients = curl_slist_append(recipients, address)
        }
        defer { curl_slist_free_all(recipients) }
        curl_easy_reset(handle)
        applyCommon(handle, timeout: timeout)
        ccurl_setopt_str(handle, CURLOPT_URL, url)
        ccurl_setopt_str(handle, CURLOPT_MAIL_FROM, from)
        ccurl_setopt_slist(handle, CURLOPT_MAIL_RCPT, recipients)
        ccurl_setopt_long(handle, CURLOPT_USE_SSL, Int(CURLUSESSL_TRY.rawValue))
        ccurl_setopt_long(handle, CURLOPT_UPLOAD, 1)
        ccurl_setopt_off(handle, CURLOPT_INFILESIZE_LARGE, curl_off_t(message.count))
        if let user { ccurl_setopt_str(handle, CURLOPT_USERNAME, user) }
        if let password { ccurl_setopt_str(handle, CURLOPT_PASSWORD, password) }
        transfer.install(on: handle)
        let code = curl_easy_perform(handle)
        if let error = transfer.callbackError { throw error }
        guard code == CURLE_OK else {
            throw HTTPTransportError(
                code: Int(code.rawValue), message: String(cString: curl_easy_strerror(code)),
                url: Redact.url(url), retryable: Self.isRetryable(code))
        }
    }

    // MARK: - Handles

    private func checkout() -> UnsafeMutableRawPointer {
        if let handle = lock.withLock({ idle.popLast() }) {
            return handle
        }
        guard let handle = curl_easy_init() else {
            fatalError("curl_easy_init failed: out of memory")
        }
        return handle
    }

    private func checkin(_ handle: UnsafeMutableRawPointer) {
        lock.withLock { idle.append(handle) }
    }

    private func applyCommon(_ handle: UnsafeMutableRawPointer, timeout: Double?) {
        ccurl_setopt_long(handle, CURLOPT_NOSIGNAL, 1)
        ccurl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, Int(options.connectTimeout * 1000))
        ccurl_setopt_long(handle, CURLOPT_LOW_SPEED_LIMIT, options.lowSpeedBytes)
        ccurl_setopt_long(handle, CURLOPT_LOW_SPEED_TIME, options.lowSpeedSeconds)
        ccurl_setopt_long(handle, CURLOPT_TIMEOUT_MS, Int((timeout ?? 0) * 1000))
        ccurl_setopt_str(handle, CURLOPT_USERAGENT, options.userAgent)
        if let caFile = options.caFile { ccurl_setopt_str(handle, CURLOPT_CAINFO, caFile) }
        if let cert = options.clientCertFile { ccurl_setopt_str(handle, CURLOPT_SSLCERT, cert) }
        if let key = options.clientKeyFile { ccurl_setopt_str(handle, CURLOPT_SSLKEY, key) }
    }

    private func configure(_ handle: UnsafeMutableRawPointer, for request: HTTPRequest, transfer: Transfer) throws -> UnsafeMutablePointer<curl_slist>? {
        curl_easy_reset(handle)
        applyCommon(handle, timeout: request.timeout)
        ccurl_setopt_str(handle, CURLOPT_URL, request.url)
        // Our URLs are already encoded exactly as signed: curl must not rewrite them.
        ccurl_setopt_long(handle, CURLOPT_PATH_AS_IS, 1)

        var list: UnsafeMutablePointer<curl_slist>?
        for header in request.headers {
            list = curl_slist_append(list, "\(header.name): \(header.value)")
        }
        // No 100-continue round trip, and no Content-Type curl would invent.
        list = curl_slist_append(list, "Expect:")
        if !request.headers.contains(where: { $0.name.lowercased() == "content-type" }) {
            list = curl_slist_append(list, "Content-Type:")
        }
        ccurl_setopt_slist(handle, CURLOPT_HTTPHEADER, list)

        let method = request.method.uppercased()
        if let length = request.body.length {
            ccurl_setopt_long(handle, CURLOPT_UPLOAD, 1)
            ccurl_setopt_off(handle, CURLOPT_INFILESIZE_LARGE, curl_off_t(length))
            if method != "PUT" { ccurl_setopt_str(handle, CURLOPT_CUSTOMREQUEST, method) }
        } else if method == "HEAD" {
            ccurl_setopt_long(handle, CURLOPT_NOBODY, 1)
        } else if method != "GET" {
            ccurl_setopt_str(handle, CURLOPT_CUSTOMREQUEST, method)
        }
        transfer.install(on: handle)
        return list
    }

    /// Failures of the connection, not of the request: another attempt may succeed. (SEND_FAIL_REWIND: the
    /// connection broke while the body was being sent and curl cannot replay it; the caller's retry sends it anew.)
    static func isRetryable(_ code: CURLcode) -> Bool {
        switch code {
        case CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_CONNECT, CURLE_OPERATION_TIMEDOUT, CURLE_SEND_ERROR,
            CURLE_RECV_ERROR, CURLE_GOT_NOTHING, CURLE_PARTIAL_FILE, CURLE_HTTP2, CURLE_HTTP2_STREAM,
            CURLE_SSL_CONNECT_ERROR, CURLE_WEIRD_SERVER_REPLY, CURLE_SEND_FAIL_REWIND:
            return true
        default:
            return false
        }
    }
}

/// The state one transfer's C callbacks work on, reached through the callbacks' context pointer.
private final class Transfer {
    let body: HTTPBody
    let sink: HTTPBodySink?
    var headers: [HTTPHeader] = []
    var collected = Data()
    var callbackError: Error?
    var uploadOffset = 0
    var statusCode = 0
    var handle: UnsafeMutableRawPointer?
    static let collectLimit = 1 << 20

    init(body: HTTPBody, sink: HTTPBodySink?) {
        self.body = body
        self.sink = sink
    }

    func status(_ handle: UnsafeMutableRawPointer) -> Int {
        var code = 0
        ccurl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &code)
        return code
    }

    func install(on handle: UnsafeMutableRawPointer) {
        self.handle = handle
        let context = Unmanaged.passUnretained(self).toOpaque()
        ccurl_setopt_ptr(handle, CURLOPT_WRITEDATA, context)
        ccurl_setopt_io(handle, CURLOPT_WRITEFUNCTION) { buffer, size, count, context in
            let transfer = Unmanaged<Transfer>.fromOpaque(context!).takeUnretainedValue()
            return transfer.receive(UnsafeRawBufferPointer(start: buffer, count: size * count))
        }
        ccurl_setopt_ptr(handle, CURLOPT_HEADERDATA, context)
        ccurl_setopt_io(handle, CURLOPT_HEADERFUNCTION) { buffer, size, count, context in
            let transfer = Unmanaged<Transfer>.fromOpaque(context!).takeUnretainedValue()
            transfer.receiveHeader(UnsafeRawBufferPointer(start: buffer, count: size * count))
            return size * count
        }
        ccurl_setopt_ptr(handle, CURLOPT_READDATA, context)
        ccurl_setopt_io(handle, CURLOPT_READFUNCTION) { buffer, size, count, context in
            let transfer = Unmanaged<Transfer>.fromOpaque(context!).takeUnretainedValue()
            return transfer.fill(UnsafeMutableRawBufferPointer(start: buffer, count: size * count))
        }
    }

    private func receive(_ bytes: UnsafeRawBufferPointer) -> Int {
        if let sink, let handle, (200..<300).contains(status(handle)) {
            do {
                try sink(bytes)
            } catch {
                callbackError = error
                return 0  // makes curl abort with CURLE_WRITE_ERROR
            }
        } else if collected.count < Self.collectLimit {
            collected.append(contentsOf: bytes.prefix(Self.collectLimit - collected.count))
        }
        return bytes.count
    }

    private func receiveHeader(_ bytes: UnsafeRawBufferPointer) {
        let line = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if line.hasPrefix("HTTP/") {
            headers.removeAll()  // a new response (after 100 Continue or a redirect)
            return
        }
        guard let colon = line.firstIndex(of: ":") else { return }
        let name = String(line[..<colon]).trimmingCharacters(in: .whitespaces)
        let value = String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces)
        headers.append(HTTPHeader(name, value))
    }

    private func fill(_ buffer: UnsafeMutableRawBufferPointer) -> Int {
        switch body {
        case .none:
            return 0
        case .bytes(let data):
            let count = min(buffer.count, data.count - uploadOffset)
            guard count > 0 else { return 0 }
            data.withUnsafeBytes { source in
                buffer.baseAddress!.copyMemory(from: source.baseAddress! + uploadOffset, byteCount: count)
            }
            uploadOffset += count
            return count
        case .stream(_, let reader):
            do {
                return try reader(buffer)
            } catch {
                callbackError = error
                return ccurl_readfunc_abort()
            }
        }
    }
}
