import Foundation
import Testing
import Yams

@testable import KubeExport

@Suite struct YAMLEmitterTests {
    func yaml(_ json: String) throws -> String {
        var out: [UInt8] = []
        YAMLEmitter.document(try JSONNode.parse(json), into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    @Test func objectsComeOutInKubectlsBlockStyleWithApiVersionKindMetadataFirst() throws {
        let json = #"{"data":{"b":"Yg==","a":"YQ=="},"kind":"Secret","metadata":{"name":"alice-ssh-keys","labels":{"app":"x"}},"apiVersion":"v1","type":"Opaque","list":[{"name":"c","ports":[1,2]},[],{},"s",["x"]],"empty":{}}"#
        #expect(try yaml(json) == """
            ---
            apiVersion: v1
            kind: Secret
            metadata:
              labels:
                app: x
              name: alice-ssh-keys
            data:
              a: YQ==
              b: Yg==
            empty: {}
            list:
            - name: c
              ports:
              - 1
              - 2
            - []
            - {}
            - s
            - - x
            type: Opaque

            """)
    }

    static let trickyStrings = [
        "", " leading", "trailing ", "yes", "No", "ON", "y", "n", "~", "null", "Null", "true", "FALSE", "0777", "1e3", "12:30",
        "2024-05-01", ".inf", "-", "- a", "-x", "a: b", "a #b", "#c", "@x", "`x", "!tag", "&a", "*a", "|", ">", "%x", "'q'",
        "\"q\"", "line1\nline2\n", "tab\there", "back\\slash", "uni ü ✓", "nel\u{85}x", "bell\u{07}", "{a}", "[a]", "a,b",
        "?", "key=value==", "image:1.0", "mlflow server --backend-store-uri sqlite:///mlflow.db", "two  spaces", "<<",
    ]

    @Test(arguments: trickyStrings)
    func everyStringReadsBackAsTheSameStringInBothPositions(text: String) throws {
        let encoded = String(decoding: try JSONSerialization.data(withJSONObject: [text: text], options: [.fragmentsAllowed]), as: UTF8.self)
        let emitted = try yaml(encoded)
        let node = try #require(try Yams.compose(yaml: emitted))
        let mapping = try #require(node.mapping)
        #expect(mapping.count == 1)
        let (key, value) = try #require(mapping.first)
        #expect(key.string == text)
        #expect(value.string == text)
    }

    @Test(arguments: [
        "yes", "no", "on", "off", "y", "n", "true", "null", "~", "0777", "1e3", "12:30", "2024-05-01", ".inf", "", "-", "x: y", " x",
    ])
    func stringsAYAML11ReaderWouldRetypeAreQuoted(text: String) {
        #expect(!YAMLEmitter.isPlainSafe(text))
    }

    @Test(arguments: ["alice-ssh-keys", "kdlproject-demo", "app.kubernetes.io/name", "S0VZ+/abc==", "/data/git", "KDL_USER_PRIVATE_SSH_KEY", "Opaque"])
    func ordinaryKubernetesValuesStayPlain(text: String) {
        #expect(YAMLEmitter.isPlainSafe(text))
    }

    @Test func scalarsKeepTheirTypes() throws {
        let out = try yaml(#"{"b":true,"f":false,"n":null,"i":3,"d":1.5,"s":"3"}"#)
        let node = try #require(try Yams.load(yaml: out) as? [String: Any])
        #expect(node["b"] as? Bool == true)
        #expect(node["f"] as? Bool == false)
        #expect(node["i"] as? Int == 3)
        #expect(node["d"] as? Double == 1.5)
        #expect(node["s"] as? String == "3")
        #expect(out.contains("\"n\": null\n"))  // "n" is false in YAML 1.1, so the key is quoted
    }

    @Test func nonObjectDocumentsAreScalars() throws {
        #expect(try yaml(#""x""#) == "---\nx\n")
        #expect(try yaml("[]") == "---\n[]\n")
    }

    @Test func jsonParserDecodesEscapesAndSurrogates() throws {
        #expect(try JSONNode.parse(#""a\n\u00fc\ud83d\ude00\/""#) == .string("a\nü😀/"))
        #expect(throws: (any Error).self) { _ = try JSONNode.parse(#"{"a":1"#) }
        #expect(throws: (any Error).self) { _ = try JSONNode.parse(#"[1] x"#) }
    }
}

@Suite struct ListPageScanTests {
    @Test func findsTheListFieldsAndEachItemsExactBytes() throws {
        let page = #"{ "kind" : "SecretList", "apiVersion":"v1", "metadata":{"continue":"abc\u003d","resourceVersion":"9"}, "items" : [ {"metadata":{"name":"b\"q","namespace":"kdl"},"data":{"k":"dg=="}} , {"metadata":{"name":"a"}} ] }"#
        let bytes = Array(page.utf8)
        let scan = try ListPageScan.scan(bytes)
        #expect(scan.kind == "SecretList" && scan.apiVersion == "v1" && scan.continueToken == "abc=")
        #expect(scan.items.map(\.name) == ["b\"q", "a"])
        #expect(scan.items.map(\.namespace) == ["kdl", ""])
        #expect(String(decoding: bytes[scan.items[1].range], as: UTF8.self) == #"{"metadata":{"name":"a"}}"#)
        #expect(String(decoding: bytes[scan.items[0].range], as: UTF8.self) == #"{"metadata":{"name":"b\"q","namespace":"kdl"},"data":{"k":"dg=="}}"#)
    }

    @Test func nullOrMissingItemsAreAnEmptyPage() throws {
        #expect(try ListPageScan.scan(Array(#"{"kind":"SecretList","apiVersion":"v1","items":null}"#.utf8)).items.isEmpty)
        #expect(try ListPageScan.scan(Array(#"{"kind":"SecretList","apiVersion":"v1","metadata":{}}"#.utf8)).continueToken.isEmpty)
    }

    @Test(arguments: [#"{"items":[{"metadata":{"name":"#, "[]", #"{"items":{}}"#, "", #"{"a":1} trailing"#])
    func brokenPagesThrow(text: String) {
        #expect(throws: (any Error).self) { _ = try ListPageScan.scan(Array(text.utf8)) }
    }
}
