import BackupKit
import Foundation

public enum ExportFormat: String, CaseIterable, Sendable {
    case yaml
    case json
}

/// What to export and how; everything but the connection.
public struct ExportOptions {
    public var resources: [ResourceRef]
    public var namespace: String
    public var labelSelector: String?
    public var nameRegex: NSRegularExpression?
    public var filter: String
    public var format: ExportFormat
    public var pageSize: Int

    public init(resources: [ResourceRef], namespace: String, labelSelector: String? = nil, nameRegex: NSRegularExpression? = nil,
                filter: String = Exporter.defaultFilter, format: ExportFormat = .yaml, pageSize: Int = 500) {
        self.resources = resources
        self.namespace = namespace
        self.labelSelector = labelSelector
        self.nameRegex = nameRegex
        self.filter = filter
        self.format = format
        self.pageSize = pageSize
    }
}

/// Objects exported per resource (in the order given), and the resources the API server does not serve.
public struct ExportSummary: Equatable {
    public var counts: [(resource: String, objects: Int)] = []
    public var missing: [String] = []

    public static func == (a: ExportSummary, b: ExportSummary) -> Bool {
        a.missing == b.missing && a.counts.map(\.resource) == b.counts.map(\.resource) && a.counts.map(\.objects) == b.counts.map(\.objects)
    }

    /// `{"resource": count, ...}` on one line, keys sorted.
    public var jsonLine: String {
        let body = counts.sorted { $0.resource < $1.resource }.map { "\"\($0.resource)\":\($0.objects)" }.joined(separator: ",")
        return "{\(body)}"
    }
}

/// Lists each resource page by page, runs the clean-up filter (libjq) on every object and writes the results
/// in a deterministic order: resources as given, objects by namespace then name, keys in a stable order.
///
/// Memory holds one page at a time. The API server's paginated lists are ranges of its storage keys
/// (`<namespace>/<name>`), so pages come in name order within a namespace; each page is also sorted here,
/// and an object whose key is not after the last one written is a repeat (after a restart) and skipped.
public final class Exporter {
    /// Removes what the API server fills in and keeps what a user wrote; adds `apiVersion` and `kind`,
    /// which list responses leave out of their items. `$apiVersion` and `$kind` are the list's.
    public static let defaultFilter = """
        # k8s-export's default clean-up, run on each listed object; $apiVersion and $kind come from the list.
        {apiVersion: $apiVersion, kind: $kind} + .
        | del(
            .metadata.uid,
            .metadata.resourceVersion,
            .metadata.generation,
            .metadata.creationTimestamp,
            .metadata.managedFields,
            .metadata.selfLink,
            .metadata.deletionTimestamp,
            .metadata.deletionGracePeriodSeconds,
            .metadata.ownerReferences,
            .metadata.annotations["kubectl.kubernetes.io/last-applied-configuration"],
            .status
          )
        | if .metadata.annotations == {} then del(.metadata.annotations) else . end

        """

    let client: KubeClient
    let options: ExportOptions
    let log: Log
    let tool = "k8s-export"

    public init(client: KubeClient, options: ExportOptions, log: Log) {
        self.client = client
        self.options = options
        self.log = log
    }

    /// Compiles `source` as the clean-up filter; a program that does not compile throws jq's message (exit 64).
    public static func checkFilter(_ source: String) throws {
        do {
            _ = try JQProgram(source, arguments: ["apiVersion": "v1", "kind": "Secret"])
        } catch JQError.compile(let message) {
            // jq's message spans lines (it quotes the program); the error is one line on stderr.
            let oneLine = message.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
            throw KubeExportError.filterCompile(oneLine)
        }
    }

    public func export(to sink: ExportSink) throws -> ExportSummary {
        try Self.checkFilter(options.filter)
        var summary = ExportSummary()
        var writer = DocumentWriter(format: options.format, sink: sink)
        try writer.begin()
        for resource in options.resources {
            guard let count = try export(resource, writer: &writer) else {
                summary.missing.append(resource.description)
                summary.counts.append((resource.description, 0))
                continue
            }
            summary.counts.append((resource.description, count))
        }
        try writer.end()
        try sink.finish()
        return summary
    }

    /// One resource; nil when the API server does not serve it (404).
    private func export(_ resource: ResourceRef, writer: inout DocumentWriter) throws -> Int? {
        var filter: JQProgram?
        var filterKind: (String, String)?
        var lastKey: [UInt8]?
        var exported = 0
        var pages = 0
        var restarted = false
        var outOfOrderWarned = false
        var continueToken: String?
        // The next page is requested as soon as its continue token is known, so the API server prepares it
        // while this page is filtered and written: at most two pages are in memory.
        var prefetched: PendingPage?
        defer { _ = try? prefetched?.wait() }

        while true {
            let outcome: KubeClient.ListOutcome
            if let pending = prefetched {
                prefetched = nil
                outcome = try pending.wait()
            } else {
                outcome = try client.list(
                    resource, namespace: options.namespace, labelSelector: options.labelSelector, limit: options.pageSize,
                    continueToken: continueToken)
            }
            let bytes: [UInt8]
            switch outcome {
            case .notFound:
                if pages == 0 {
                    log.log(.warn, tool: tool, "the API server does not serve this resource (is its CRD installed?); skipped",
                            [("resource", resource.description), ("namespace", options.namespace)])
                    return nil
                }
                throw KubeExportError.unexpected(resource: resource.description, reason: "the list vanished (404) between pages")
            case .gone:
                guard continueToken != nil else {
                    throw KubeExportError.unexpected(resource: resource.description, reason: "410 Gone without a continue token")
                }
                guard !restarted else { throw KubeExportError.expiredTwice(resource: resource.description) }
                restarted = true
                continueToken = nil
                log.log(.warn, tool: tool, "the continue token expired (410 Gone); restarting the list, skipping objects already written",
                        [("resource", resource.description), ("written", String(exported))])
                continue
            case .page(let data):
                bytes = data
            }
            pages += 1

            let scan: ListPageScan
            do {
                scan = try ListPageScan.scan(bytes)
            } catch {
                throw KubeExportError.unexpected(resource: resource.description, reason: "the API server's answer is not a list (\(error))")
            }
            let apiVersion = scan.apiVersion
            var kind = scan.kind
            guard kind.hasSuffix("List"), !apiVersion.isEmpty else {
                throw KubeExportError.unexpected(resource: resource.description, reason: "the API server's answer is not a list (kind \"\(kind)\")")
            }
            kind.removeLast(4)
            if filterKind.map({ $0 != (apiVersion, kind) }) ?? true {
                filter = try JQProgram(options.filter, arguments: ["apiVersion": apiVersion, "kind": kind])
                filterKind = (apiVersion, kind)
            }
            continueToken = scan.continueToken.isEmpty ? nil : scan.continueToken
            if let continueToken {
                let (client, options) = (client, options)
                prefetched = PendingPage {
                    try client.list(
                        resource, namespace: options.namespace, labelSelector: options.labelSelector, limit: options.pageSize,
                        continueToken: continueToken)
                }
            }

            var items = scan.items.map { (key: Array($0.namespace.utf8) + [0] + Array($0.name.utf8), namespace: $0.namespace, name: $0.name, range: $0.range) }
            items.sort { $0.key.lexicographicallyPrecedes($1.key) }

            for item in items {
                if let lastKey, !lastKey.lexicographicallyPrecedes(item.key) {
                    if item.key == lastKey || restarted { continue }  // a repeat: already written
                    if !outOfOrderWarned {
                        outOfOrderWarned = true
                        log.log(.warn, tool: tool, "the API server's pages are not in name order; the output order may vary between runs",
                                [("resource", resource.description)])
                    }
                }
                if lastKey.map({ $0.lexicographicallyPrecedes(item.key) }) ?? true { lastKey = item.key }
                if let regex = options.nameRegex {
                    let range = NSRange(item.name.startIndex..., in: item.name)
                    if regex.firstMatch(in: item.name, range: range) == nil { continue }
                }
                do {
                    try filter?.run(json: String(decoding: bytes[item.range], as: UTF8.self)) { try writer.document($0) }
                } catch let error as JQError {
                    let object = item.namespace.isEmpty ? item.name : "\(item.namespace)/\(item.name)"
                    throw KubeExportError.filterFailed(resource: resource.description, object: object, message: Self.withoutValues(error))
                }
                exported += 1
            }
            if continueToken == nil { break }
        }

        log.log(.info, tool: tool, "exported", [("resource", resource.description), ("namespace", options.namespace), ("objects", String(exported)), ("pages", String(pages))])
        return exported
    }

    /// jq's message without the excerpts of values it quotes in parentheses, which could be Secret data:
    /// `string ("c2VjcmV0...) cannot be parsed` becomes `string (…) cannot be parsed`.
    static func withoutValues(_ error: JQError) -> String {
        var message: String
        switch error {
        case .runtime(let text), .input(let text), .compile(let text): message = text
        }
        if let open = message.firstIndex(of: "(") {
            let close = message.lastIndex(of: ")").flatMap { $0 > open ? $0 : nil }
            message = String(message[..<open]) + "(…)" + (close.map { String(message[message.index(after: $0)...]) } ?? "")
        }
        return message
    }
}

/// A list request running on its own thread; `wait()` returns its outcome or rethrows its error.
/// Unchecked Sendable: the work runs on one thread and its result is read only after the semaphore.
final class PendingPage: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private var result: Result<KubeClient.ListOutcome, Error> = .failure(CancellationError())
    private var work: (() throws -> KubeClient.ListOutcome)?

    init(_ work: @escaping () throws -> KubeClient.ListOutcome) {
        self.work = work
        Thread.detachNewThread { [self] in
            result = Result { try self.work?() ?? .notFound }
            self.work = nil
            done.signal()
        }
    }

    /// Waits for the request; call once.
    func wait() throws -> KubeClient.ListOutcome {
        done.wait()
        return try result.get()
    }
}

/// Frames filter outputs as YAML documents or as the items of a JSON `v1` `List`.
struct DocumentWriter {
    let format: ExportFormat
    let sink: ExportSink
    private var count = 0
    private var scratch: [UInt8] = []

    init(format: ExportFormat, sink: ExportSink) {
        self.format = format
        self.sink = sink
    }

    mutating func begin() throws {
        if format == .json { try sink.write(Array(#"{"apiVersion":"v1","kind":"List","items":["#.utf8)) }
    }

    /// One filter output: compact JSON with sorted keys, as libjq prints it.
    mutating func document(_ json: String) throws {
        scratch.removeAll(keepingCapacity: true)
        switch format {
        case .json:
            scratch.append(contentsOf: (count == 0 ? "\n" : ",\n").utf8)
            scratch.append(contentsOf: json.utf8)
        case .yaml:
            YAMLEmitter.document(try JSONNode.parse(json), into: &scratch)
        }
        count += 1
        try sink.write(scratch)
    }

    mutating func end() throws {
        if format == .json { try sink.write(Array("\n]}\n".utf8)) }
    }
}
