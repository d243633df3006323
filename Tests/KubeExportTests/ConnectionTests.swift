import BackupKit
import Foundation
import Testing

@testable import KubeExport

/// A scratch folder removed at the end of each test.
final class Scratch {
    let path: String
    init() {
        path = NSTemporaryDirectory() + "k8s-export-test-\(UUID().uuidString)"
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }

    @discardableResult
    func write(_ name: String, _ text: String) -> String {
        let file = "\(path)/\(name)"
        try! FileManager.default.createDirectory(atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try! text.write(toFile: file, atomically: true, encoding: .utf8)
        return file
    }
}

@Suite struct ConnectionTests {
    func resolve(_ flags: ConnectionFlags, env: [String: String]) throws -> Connection {
        try ConnectionResolver(environment: Environment(env), log: Log(handle: FileHandle.nullDevice)).resolve(flags)
    }

    func serviceAccount(_ scratch: Scratch, token: String = "sa-token-1234\n", namespace: String? = "kdl") -> [String: String] {
        scratch.write("sa/token", token)
        scratch.write("sa/ca.crt", "-----BEGIN CERTIFICATE-----\n")
        if let namespace { scratch.write("sa/namespace", namespace) }
        return ["KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", ConnectionResolver.serviceAccountDirVariable: "\(scratch.path)/sa"]
    }

    @Test func inClusterUsesTheServiceAccountFolder() throws {
        let scratch = Scratch()
        let connection = try resolve(ConnectionFlags(), env: serviceAccount(scratch))
        #expect(connection.server == "https://10.96.0.1:443")
        #expect(connection.token == "sa-token-1234")
        #expect(connection.caFile == "\(scratch.path)/sa/ca.crt")
        #expect(connection.namespace == "kdl")
    }

    @Test func anIPv6ServiceHostIsBracketed() throws {
        let scratch = Scratch()
        var env = serviceAccount(scratch)
        env["KUBERNETES_SERVICE_HOST"] = "fd00::1"
        #expect(try resolve(ConnectionFlags(), env: env).server == "https://[fd00::1]:443")
    }

    @Test func theTokenIsReadAgainOnEveryRun() throws {
        let scratch = Scratch()
        let env = serviceAccount(scratch)
        #expect(try resolve(ConnectionFlags(), env: env).token == "sa-token-1234")
        scratch.write("sa/token", "rotated-token-5678")
        #expect(try resolve(ConnectionFlags(), env: env).token == "rotated-token-5678")
    }

    @Test func flagsOverrideTheServiceAccount() throws {
        let scratch = Scratch()
        let token = scratch.write("other-token", "flag-token-9999")
        let ca = scratch.write("other-ca.crt", "pem")
        let connection = try resolve(
            ConnectionFlags(server: "https://127.0.0.1:6443/", tokenFile: token, caFile: ca, namespace: "team"), env: serviceAccount(scratch))
        #expect(connection.server == "https://127.0.0.1:6443")
        #expect(connection.token == "flag-token-9999")
        #expect(connection.caFile == ca)
        #expect(connection.namespace == "team")
    }

    @Test func outsideAClusterWithoutFlagsThereIsNoServer() {
        #expect(throws: KubeExportError.noServer) { _ = try resolve(ConnectionFlags(), env: [:]) }
        #expect(KubeExportError.noServer.exitCode == ExitStatus.usage)
    }

    @Test func aMissingTokenFileIsNoInput() {
        let scratch = Scratch()
        #expect {
            _ = try resolve(ConnectionFlags(server: "https://127.0.0.1:1", tokenFile: "\(scratch.path)/nope"), env: [:])
        } throws: { ($0 as? KubeExportError)?.exitCode == ExitStatus.noInput && "\($0)".contains("/nope") }
    }

    @Test(arguments: ["ftp://x", "not a url", "https://user:pw@host", "https://host?x=1"])
    func aBadServerIsAUsageError(server: String) {
        #expect {
            _ = try resolve(ConnectionFlags(server: server), env: [:])
        } throws: { ($0 as? KubeExportError)?.exitCode == ExitStatus.usage && !"\($0)".contains("pw@") }
    }

    @Test func aBadNamespaceIsAUsageError() {
        #expect {
            _ = try resolve(ConnectionFlags(server: "https://h:1", namespace: "Bad_NS"), env: [:])
        } throws: { ($0 as? KubeExportError)?.exitCode == ExitStatus.usage }
    }

    static let kubeconfig = """
        apiVersion: v1
        kind: Config
        current-context: kdl
        clusters:
        - name: other
          cluster: {server: "https://other:1"}
        - name: local
          cluster:
            server: https://127.0.0.1:16443
            certificate-authority-data: \(Data("CA-PEM".utf8).base64EncodedString())
        contexts:
        - name: kdl
          context: {cluster: local, user: backup, namespace: kdl}
        - name: certs
          context: {cluster: local, user: cert-user}
        users:
        - name: backup
          user: {token: kubeconfig-token-abcd}
        - name: cert-user
          user:
            client-certificate: certs/client.crt
            client-key-data: \(Data("KEY-PEM".utf8).base64EncodedString())
        """

    @Test func kubeconfigCurrentContextWithInlineCAAndToken() throws {
        let scratch = Scratch()
        let path = scratch.write("config", Self.kubeconfig)
        let connection = try resolve(ConnectionFlags(kubeconfig: path), env: [:])
        #expect(connection.server == "https://127.0.0.1:16443")
        #expect(connection.token == "kubeconfig-token-abcd")
        #expect(connection.namespace == "kdl")
        let ca = try #require(connection.caFile)
        #expect(try String(contentsOfFile: ca, encoding: .utf8) == "CA-PEM")
        let mode = try FileManager.default.attributesOfItem(atPath: ca)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        connection.close()
        #expect(!FileManager.default.fileExists(atPath: ca))
    }

    @Test func kubeconfigClientCertificateWithRelativePathAndInlineKey() throws {
        let scratch = Scratch()
        let path = scratch.write("config", Self.kubeconfig)
        let connection = try resolve(ConnectionFlags(kubeconfig: path, context: "certs"), env: [:])
        defer { connection.close() }
        #expect(connection.token == nil)
        #expect(connection.clientCertFile == "\(scratch.path)/certs/client.crt")
        #expect(try String(contentsOfFile: try #require(connection.clientKeyFile), encoding: .utf8) == "KEY-PEM")
        #expect(connection.namespace == "default")
        #expect(connection.clientOptions.clientKeyFile == connection.clientKeyFile)
    }

    @Test func theKubeconfigWinsOverTheServiceAccountAndFlagsWinOverBoth() throws {
        let scratch = Scratch()
        let path = scratch.write("config", Self.kubeconfig)
        let token = scratch.write("flag-token", "from-flag-token")
        let connection = try resolve(ConnectionFlags(kubeconfig: path, tokenFile: token), env: serviceAccount(scratch))
        defer { connection.close() }
        #expect(connection.server == "https://127.0.0.1:16443")
        #expect(connection.token == "from-flag-token")
    }

    @Test(arguments: [
        ("current-context: \"\"\ncontexts: []", "no current-context"),
        ("current-context: x\ncontexts: []", "context \"x\" is not in contexts"),
        ("current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\nclusters: [{name: c, cluster: {server: \"https://h:1\"}}]\nusers: [{name: u, user: {exec: {command: aws}}}]", "\"exec\" are not supported"),
        ("current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\nclusters: [{name: c, cluster: {server: \"https://h:1\", insecure-skip-tls-verify: true}}]", "insecure-skip-tls-verify"),
        ("current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\nclusters: [{name: c, cluster: {server: \"https://h:1\", certificate-authority-data: \"%%%\"}}]", "not base64"),
        ("[unclosed", "not valid YAML"),
    ])
    func unusableKubeconfigsAreUsageErrors(text: String, expected: String) {
        let scratch = Scratch()
        let path = scratch.write("config", text)
        #expect {
            _ = try resolve(ConnectionFlags(kubeconfig: path), env: [:])
        } throws: { error in
            (error as? KubeExportError)?.exitCode == ExitStatus.usage && "\(error)".contains(expected)
        }
    }

    @Test func tokensAreRegisteredAsSecretsForTheLog() throws {
        let scratch = Scratch()
        let captured = CapturedLog()
        _ = try ConnectionResolver(environment: Environment(serviceAccount(scratch)), log: captured.log).resolve(ConnectionFlags())
        captured.log.log(.error, tool: "k8s-export", "token was sa-token-1234")
        #expect(!captured.text.contains("sa-token-1234"))
    }
}
