import BackupKit
import Foundation
import Yams

/// Where and how to reach the API server, worked out once per run.
public struct Connection {
    /// Base URL without a trailing slash, e.g. `https://10.96.0.1:443`.
    public var server: String
    /// Bearer token, read fresh from its file on every run (projected tokens rotate).
    public var token: String?
    public var caFile: String?
    public var clientCertFile: String?
    public var clientKeyFile: String?
    public var namespace: String
    /// Temporary files holding the kubeconfig's inline `*-data` fields; removed by `close()`.
    var temporary: TemporaryFiles?

    public var clientOptions: HTTPClientOptions {
        var options = HTTPClientOptions()
        options.caFile = caFile
        options.clientCertFile = clientCertFile
        options.clientKeyFile = clientKeyFile
        return options
    }

    /// Removes the temporary credential files, if any.
    public func close() {
        temporary?.removeAll()
    }
}

/// What the user gave on the command line about the connection.
public struct ConnectionFlags: Sendable {
    public var kubeconfig: String?
    public var context: String?
    public var server: String?
    public var tokenFile: String?
    public var caFile: String?
    public var namespace: String?

    public init(kubeconfig: String? = nil, context: String? = nil, server: String? = nil, tokenFile: String? = nil, caFile: String? = nil, namespace: String? = nil) {
        self.kubeconfig = kubeconfig
        self.context = context
        self.server = server
        self.tokenFile = tokenFile
        self.caFile = caFile
        self.namespace = namespace
    }
}

/// Works out the connection: the kubeconfig when given, else the pod's service account when in a cluster,
/// then `--server`, `--token-file`, `--ca-file` and `--namespace` override either.
public struct ConnectionResolver {
    /// The kubelet mounts the service account here; tests point it elsewhere.
    public static let defaultServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"
    /// Environment variable that moves the service account folder (tests, unusual mounts).
    public static let serviceAccountDirVariable = "K8S_EXPORT_SERVICEACCOUNT_DIR"

    public var environment: Environment
    public var log: Log

    public init(environment: Environment, log: Log) {
        self.environment = environment
        self.log = log
    }

    public func resolve(_ flags: ConnectionFlags) throws -> Connection {
        var server: String?
        var tokenFile: String?
        var token: String?
        var caFile: String?
        var namespace: String?
        var certFile: String?
        var keyFile: String?
        var temporary: TemporaryFiles?

        if let path = flags.kubeconfig {
            let config = try Kubeconfig.load(path: path, context: flags.context)
            let files = TemporaryFiles(base: environment.first("TMPDIR") ?? "/tmp")
            do {
                server = config.server
                token = config.token
                tokenFile = config.tokenFile
                caFile = try config.certificateAuthority.map { try files.materialize($0, name: "ca.crt") }
                certFile = try config.clientCertificate.map { try files.materialize($0, name: "client.crt") }
                keyFile = try config.clientKey.map { try files.materialize($0, name: "client.key") }
            } catch {
                files.removeAll()
                throw error
            }
            namespace = config.namespace
            temporary = files
        } else if let host = environment.first("KUBERNETES_SERVICE_HOST"), let port = environment.first("KUBERNETES_SERVICE_PORT") {
            let dir = environment.first(Self.serviceAccountDirVariable) ?? Self.defaultServiceAccountDir
            server = "https://\(host.contains(":") ? "[\(host)]" : host):\(port)"
            tokenFile = "\(dir)/token"
            caFile = "\(dir)/ca.crt"
            namespace = try Self.readIfPresent("\(dir)/namespace")?.trimmingCharacters(in: .whitespacesAndNewlines)
        }

        do {
            if let value = flags.server { server = value }
            if let value = flags.tokenFile { tokenFile = value; token = nil }
            if let value = flags.caFile { caFile = value }
            if let value = flags.namespace { namespace = value }

            guard let server else { throw KubeExportError.noServer }
            let base = try Self.validatedServer(server)
            if let tokenFile {
                token = try Self.read(tokenFile, what: "token file").trimmingCharacters(in: .whitespacesAndNewlines)
            }
            log.addSecret(token)
            if let caFile { _ = try Self.read(caFile, what: "CA file") }
            let resolvedNamespace = namespace.flatMap { $0.isEmpty ? nil : $0 } ?? "default"
            guard ResourceRef.isLabel(resolvedNamespace) else {
                throw KubeExportError.usage("namespace \"\(resolvedNamespace)\" is not a valid namespace name (a lower-case DNS label)")
            }
            return Connection(
                server: base, token: token?.isEmpty == true ? nil : token, caFile: caFile, clientCertFile: certFile,
                clientKeyFile: keyFile, namespace: resolvedNamespace, temporary: temporary)
        } catch {
            temporary?.removeAll()
            throw error
        }
    }

    static func validatedServer(_ text: String) throws -> String {
        guard let url = URLComponents(string: text), let scheme = url.scheme?.lowercased(), ["https", "http"].contains(scheme),
            let host = url.host, !host.isEmpty, url.query == nil, url.user == nil
        else {
            throw KubeExportError.usage("server \"\(Redact.url(text))\" is not an http(s) URL like https://10.96.0.1:443")
        }
        var base = text
        while base.hasSuffix("/") { base.removeLast() }
        return base
    }

    /// Reads a whole small file; missing → 66, unreadable → 77.
    static func read(_ path: String, what: String) throws -> String {
        guard FileManager.default.fileExists(atPath: path) else {
            throw KubeExportError.missingFile(what: what, path: path)
        }
        do {
            return try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw KubeExportError.unreadableFile(what: what, path: path, reason: Self.reason(error))
        }
    }

    static func readIfPresent(_ path: String) throws -> String? {
        FileManager.default.fileExists(atPath: path) ? try read(path, what: "namespace file") : nil
    }

    static func reason(_ error: Error) -> String {
        let nsError = error as NSError
        if let underlying = nsError.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code)))
        }
        return nsError.localizedDescription
    }
}

/// A credential or CA from a kubeconfig: a file path, or inline base64 data to be written to a private file.
enum KubeconfigMaterial: Equatable {
    case file(String)
    case data(Data)
}

/// The parts of a kubeconfig's current (or chosen) context that an export needs.
struct Kubeconfig: Equatable {
    var server: String
    var namespace: String?
    var certificateAuthority: KubeconfigMaterial?
    var token: String?
    var tokenFile: String?
    var clientCertificate: KubeconfigMaterial?
    var clientKey: KubeconfigMaterial?

    static func load(path: String, context: String?) throws -> Kubeconfig {
        let text = try ConnectionResolver.read(path, what: "kubeconfig")
        let base = URL(fileURLWithPath: path).deletingLastPathComponent().path
        return try parse(text, path: path, baseDir: base, context: context)
    }

    /// Parses kubeconfig YAML. Relative file paths are relative to the kubeconfig's folder, as kubectl reads them.
    static func parse(_ text: String, path: String, baseDir: String, context chosen: String?) throws -> Kubeconfig {
        func fail(_ reason: String) -> KubeExportError { .kubeconfig(path: path, reason: reason) }
        let root: [String: Any]
        do {
            guard let loaded = try Yams.load(yaml: text) as? [String: Any] else { throw fail("not a YAML mapping") }
            root = loaded
        } catch let error as KubeExportError {
            throw error
        } catch {
            throw fail("not valid YAML (\(String(describing: error).split(separator: "\n").first ?? ""))")
        }
        guard let contextName = chosen ?? (root["current-context"] as? String), !contextName.isEmpty else {
            throw fail("no current-context; give --context NAME")
        }
        guard let context = named(root["contexts"], contextName, field: "context") else {
            throw fail("context \"\(contextName)\" is not in contexts")
        }
        guard let clusterName = context["cluster"] as? String, let cluster = named(root["clusters"], clusterName, field: "cluster") else {
            throw fail("context \"\(contextName)\" names no cluster in clusters")
        }
        guard let server = cluster["server"] as? String, !server.isEmpty else {
            throw fail("cluster \"\(clusterName)\" has no server")
        }
        if cluster["insecure-skip-tls-verify"] as? Bool == true {
            throw fail("cluster \"\(clusterName)\" sets insecure-skip-tls-verify, which k8s-export refuses; give certificate-authority or --ca-file")
        }
        var user: [String: Any] = [:]
        if let userName = context["user"] as? String, !userName.isEmpty {
            guard let found = named(root["users"], userName, field: "user") else {
                throw fail("context \"\(contextName)\" names user \"\(userName)\", which is not in users")
            }
            user = found
        }
        for unsupported in ["exec", "auth-provider", "username", "password"] where user[unsupported] != nil {
            throw fail("user credentials by \"\(unsupported)\" are not supported; use a token, tokenFile or a client certificate")
        }
        func material(_ object: [String: Any], _ key: String) throws -> KubeconfigMaterial? {
            if let encoded = object["\(key)-data"] as? String, !encoded.isEmpty {
                guard let data = Data(base64Encoded: encoded.filter { !$0.isWhitespace }) else {
                    throw fail("\(key)-data is not base64")
                }
                return .data(data)
            }
            if let file = object[key] as? String, !file.isEmpty {
                return .file(file.hasPrefix("/") ? file : "\(baseDir)/\(file)")
            }
            return nil
        }
        let tokenFile = (user["tokenFile"] as? String).map { $0.hasPrefix("/") ? $0 : "\(baseDir)/\($0)" }
        return Kubeconfig(
            server: server, namespace: context["namespace"] as? String,
            certificateAuthority: try material(cluster, "certificate-authority"),
            token: user["token"] as? String, tokenFile: tokenFile,
            clientCertificate: try material(user, "client-certificate"), clientKey: try material(user, "client-key"))
    }

    /// The `field` object of the entry called `name` in a kubeconfig list (`contexts`, `clusters`, `users`).
    private static func named(_ list: Any?, _ name: String, field: String) -> [String: Any]? {
        guard let entries = list as? [Any] else { return nil }
        for case let entry as [String: Any] in entries where entry["name"] as? String == name {
            return entry[field] as? [String: Any] ?? [:]
        }
        return nil
    }
}

/// A private folder (0700) of private files (0600) for inline credentials, removed when the run ends.
final class TemporaryFiles {
    private let base: String
    private var directory: String?

    init(base: String) {
        self.base = base
    }

    func materialize(_ material: KubeconfigMaterial, name: String) throws -> String {
        switch material {
        case .file(let path):
            return path
        case .data(let data):
            let dir = try folder()
            let path = "\(dir)/\(name)"
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
            guard fd >= 0 else { throw KubeExportError.output(path: path, reason: String(cString: strerror(errno))) }
            defer { close(fd) }
            try data.withUnsafeBytes { try FileOutput.writeAll(fd: fd, $0, path: path) }
            return path
        }
    }

    private func folder() throws -> String {
        if let directory { return directory }
        var template = Array("\(base)/k8s-export.XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else {
            throw KubeExportError.output(path: base, reason: String(cString: strerror(errno)))
        }
        let path = cPathString(template)
        directory = path
        return path
    }

    func removeAll() {
        guard let directory else { return }
        try? FileManager.default.removeItem(atPath: directory)
        self.directory = nil
    }
}
