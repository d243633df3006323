import ArgumentParser
import BackupKit
import Foundation

/// Options every S3 helper shares; they override the AWS environment.
public struct S3Options: ParsableArguments {
    @Option(help: ArgumentHelp("S3-compatible endpoint URL (default: AWS_ENDPOINT_URL_S3, then AWS_ENDPOINT_URL, else AWS).", valueName: "url"))
    public var endpoint: String?

    @Option(help: ArgumentHelp("Region to sign for (default: AWS_REGION, then AWS_DEFAULT_REGION, then us-east-1).", valueName: "region"))
    public var region: String?

    @Flag(
        inversion: .prefixedNo,
        help: "Address buckets in the path (http://host/bucket/key) rather than the host name (default: on with an endpoint).")
    public var pathStyle: Bool?

    @Option(help: ArgumentHelp("Retries of each request on throttling, 5xx, timeouts and dropped connections.", valueName: "n"))
    public var retries: Int = 5

    @Option(help: ArgumentHelp("Abort a transfer that moves no byte for this many seconds (it is then retried).", valueName: "seconds"))
    public var stallTimeout: Int = 60

    public init() {}

    public func validate() throws {
        guard (0...100).contains(retries) else { throw ValidationError("--retries must be between 0 and 100") }
        guard (1...3600).contains(stallTimeout) else { throw ValidationError("--stall-timeout must be between 1 and 3600 seconds") }
    }

    /// A client over libcurl configured from `environment` and these options. `AWS_CA_BUNDLE` names a CA file.
    public func makeClient(tool: String, environment: Environment, wrap: (HTTPTransport) -> HTTPTransport = { $0 }) throws -> S3Client {
        let configuration = try S3Configuration(environment: environment, endpoint: endpoint, region: region, pathStyle: pathStyle)
        var http = HTTPClientOptions()
        http.caFile = environment.first("AWS_CA_BUNDLE")
        http.lowSpeedSeconds = stallTimeout
        return S3Client(
            configuration: configuration, transport: wrap(CurlTransport(options: http)), retry: RetryPolicy(retries: retries), tool: tool)
    }
}

/// The value of a positional argument the parser takes as optional: ArgumentParser reports a missing required
/// positional before an unknown option, so `s3-put --no-such-option` would blame the positional. Usage errors
/// (exit 64) either way.
func required(_ value: String?, _ name: String) throws -> String {
    guard let value else { throw ValidationError("Missing expected argument '\(name)'") }
    return value
}

/// Runs `handler` once on SIGTERM or SIGINT, then exits with 128 + the signal number.
public enum SignalTrap {
    nonisolated(unsafe) static var sources: [DispatchSourceSignal] = []

    public static func install(_ handler: @escaping @Sendable () -> Void) {
        for number in [SIGTERM, SIGINT] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                handler()
                exit(128 + number)
            }
            source.resume()
            sources.append(source)
        }
    }
}
