import ArgumentParser
import BackupKit
import Foundation
import Testing

@testable import KubeExport

@Suite struct CommandTests {
    @Test func optionValuesStartingWithADashAreTakenAsWritten() throws {
        let command = try K8sExportCommand.parse(["--name-regex", "-ssh-keys$", "--filter", "-.x", "secrets"])
        #expect(command.nameRegex == "-ssh-keys$")
        #expect(command.filter == "-.x")
        #expect(command.resources == ["secrets"])
    }

    @Test(arguments: [
        ["--format", "xml", "secrets"], ["--filter", ".", "--filter-file", "f", "secrets"], ["--context", "x", "secrets"],
        ["--retries", "-1", "secrets"],
    ])
    func badCommandLinesAreRejected(arguments: [String]) {
        #expect(throws: (any Error).self) { _ = try K8sExportCommand.parse(arguments) }
    }

    @Test func printDefaultFilterNeedsNoResource() throws {
        let command = try K8sExportCommand.parse(["--print-default-filter"])
        #expect(command.printDefaultFilter)
    }

    func execute(_ arguments: [String], api: FakeKubeAPI, env: [String: String] = [:]) throws -> (String, ExportSummary) {
        let command = try K8sExportCommand.parse(arguments)
        let sink = MemorySink()
        let summary = try K8sExportCommand.execute(command, environment: Environment(env), log: Log(handle: FileHandle.nullDevice), transport: api, sink: sink, sleeper: RecordingSleeper())
        #expect(sink.finished)
        return (sink.text, summary)
    }

    static func resourceList(_ groupVersion: String, _ names: [String]) -> [String: Any] {
        ["kind": "APIResourceList", "apiVersion": "v1", "groupVersion": groupVersion,
         "resources": names.map { ["name": $0, "namespaced": true, "kind": "X", "verbs": ["list"]] }]
    }

    @Test func servedLooksUpEachResourceInItsGroupVersionsDiscoveryDocumentOnce() throws {
        let api = FakeKubeAPI()
        api.documents["/apis/kdl.konstellation.io/v1"] = Self.resourceList("kdl.konstellation.io/v1", ["kdlprojects", "kdlprojects/status", "kdlusertools"])
        api.documents["/api/v1"] = Self.resourceList("v1", ["secrets", "pods"])
        let command = try K8sExportCommand.parse([
            "--served", "--server", "https://127.0.0.1:6443", "kdlprojects.v1.kdl.konstellation.io", "kdlusertools.v1.kdl.konstellation.io",
            "status.v1.kdl.konstellation.io", "kdlprojects.v1.project.konstellation.io", "secrets",
        ])
        let lines = try K8sExportCommand.discover(command, environment: Environment([:]), log: Log(handle: FileHandle.nullDevice), transport: api, sleeper: RecordingSleeper())
        #expect(lines.map { "\($0.resource) \($0.served)" } == [
            "kdlprojects.v1.kdl.konstellation.io true", "kdlusertools.v1.kdl.konstellation.io true", "status.v1.kdl.konstellation.io false",
            "kdlprojects.v1.project.konstellation.io false", "secrets true",
        ])
        #expect(api.requests.map { URLComponents(string: $0.url)!.path } == ["/apis/kdl.konstellation.io/v1", "/apis/project.konstellation.io/v1", "/api/v1"])
    }

    @Test func servedReportsAForbiddenDiscoveryAsPermissionDenied() throws {
        let api = FakeKubeAPI()
        api.faults = [.status(403, "forbidden")]
        let command = try K8sExportCommand.parse(["--served", "--server", "https://127.0.0.1:6443", "kdlprojects.v1.kdl.konstellation.io"])
        #expect(throws: KubeExportError.self) {
            _ = try K8sExportCommand.discover(command, environment: Environment([:]), log: Log(handle: FileHandle.nullDevice), transport: api, sleeper: RecordingSleeper())
        }
        #expect(KubeExportError.forbidden(status: 403, verb: "discover", resource: "/apis/x/v1", namespace: "kdl", message: "").exitCode == 77)
    }

    @Test func executeWiresFlagsThroughToTheRequests() throws {
        let scratch = Scratch()
        let token = scratch.write("token", "cli-token-1234\n")
        let api = FakeKubeAPI()
        api.add(path: "/api/v1/namespaces/team/secrets", apiVersion: "v1", kind: "Secret", items: [FakeKubeAPI.secret("a-ssh-keys", namespace: "team"), FakeKubeAPI.secret("b", namespace: "team")])
        let (output, summary) = try execute(
            ["--server", "https://127.0.0.1:6443", "--token-file", token, "-n", "team", "--name-regex", "-ssh-keys$", "secrets", "secrets"], api: api)
        #expect(summary.jsonLine == #"{"secrets":1}"#)
        #expect(output.contains("name: a-ssh-keys") && !output.contains("name: b\n"))
        #expect(api.requests.count == 1)  // the repeated resource is listed once
        #expect(api.requests[0].url.hasPrefix("https://127.0.0.1:6443/api/v1/namespaces/team/secrets?limit=500"))
        #expect(api.requests[0].headers.contains(HTTPHeader("Authorization", "Bearer cli-token-1234")))
    }

    @Test func aFilterFileIsReadAndCheckedBeforeAnyRequest() throws {
        let scratch = Scratch()
        let broken = scratch.write("broken.jq", "{ name: .metadata.name ")
        let api = FakeKubeAPI()
        #expect {
            _ = try execute(["--server", "https://127.0.0.1:1", "--filter-file", broken, "secrets"], api: api)
        } throws: { ($0 as? KubeExportError)?.exitCode == ExitStatus.usage && "\($0)".hasPrefix("jq program does not compile") }
        #expect(api.requests.isEmpty)
        #expect {
            _ = try execute(["--server", "https://127.0.0.1:1", "--filter-file", "\(scratch.path)/none.jq", "secrets"], api: api)
        } throws: { ($0 as? KubeExportError)?.exitCode == ExitStatus.noInput }
    }

    @Test func anInvalidNameRegexIsAUsageError() {
        #expect {
            _ = try execute(["--server", "https://127.0.0.1:1", "--name-regex", "([", "secrets"], api: FakeKubeAPI())
        } throws: { ($0 as? KubeExportError)?.exitCode == ExitStatus.usage }
    }
}

@Suite struct OutputTests {
    @Test func anAtomicOutputAppearsOnlyWhenFinishedWithMode0600() throws {
        let scratch = Scratch()
        let target = "\(scratch.path)/secrets.yaml"
        let output = try FileOutput.atomic(path: target)
        try output.write(Array("---\nkind: Secret\n".utf8))
        #expect(!FileManager.default.fileExists(atPath: target))
        try output.finish()
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "---\nkind: Secret\n")
        #expect(try FileManager.default.attributesOfItem(atPath: target)[.posixPermissions] as? Int == 0o600)
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path) == ["secrets.yaml"])
    }

    @Test func anUnfinishedOutputLeavesNothingBehind() throws {
        let scratch = Scratch()
        do {
            let output = try FileOutput.atomic(path: "\(scratch.path)/out.yaml")
            try output.write(Array("partial".utf8))
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path).isEmpty)
    }

    @Test func anOutputInAMissingFolderIsAnIOError() {
        #expect {
            _ = try FileOutput.atomic(path: "/nonexistent-k8s-export/out.yaml")
        } throws: { ($0 as? KubeExportError)?.exitCode == ExitStatus.ioError }
    }
}
