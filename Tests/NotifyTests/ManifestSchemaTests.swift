import Foundation
import Testing

@testable import Notify

/// notify decodes the fields backup/manifest.schema.json defines, under the same names and values: a field
/// renamed on one side only fails here, not in a 3 a.m. alert.
@Suite struct ManifestSchemaTests {
    static var schema: [String: Any] {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../backup/manifest.schema.json")
        let data = (try? Data(contentsOf: url)) ?? Data()
        return ((try? JSONSerialization.jsonObject(with: data)) as? [String: Any]) ?? [:]
    }

    static func properties(_ object: [String: Any]?) -> Set<String> {
        Set(((object?["properties"] as? [String: Any]) ?? [:]).keys)
    }

    static var definitions: [String: [String: Any]] { (schema["$defs"] as? [String: [String: Any]]) ?? [:] }

    static func fields(of value: Any) -> Set<String> {
        Set(Mirror(reflecting: value).children.compactMap(\.label))
    }

    @Test func everyDecodedFieldIsDefinedByTheSchema() throws {
        let object = Manifest.StoredObject(key: "gitea/postgres.dump", bytes: 1)
        let component = Manifest.Component(name: "gitea", status: .success, objects: [object])
        let manifest = Manifest(id: "20250101T020000Z", encryption: .init(type: "age", recipients: []), components: [component])
        let top = Self.properties(Self.schema)
        #expect(!top.isEmpty, "backup/manifest.schema.json was not read")
        #expect(Self.fields(of: manifest).isSubset(of: top), "\(Self.fields(of: manifest).subtracting(top))")
        let componentFields = Self.fields(of: component)
        #expect(componentFields.isSubset(of: Self.properties(Self.definitions["component"])), "\(componentFields)")
        #expect(Self.fields(of: object).isSubset(of: Self.properties(Self.definitions["object"])))
        let encryption = (Self.schema["properties"] as? [String: Any])?["encryption"] as? [String: Any]
        #expect(Self.fields(of: try #require(manifest.encryption)) == Self.properties(encryption))
    }

    @Test func statusValuesAreTheSchemasOwn() {
        let componentStatus = (Self.definitions["component"]?["properties"] as? [String: Any])?["status"] as? [String: Any]
        let runStatus = (Self.schema["properties"] as? [String: Any])?["status"] as? [String: Any]
        #expect(Set((componentStatus?["enum"] as? [String]) ?? []) == Set(["success", "failure", "skipped"].compactMap { Manifest.ComponentStatus(rawValue: $0)?.rawValue }))
        #expect(Set((runStatus?["enum"] as? [String]) ?? []) == Set(["success", "partial", "failure"].compactMap { RunStatus(rawValue: $0)?.rawValue }))
        #expect((componentStatus?["enum"] as? [String])?.allSatisfy { Manifest.ComponentStatus(rawValue: $0) != nil } == true)
        #expect((runStatus?["enum"] as? [String])?.allSatisfy { RunStatus(rawValue: $0) != nil } == true)
    }
}
