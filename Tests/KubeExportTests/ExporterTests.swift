import BackupKit
import Foundation
import Testing
import Yams

@testable import KubeExport

@Suite struct ExporterTests {
    static let secretsPath = "/api/v1/namespaces/kdl/secrets"
    static let projectsPath = "/apis/project.konstellation.io/v1/namespaces/kdl/kdlprojects"
    static let projects = "kdlprojects.v1.project.konstellation.io"

    func kdlAPI() -> FakeKubeAPI {
        let api = FakeKubeAPI()
        api.add(path: Self.projectsPath, apiVersion: "project.konstellation.io/v1", kind: "KDLProject", items: [FakeKubeAPI.project("demo"), FakeKubeAPI.project("alpha")])
        api.add(path: Self.secretsPath, apiVersion: "v1", kind: "Secret", items: [
            FakeKubeAPI.secret("bob-ssh-keys", data: ["KDL_USER_PRIVATE_SSH_KEY": "c2VjcmV0LWtleS1ib2I=", "KDL_USER_PUBLIC_SSH_KEY": "cHVi"]),
            FakeKubeAPI.secret("alice-ssh-keys", data: ["KDL_USER_PRIVATE_SSH_KEY": "c2VjcmV0LWtleS1hbGljZQ==", "KDL_USER_PUBLIC_SSH_KEY": "cHVi"]),
            FakeKubeAPI.secret("codeserver-oauth2-secrets-alice", data: ["GITEA_APPLICATION_NAME": "Y29kZXNlcnZlcg=="]),
            FakeKubeAPI.secret("postgres", data: ["POSTGRES_PASSWORD": "cGFzc3dvcmQ="]),
        ])
        return api
    }

    @Test func defaultFilterCleansServerFieldsAndAddsApiVersionAndKind() throws {
        let (output, summary, _) = try runExport(kdlAPI(), resources: [Self.projects])
        let docs = try Yams.load_all(yaml: output).map { $0 as? [String: Any] }
        #expect(docs.count == 2)
        let first = try #require(docs.first ?? nil)
        #expect(first["apiVersion"] as? String == "project.konstellation.io/v1")
        #expect(first["kind"] as? String == "KDLProject")
        #expect(first["status"] == nil)
        let metadata = try #require(first["metadata"] as? [String: Any])
        #expect(Set(metadata.keys) == ["name", "namespace", "labels"])
        #expect(metadata["name"] as? String == "kdlproject-alpha")  // sorted by name
        #expect((first["spec"] as? [String: Any])?["projectId"] as? String == "alpha")
        #expect(summary.counts.map(\.objects) == [2])
    }

    @Test func theLastAppliedAnnotationGoesAndOtherAnnotationsStay() throws {
        let api = FakeKubeAPI()
        var secret = FakeKubeAPI.secret("a")
        var metadata = secret["metadata"] as! [String: Any]
        metadata["annotations"] = ["kubectl.kubernetes.io/last-applied-configuration": "{}", "kdl/owner": "alice"]
        secret["metadata"] = metadata
        api.add(path: Self.secretsPath, apiVersion: "v1", kind: "Secret", items: [secret, FakeKubeAPI.secret("b")])
        let (output, _, _) = try runExport(api, resources: ["secrets"], format: .json)
        let list = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any])
        let items = try #require(list["items"] as? [[String: Any]])
        #expect((items[0]["metadata"] as? [String: Any])?["annotations"] as? [String: String] == ["kdl/owner": "alice"])
        #expect((items[1]["metadata"] as? [String: Any])?["annotations"] == nil)  // emptied, so removed
    }

    @Test func itemsThatCarryApiVersionKeepIt() throws {
        let program = try JQProgram(Exporter.defaultFilter, arguments: ["apiVersion": "v1", "kind": "Secret"])
        let out = try program.run(json: #"{"apiVersion":"v2","metadata":{"name":"x","uid":"u"}}"#)
        #expect(out == [#"{"apiVersion":"v2","kind":"Secret","metadata":{"name":"x"}}"#])
    }

    @Test func jsonFormatIsAV1List() throws {
        let (output, _, _) = try runExport(kdlAPI(), resources: ["secrets", Self.projects], format: .json)
        let list = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any])
        #expect(list["apiVersion"] as? String == "v1")
        #expect(list["kind"] as? String == "List")
        let items = try #require(list["items"] as? [[String: Any]])
        let names = items.compactMap { ($0["metadata"] as? [String: Any])?["name"] as? String }
        #expect(names == ["alice-ssh-keys", "bob-ssh-keys", "codeserver-oauth2-secrets-alice", "postgres", "kdlproject-alpha", "kdlproject-demo"])
        #expect(items.allSatisfy { $0["kind"] != nil && $0["apiVersion"] != nil })
    }

    @Test func resourcesKeepTheGivenOrderAndObjectsAreSortedAcrossUnsortedPages() throws {
        let api = kdlAPI()
        api.reversePages = true
        let (output, _, _) = try runExport(api, resources: [Self.projects, "secrets"], pageSize: 2)
        let names = output.split(separator: "\n").filter { $0.hasPrefix("  name: ") }.map { $0.dropFirst(8) }
        #expect(names == ["kdlproject-alpha", "kdlproject-demo", "alice-ssh-keys", "bob-ssh-keys", "codeserver-oauth2-secrets-alice", "postgres"])
    }

    @Test func repeatedExportsAreByteIdentical() throws {
        let first = try runExport(kdlAPI(), resources: ["secrets", Self.projects]).output
        let api = kdlAPI()
        api.reversePages = true
        let second = try runExport(api, resources: ["secrets", Self.projects], pageSize: 1).output
        #expect(first == second)
        #expect(!first.isEmpty)
    }

    @Test func paginationFollowsContinueTokensWithLimit500() throws {
        let api = FakeKubeAPI()
        api.add(path: Self.secretsPath, apiVersion: "v1", kind: "Secret", items: (0..<1_234).map { FakeKubeAPI.secret(String(format: "user%05d-ssh-keys", $0)) })
        let (_, summary, log) = try runExport(api, resources: ["secrets"], format: .json)
        #expect(summary.counts.map(\.objects) == [1_234])
        #expect(api.requests.count == 3)
        #expect(api.requests.allSatisfy { $0.url.contains("limit=500") })
        #expect(api.requests[1].url.contains("continue=500"))
        #expect(api.requests.allSatisfy { $0.headers.contains(HTTPHeader("Authorization", "Bearer test-token-abcdef")) })
        #expect(log.contains("objects=1234"))
    }

    @Test func anExpiredContinueTokenRestartsTheListOnceWithoutDuplicates() throws {
        let api = FakeKubeAPI()
        api.add(path: Self.secretsPath, apiVersion: "v1", kind: "Secret", items: (0..<25).map { FakeKubeAPI.secret("s\($0 + 10)") })
        api.expireContinueTokens = 1
        let (output, summary, log) = try runExport(api, resources: ["secrets"], pageSize: 10)
        #expect(summary.counts.map(\.objects) == [25])
        let names = output.split(separator: "\n").filter { $0.hasPrefix("  name: ") }
        #expect(names.count == 25 && Set(names).count == 25)
        #expect(log.contains("410 Gone"))
        #expect(api.requests.filter { !$0.url.contains("continue=") }.count == 2)  // the first page twice
    }

    @Test func aSecondExpiryIsATemporaryFailure() throws {
        let api = FakeKubeAPI()
        api.add(path: Self.secretsPath, apiVersion: "v1", kind: "Secret", items: (0..<25).map { FakeKubeAPI.secret("s\($0)") })
        api.expireContinueTokens = 2
        #expect {
            _ = try runExport(api, resources: ["secrets"], pageSize: 10)
        } throws: { error in
            (error as? KubeExportError)?.exitCode == ExitStatus.tempFailure && (error as? KubeExportError) == .expiredTwice(resource: "secrets")
        }
    }

    @Test func aMissingCRDIsAWarningAndTheOthersStillExport() throws {
        let (output, summary, log) = try runExport(kdlAPI(), resources: ["usertools.v1alpha1.kdl.konstellation.io", "secrets"])
        #expect(summary.missing == ["usertools.v1alpha1.kdl.konstellation.io"])
        #expect(summary.counts.map(\.objects) == [0, 4])
        #expect(log.contains("level=warn") && log.contains("resource=usertools.v1alpha1.kdl.konstellation.io"))
        #expect(output.contains("name: postgres"))
        #expect(summary.jsonLine == #"{"secrets":4,"usertools.v1alpha1.kdl.konstellation.io":0}"#)
    }

    @Test(arguments: [401, 403])
    func refusedCredentialsNameVerbResourceAndNamespace(status: Int) throws {
        let api = kdlAPI()
        api.faults = [.status(status, #"secrets is forbidden: User "system:serviceaccount:kdl:backup" cannot list resource "secrets""#)]
        #expect {
            _ = try runExport(api, resources: ["secrets"])
        } throws: { error in
            guard let error = error as? KubeExportError else { return false }
            return error.exitCode == ExitStatus.noPermission && error.description.contains("cannot list secrets in namespace kdl")
        }
    }

    @Test func serverErrorsAreRetriedThenSucceed() throws {
        let api = kdlAPI()
        api.faults = [.status(503, "etcd leader changed"), .transport(retryable: true)]
        let (_, summary, log) = try runExport(api, resources: ["secrets"], retries: 2)
        #expect(summary.counts.map(\.objects) == [4])
        #expect(log.components(separatedBy: "retrying").count == 3)
    }

    @Test func anUnreachableServerIsUnavailableAfterRetries() throws {
        let api = kdlAPI()
        api.faults = Array(repeating: .transport(retryable: true), count: 5)
        #expect {
            _ = try runExport(api, resources: ["secrets"], retries: 2)
        } throws: { error in
            (error as? KubeExportError)?.exitCode == ExitStatus.unavailable
        }
        #expect(api.requests.count == 3)
    }

    @Test func aBadSelectorIsAUsageError() throws {
        let api = kdlAPI()
        api.faults = [.status(400, "unable to parse requirement: found '!'")]
        #expect {
            _ = try runExport(api, resources: ["secrets"], labelSelector: "!!")
        } throws: { error in
            (error as? KubeExportError)?.exitCode == ExitStatus.usage && "\(error)".contains("unable to parse requirement")
        }
    }

    @Test func nameRegexAndLabelSelectorSelect() throws {
        let (output, summary, _) = try runExport(kdlAPI(), resources: ["secrets"], nameRegex: "-ssh-keys$|^codeserver-oauth2-")
        #expect(summary.counts.map(\.objects) == [3])
        #expect(!output.contains("name: postgres"))

        let api = FakeKubeAPI()
        api.add(path: Self.secretsPath, apiVersion: "v1", kind: "Secret", items: [
            FakeKubeAPI.secret("a", labels: ["app": "kdl"]), FakeKubeAPI.secret("b", labels: ["app": "other"]),
        ])
        let selected = try runExport(api, resources: ["secrets"], labelSelector: "app=kdl")
        #expect(selected.summary.counts.map(\.objects) == [1])
        #expect(api.requests[0].url.contains("labelSelector=app%3Dkdl"))
    }

    @Test func aCustomFilterReplacesTheDefault() throws {
        let (output, _, _) = try runExport(kdlAPI(), resources: ["secrets"], format: .json, filter: "{kind: $kind, name: .metadata.name} | select(.name | startswith(\"p\"))")
        #expect(output == "{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[\n{\"kind\":\"Secret\",\"name\":\"postgres\"}\n]}\n")
    }

    @Test func aFilterThatDoesNotCompileIsAUsageErrorWithJqsMessage() {
        #expect {
            _ = try runExport(kdlAPI(), resources: ["secrets"], filter: "del(.metadata.uid")
        } throws: { error in
            guard let error = error as? KubeExportError, case .filterCompile(let message) = error else { return false }
            return error.exitCode == ExitStatus.usage && message.contains("syntax error") && !message.contains("\n")
        }
    }

    @Test func aFilterFailingOnASecretNamesTheObjectButNotItsData() throws {
        let captured = CapturedLog()
        #expect {
            _ = try runExport(kdlAPI(), resources: ["secrets"], filter: ".data.KDL_USER_PRIVATE_SSH_KEY | tonumber")
        } throws: { error in
            let text = "\(error)"
            captured.log.write(text)
            return text.contains("secrets kdl/alice-ssh-keys") && !text.contains("c2VjcmV0") && (error as? KubeExportError)?.exitCode == 1
        }
    }

    @Test func secretDataNeverReachesTheLog() throws {
        let api = kdlAPI()
        api.faults = [.status(503, "busy")]
        let (output, _, log) = try runExport(api, resources: ["secrets", Self.projects])
        #expect(output.contains("c2VjcmV0LWtleS1hbGljZQ=="))
        for value in ["c2VjcmV0", "cGFzc3dvcmQ=", "test-token-abcdef"] {
            #expect(!log.contains(value))
        }
    }

    @Test func jqValueExcerptsAreRemovedFromMessages() {
        #expect(Exporter.withoutValues(.runtime(#"string ("c2VjcmV0...) cannot be parsed as a number"#)) == "string (…) cannot be parsed as a number")
        #expect(Exporter.withoutValues(.runtime(#"string ("a)b") and number (1) cannot be added"#)) == "string (…) cannot be added")
        #expect(Exporter.withoutValues(.runtime(#"Cannot iterate over string ("abc"#)) == "Cannot iterate over string (…)")
        #expect(Exporter.withoutValues(.runtime("Cannot index string with \"data\"")) == "Cannot index string with \"data\"")
    }
}
