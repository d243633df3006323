import Testing

@testable import MLflowScan

@Suite struct ProjectNameTests {
    @Test(arguments: [
        ("kdl-demo-mlflow-claim-pvc-1a2b3c4d-5e6f-7a8b-9c0d-112233445566", "demo"),
        ("kdl-churn-model-mlflow-claim-pvc-0f9e", "churn-model"),
        ("demo", "demo"),
        ("with space", "with space"),
        // The marker is matched from the end: a project name may itself contain it.
        ("kdl-a-mlflow-claim-pvc-b-mlflow-claim-pvc-99", "a-mlflow-claim-pvc-b"),
        // Not the claim pattern: the folder's own name.
        ("kdl--mlflow-claim-pvc-1234", "kdl--mlflow-claim-pvc-1234"),
        ("kdl-demo-mlflow-claim-pvc-", "kdl-demo-mlflow-claim-pvc-"),
        ("kdl-demo-mlflow-claim-pvc-12_34", "kdl-demo-mlflow-claim-pvc-12_34"),
        ("demo-mlflow-claim-pvc-1234", "demo-mlflow-claim-pvc-1234"),
        ("kdl-..-mlflow-claim-pvc-1234", "kdl-..-mlflow-claim-pvc-1234"),
        ("/", "mlflow"),
    ])
    func folderNamesMapToProjects(folder: String, project: String) {
        #expect(ProjectName.forFolder(named: folder) == project)
    }

    @Test(arguments: [
        ("kdl-demo-mlflow-pvc-1a2b3c4d-5e6f-7a8b-9c0d-112233445566", "demo"),
        ("kdl-dev-churn-model-mlflow-pvc-0f9e", "churn-model"),
        ("kdl-demo-mlflow-claim-pvc-0f9e", "demo"),
        // Another namespace's claim, or no uid: the folder's own name.
        ("other-demo-mlflow-pvc-0f9e", "other-demo-mlflow-pvc-0f9e"),
        ("kdl-dev-demo-mlflow-pvc-", "kdl-dev-demo-mlflow-pvc-"),
        ("kdl-dev-mlflow-pvc-0f9e", "dev"),
    ])
    func kdl6ClaimFoldersOfTheGivenNamespacesMapToProjects(folder: String, project: String) {
        #expect(ProjectName.forFolder(named: folder, namespaces: ["kdl", "kdl-dev"]) == project)
    }

    @Test func kdl6FoldersKeepTheirNameWithoutANamespace() {
        #expect(ProjectName.forFolder(named: "kdl-demo-mlflow-pvc-0f9e") == "kdl-demo-mlflow-pvc-0f9e")
    }

    @Test func duplicateProjectsGetDistinctStableSnapshotNames() {
        let candidates = [
            Candidate(folder: RawPath("/r/demo"), relative: RawPath("demo"), database: RawPath("/r/demo/mlflow.db"), project: "demo"),
            Candidate(
                folder: RawPath("/r/kdl-demo-mlflow-claim-pvc-1"), relative: RawPath("kdl-demo-mlflow-claim-pvc-1"),
                database: RawPath("/r/kdl-demo-mlflow-claim-pvc-1/mlflow.db"), project: "demo"),
            Candidate(folder: RawPath("/r/other"), relative: RawPath("other"), database: RawPath("/r/other/mlflow.db"), project: "other"),
        ]
        let names = Scanner.snapshotNames(for: candidates).map(\.text)
        #expect(names[2] == "other")
        #expect(names[0].hasPrefix("demo~") && names[1].hasPrefix("demo~"))
        #expect(names[0] != names[1])
        #expect(names[0].count == "demo~".count + 8)
        #expect(Scanner.snapshotNames(for: candidates).map(\.text) == names)
    }

    @Test func uriEncodingKeepsEveryByte() {
        let path = RawPath([UInt8]("/a b/%?#".utf8) + [0xff, 0x0a])
        #expect(SQLiteConnection.percentEncoded(path) == "/a%20b/%25%3F%23%FF%0A")
    }
}
