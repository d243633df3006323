import BackupKit
import Foundation

/// `s3://BUCKET/KEY` split into its parts.
public struct S3Location: Sendable, Equatable, CustomStringConvertible {
    public var bucket: String
    public var key: String

    public init(bucket: String, key: String) {
        self.bucket = bucket
        self.key = key
    }

    /// Parses `s3://bucket/key`; the key may be empty (a bucket or prefix root).
    public init(parsing text: String) throws {
        guard text.hasPrefix("s3://") else {
            throw S3Error.usage("not an S3 URI (expected s3://BUCKET/KEY): \(text)")
        }
        let rest = text.dropFirst(5)
        let bucket = rest.prefix { $0 != "/" }
        guard !bucket.isEmpty else { throw S3Error.usage("no bucket in \(text)") }
        let valid = bucket.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "." || $0 == "_") }
        guard valid, bucket.count <= 255 else { throw S3Error.usage("not a valid bucket name: \(bucket)") }
        self.bucket = String(bucket)
        self.key = String(rest.dropFirst(bucket.count + 1))
    }

    public var description: String { "s3://\(bucket)/\(key)" }
}

/// Where and how to reach S3, from the standard AWS environment with command-line overrides.
public struct S3Configuration: Sendable {
    public var region: String
    /// `scheme://host[:port]` of an S3-compatible store; nil for AWS.
    public var endpoint: String?
    public var pathStyle: Bool
    /// Send CRC-32 checksums S3 verifies and stores with each object (`AWS_REQUEST_CHECKSUM_CALCULATION`:
    /// `when_supported`, the default, or `when_required` for stores that refuse the headers).
    public var requestChecksums: Bool
    public var credentials: CredentialSource

    public enum CredentialSource: Sendable {
        case keys(AWSCredentials)
        case webIdentity(roleARN: String, tokenFile: String, sessionName: String, stsEndpoint: String)
    }

    /// Builds the configuration: flags win over `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL_S3`/`AWS_ENDPOINT_URL`
    /// and `AWS_S3_FORCE_PATH_STYLE`; path style is on by default with an endpoint. Registers every secret with the log.
    public init(environment: Environment, endpoint: String? = nil, region: String? = nil, pathStyle: Bool? = nil, log: Log = .standardError) throws {
        self.region = region ?? environment.first("AWS_REGION", "AWS_DEFAULT_REGION") ?? "us-east-1"
        let endpoint = endpoint ?? environment.first("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
        if let endpoint {
            guard let parts = URLComponents(string: endpoint), let scheme = parts.scheme?.lowercased(),
                scheme == "http" || scheme == "https", let host = parts.host, !host.isEmpty
            else { throw S3Error.usage("endpoint is not an http(s) URL: \(Redact.url(endpoint))") }
            self.endpoint = endpoint.hasSuffix("/") ? String(endpoint.dropLast()) : endpoint
        } else {
            self.endpoint = nil
        }
        self.pathStyle = try pathStyle ?? Self.boolean(environment, "AWS_S3_FORCE_PATH_STYLE") ?? (self.endpoint != nil)
        switch environment.first("AWS_REQUEST_CHECKSUM_CALCULATION")?.lowercased() {
        case nil, "when_supported": requestChecksums = true
        case "when_required": requestChecksums = false
        case let other?:
            throw S3Error.usage("AWS_REQUEST_CHECKSUM_CALCULATION must be when_supported or when_required, not \(other)")
        }

        let secret = environment.first("AWS_SECRET_ACCESS_KEY")
        let token = environment.first("AWS_SESSION_TOKEN")
        log.addSecret(secret)
        log.addSecret(token)
        if let keyID = environment.first("AWS_ACCESS_KEY_ID"), let secret {
            credentials = .keys(AWSCredentials(accessKeyID: keyID, secretAccessKey: secret, sessionToken: token))
        } else if let role = environment.first("AWS_ROLE_ARN"), let tokenFile = environment.first("AWS_WEB_IDENTITY_TOKEN_FILE") {
            let sts =
                environment.first("AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL")
                ?? "https://sts.\(self.region).amazonaws.com"
            credentials = .webIdentity(
                roleARN: role, tokenFile: tokenFile,
                sessionName: environment.first("AWS_ROLE_SESSION_NAME") ?? "kdl-backup-\(getpid())",
                stsEndpoint: sts)
        } else {
            throw S3Error.credentials(
                "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE",
                exitCode: ExitStatus.usage)
        }
    }

    /// A `true`/`false` variable (as the chart writes them; also `1`/`0`, `yes`/`no`); nil when unset or empty.
    static func boolean(_ environment: Environment, _ name: String) throws -> Bool? {
        guard let text = environment.first(name) else { return nil }
        switch text.lowercased() {
        case "true", "1", "yes", "on": return true
        case "false", "0", "no", "off": return false
        default: throw S3Error.usage("\(name) must be true or false, not \(text)")
        }
    }

    /// The URL of an object (or the bucket when `key` is nil), encoded exactly as it will be signed.
    func url(bucket: String, key: String?, query: [(String, String)]) -> (url: String, host: String, path: String) {
        let base: URLComponents
        if let endpoint, let parts = URLComponents(string: endpoint) {
            base = parts
        } else {
            var parts = URLComponents()
            parts.scheme = "https"
            parts.host = region == "us-east-1" ? "s3.amazonaws.com" : "s3.\(region).amazonaws.com"
            base = parts
        }
        let scheme = base.scheme ?? "https"
        var host = base.host ?? ""
        let basePath = base.percentEncodedPath.hasSuffix("/") ? String(base.percentEncodedPath.dropLast()) : base.percentEncodedPath
        var path: String
        let encodedKey = key.map { URIEncoding.encode($0, keepSlash: true) }
        if pathStyle {
            path = "\(basePath)/\(URIEncoding.encode(bucket))"
            if let encodedKey { path += "/\(encodedKey)" }
        } else {
            host = "\(bucket).\(host)"
            path = "\(basePath)/\(encodedKey ?? "")"
        }
        if let port = base.port { host += ":\(port)" }
        let queryString = URIEncoding.canonicalQuery(query)
        return ("\(scheme)://\(host)\(path)\(queryString.isEmpty ? "" : "?" + queryString)", host, path)
    }
}

/// Hands out credentials, exchanging a web identity token for temporary ones (and again before they expire).
public final class CredentialProvider: @unchecked Sendable {
    private let source: S3Configuration.CredentialSource
    private let transport: HTTPTransport
    private let log: Log
    private let clock: @Sendable () -> Date
    private let lock = NSLock()
    private var cached: AWSCredentials?

    public init(source: S3Configuration.CredentialSource, transport: HTTPTransport, log: Log = .standardError, clock: @escaping @Sendable () -> Date = { Date() }) {
        self.source = source
        self.transport = transport
        self.log = log
        self.clock = clock
    }

    public func current() throws -> AWSCredentials {
        try lock.withLock {
            if let cached, cached.expiration.map({ $0.timeIntervalSince(clock()) > 300 }) ?? true {
                return cached
            }
            let fresh = try fetch()
            cached = fresh
            return fresh
        }
    }

    private func fetch() throws -> AWSCredentials {
        switch source {
        case .keys(let credentials):
            return credentials
        case .webIdentity(let role, let tokenFile, let sessionName, let sts):
            let token: String
            do {
                token = try String(contentsOfFile: tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            } catch {
                throw S3Error.credentials("cannot read AWS_WEB_IDENTITY_TOKEN_FILE \(tokenFile)", exitCode: ExitStatus.noPermission)
            }
            log.addSecret(token)
            return try Self.assumeRoleWithWebIdentity(
                role: role, token: token, sessionName: sessionName, endpoint: sts, transport: transport, log: log)
        }
    }

    /// STS AssumeRoleWithWebIdentity: an unsigned form POST whose answer holds temporary keys.
    static func assumeRoleWithWebIdentity(
        role: String, token: String, sessionName: String, endpoint: String, transport: HTTPTransport, log: Log
    ) throws -> AWSCredentials {
        let form = URIEncoding.canonicalQuery([
            ("Action", "AssumeRoleWithWebIdentity"), ("Version", "2011-06-15"), ("RoleArn", role),
            ("RoleSessionName", sessionName), ("WebIdentityToken", token), ("DurationSeconds", "3600"),
        ])
        let url = endpoint.hasSuffix("/") ? endpoint : endpoint + "/"
        let request = HTTPRequest(
            method: "POST", url: url,
            headers: [HTTPHeader("Content-Type", "application/x-www-form-urlencoded"), HTTPHeader("Accept", "application/xml")],
            body: .bytes(Data(form.utf8)), timeout: 60)
        let response: HTTPResponse
        do {
            response = try RetryPolicy(retries: 3).run(isRetryable: { ($0 as? HTTPTransportError)?.retryable ?? false }) { _ in
                try transport.send(request)
            }
        } catch let error as HTTPTransportError {
            throw S3Error.credentials("AssumeRoleWithWebIdentity \(error.url): \(error.message)", exitCode: ExitStatus.unavailable)
        }
        let body = String(decoding: response.body, as: UTF8.self)
        guard (200..<300).contains(response.status) else {
            let code = XMLText.first("Code", in: body) ?? "HTTP \(response.status)"
            let message = XMLText.first("Message", in: body) ?? ""
            let exit = response.status >= 500 ? ExitStatus.unavailable : ExitStatus.noPermission
            throw S3Error.credentials("AssumeRoleWithWebIdentity \(role): \(code): \(message)", exitCode: exit)
        }
        guard let keyID = XMLText.first("AccessKeyId", in: body), let secret = XMLText.first("SecretAccessKey", in: body) else {
            throw S3Error.credentials("AssumeRoleWithWebIdentity \(role): no credentials in the answer", exitCode: ExitStatus.failure)
        }
        let sessionToken = XMLText.first("SessionToken", in: body)
        log.addSecret(secret)
        log.addSecret(sessionToken)
        let expiration = XMLText.first("Expiration", in: body).flatMap(UTCTime.parseISO8601)
        return AWSCredentials(accessKeyID: keyID, secretAccessKey: secret, sessionToken: sessionToken, expiration: expiration)
    }
}
