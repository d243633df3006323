import BackupKit
import Testing

@testable import KubeExport

@Suite struct ResourceTests {
    @Test func customResourceFormSplitsIntoPluralVersionGroup() throws {
        let ref = try ResourceRef(parsing: "kdlprojects.v1.project.konstellation.io")
        #expect(ref == ResourceRef(plural: "kdlprojects", version: "v1", group: "project.konstellation.io"))
        #expect(ref.listPath(namespace: "kdl") == "/apis/project.konstellation.io/v1/namespaces/kdl/kdlprojects")
        #expect(ref.description == "kdlprojects.v1.project.konstellation.io")

        let tools = try ResourceRef(parsing: "usertools.v1alpha1.kdl.konstellation.io")
        #expect(tools.version == "v1alpha1" && tools.group == "kdl.konstellation.io")
    }

    @Test func plainNamesAreCoreV1() throws {
        let ref = try ResourceRef(parsing: "secrets")
        #expect(ref == ResourceRef(plural: "secrets", version: "v1", group: ""))
        #expect(ref.listPath(namespace: "kdl") == "/api/v1/namespaces/kdl/secrets")
        #expect(ref.description == "secrets")
        #expect(try ResourceRef(parsing: "configmaps.v1").listPath(namespace: "x") == "/api/v1/namespaces/x/configmaps")
    }

    @Test(arguments: [
        "", "Secrets", "secrets.apps", "kdlprojects.project.konstellation.io", "a..b", "x.v1.", "x.1.apps", "-x",
        "secrets/kdl", "kdlprojects.v1.Project.io", "secrets.v0",
    ])
    func malformedResourcesAreUsageErrors(text: String) {
        #expect {
            _ = try ResourceRef(parsing: text)
        } throws: { error in
            guard let error = error as? KubeExportError, case .usage(let message) = error else { return false }
            return error.exitCode == ExitStatus.usage && message.contains("PLURAL.VERSION.GROUP")
        }
    }
}
