import ArgumentParser
import BackupKit
import Foundation

/// `k8s-export`: Export Kubernetes objects, cleaned for re-apply.
public struct K8sExportCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "k8s-export",
        abstract: "Export Kubernetes objects, cleaned for re-apply.",
        discussion: """
            Lists each RESOURCE in one namespace (500 objects a page), runs a jq clean-up program on every object \
            and writes them, resources in the order given and objects sorted by namespace then name, so two \
            exports of an unchanged cluster are byte-identical. Connects in-cluster by default (the pod's service \
            account), or with --kubeconfig; --server, --token-file and --ca-file override either.

            With --served, nothing is exported: each RESOURCE is looked up in the API server's discovery documents \
            and printed as "RESOURCE served" or "RESOURCE absent", one per line (discovery is open to every \
            authenticated account; no list permission is needed).

            Exit status: 0 done (a resource whose CRD is not installed is a warning); 64 usage, bad filter or \
            kubeconfig; 66 a token, CA or kubeconfig file is missing; 69 API server unreachable after retries; \
            74 output not written; 75 the list changed too fast (continue token expired twice); 77 401/403.
            """,
        version: KDLBackupVersion.current)

    @Argument(help: ArgumentHelp(
        "Resources to export: kubectl's PLURAL.VERSION.GROUP (kdlprojects.v1.project.konstellation.io) or a core PLURAL (secrets).",
        valueName: "resource"))
    public var resources: [String] = []

    @Option(help: ArgumentHelp("A kubeconfig to connect with (its current context; token, tokenFile or client certificate) instead of the pod's service account.", valueName: "file"))
    public var kubeconfig: String?

    @Option(help: ArgumentHelp("The kubeconfig context to use instead of its current-context.", valueName: "name"))
    public var context: String?

    @Option(help: ArgumentHelp("API server URL, overriding the in-cluster or kubeconfig one.", valueName: "url"))
    public var server: String?

    @Option(help: ArgumentHelp("File holding the bearer token (read on every run), overriding the in-cluster or kubeconfig one.", valueName: "file"))
    public var tokenFile: String?

    @Option(help: ArgumentHelp("PEM file of the CA that signed the API server's certificate.", valueName: "file"))
    public var caFile: String?

    @Option(name: .shortAndLong, help: ArgumentHelp("Namespace to export from (default: the kubeconfig context's, else the service account's, else default).", valueName: "namespace"))
    public var namespace: String?

    @Option(help: ArgumentHelp("Only objects with these labels, in Kubernetes' selector syntax (app=x,tier!=y).", valueName: "selector"))
    public var labelSelector: String?

    @Option(parsing: .unconditional, help: ArgumentHelp(
        "Only objects whose metadata.name matches this regular expression (searched, not anchored); a value starting with - is taken as written, e.g. '-ssh-keys$'.",
        valueName: "regex"))
    public var nameRegex: String?

    @Option(parsing: .unconditional, help: ArgumentHelp("jq program run on each object instead of the default clean-up ($apiVersion and $kind hold the list's).", valueName: "program"))
    public var filter: String?

    @Option(help: ArgumentHelp("File holding the jq program run on each object instead of the default clean-up.", valueName: "file"))
    public var filterFile: String?

    @Flag(help: "Print the default clean-up jq program and exit.")
    public var printDefaultFilter = false

    @Option(help: ArgumentHelp("Output format: yaml (multi-document, for kubectl apply -f) or json (a v1 List).", valueName: "format"))
    public var format: String = "yaml"

    @Option(name: .shortAndLong, help: ArgumentHelp("Write to this file atomically (temporary file, then rename; mode 0600) instead of standard output.", valueName: "file"))
    public var output: String?

    @Flag(help: "Print whether the API server serves each RESOURCE (\"RESOURCE served\" or \"RESOURCE absent\") and export nothing.")
    public var served = false

    @Flag(help: "Print one JSON line on standard error with the objects exported per resource.")
    public var summary = false

    @Option(help: ArgumentHelp("Retries for an unreachable or failing (5xx, 429) API server.", valueName: "n"))
    public var retries: Int = 4

    public init() {}

    public func validate() throws {
        if printDefaultFilter { return }
        guard ExportFormat(rawValue: format) != nil else { throw ValidationError("--format must be yaml or json, not \"\(format)\"") }
        guard filter == nil || filterFile == nil else { throw ValidationError("give --filter or --filter-file, not both") }
        guard (0...20).contains(retries) else { throw ValidationError("--retries must be between 0 and 20") }
        if kubeconfig == nil, context != nil { throw ValidationError("--context needs --kubeconfig") }
    }

    public func run() throws {
        try runReportingErrors(tool: "k8s-export") {
            if printDefaultFilter {
                FileHandle.standardOutput.write(Data(Exporter.defaultFilter.utf8))
                return
            }
            // Checked here, not in validate(), so that an unknown option is reported before a missing RESOURCE.
            guard !resources.isEmpty else {
                throw ValidationError("give at least one RESOURCE, e.g. kdlprojects.v1.project.konstellation.io or secrets")
            }
            let log = Log.standardError
            if served {
                let lines = try Self.discover(self, environment: .process, log: log, transport: nil)
                FileHandle.standardOutput.write(Data(lines.map { "\($0.resource) \($0.served ? "served" : "absent")\n" }.joined().utf8))
                return
            }
            let summary = try Self.execute(self, environment: .process, log: log, transport: nil)
            if self.summary {
                log.write(summary.jsonLine + "\n")
            }
        }
    }

    /// Looks up each RESOURCE in the discovery documents (one request per group version); `transport` replaces
    /// libcurl in tests.
    public static func discover(_ command: K8sExportCommand, environment: Environment, log: Log, transport: HTTPTransport?, sleeper: Sleeper = ThreadSleeper()) throws -> [(resource: String, served: Bool)] {
        let refs = try command.resources.map(ResourceRef.init(parsing:))
        let client = try makeClient(command, environment: environment, log: log, transport: transport, sleeper: sleeper)
        defer { client.connection.close() }
        var plurals: [String: Set<String>] = [:]
        return try refs.map { ref in
            let groupVersion = "\(ref.group)/\(ref.version)"
            if plurals[groupVersion] == nil { plurals[groupVersion] = try client.servedPlurals(of: ref) ?? [] }
            return (ref.description, plurals[groupVersion]?.contains(ref.plural) == true)
        }
    }

    /// The API client for the command's connection flags (in-cluster, kubeconfig, overrides).
    static func makeClient(_ command: K8sExportCommand, environment: Environment, log: Log, transport: HTTPTransport?, sleeper: Sleeper) throws -> KubeClient {
        let flags = ConnectionFlags(
            kubeconfig: command.kubeconfig, context: command.context, server: command.server, tokenFile: command.tokenFile,
            caFile: command.caFile, namespace: command.namespace)
        let connection = try ConnectionResolver(environment: environment, log: log).resolve(flags)
        return KubeClient(
            transport: transport ?? CurlTransport(options: connection.clientOptions), connection: connection,
            retry: RetryPolicy(retries: command.retries, baseDelay: 0.25, maxDelay: 4), sleeper: sleeper, log: log)
    }

    /// Runs an export as configured by the parsed command; `transport` replaces libcurl in tests.
    public static func execute(_ command: K8sExportCommand, environment: Environment, log: Log, transport: HTTPTransport?, sink: ExportSink? = nil, sleeper: Sleeper = ThreadSleeper()) throws -> ExportSummary {
        let refs = try command.resources.map(ResourceRef.init(parsing:))
        var unique: [ResourceRef] = []
        for ref in refs where !unique.contains(ref) { unique.append(ref) }

        let filterSource: String
        if let file = command.filterFile {
            filterSource = try ConnectionResolver.read(file, what: "filter file")
        } else {
            filterSource = command.filter ?? Exporter.defaultFilter
        }
        try Exporter.checkFilter(filterSource)

        var regex: NSRegularExpression?
        if let pattern = command.nameRegex {
            do {
                regex = try NSRegularExpression(pattern: pattern)
            } catch {
                throw KubeExportError.usage("--name-regex \"\(pattern)\" is not a valid regular expression")
            }
        }
        if let selector = command.labelSelector, selector.contains(where: { $0.isNewline }) {
            throw KubeExportError.usage("--label-selector must be one line")
        }

        let client = try makeClient(command, environment: environment, log: log, transport: transport, sleeper: sleeper)
        let connection = client.connection
        defer { connection.close() }
        let options = ExportOptions(
            resources: unique, namespace: connection.namespace, labelSelector: command.labelSelector, nameRegex: regex,
            filter: filterSource, format: ExportFormat(rawValue: command.format) ?? .yaml)
        let destination = try sink ?? (command.output.map { try FileOutput.atomic(path: $0) } ?? FileOutput.standardOutput())
        return try Exporter(client: client, options: options, log: log).export(to: destination)
    }
}
