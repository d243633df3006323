import Foundation

/// A resource type to list, from kubectl's `resource.version.group` form (`kdlprojects.v1.project.konstellation.io`)
/// or a plain core name (`secrets`, which is `secrets` in the core group, version `v1`).
public struct ResourceRef: Hashable, Sendable, CustomStringConvertible {
    /// The lower-case plural the API uses in URLs.
    public var plural: String
    public var version: String
    /// The API group; empty for the core group.
    public var group: String

    public init(plural: String, version: String = "v1", group: String = "") {
        self.plural = plural
        self.version = version
        self.group = group
    }

    /// Parses a RESOURCE argument. A plain name is a core resource; `plural.version` is a core resource at that
    /// version; `plural.version.group` is a resource of an API group (the group has at least one dot).
    public init(parsing text: String) throws {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        let example = "give PLURAL for a core resource (secrets) or PLURAL.VERSION.GROUP (kdlprojects.v1.project.konstellation.io)"
        guard let plural = parts.first, Self.isLabel(plural) else {
            throw KubeExportError.usage("resource \"\(text)\" is not a resource name: \(example)")
        }
        switch parts.count {
        case 1:
            self.init(plural: plural)
        case 2 where Self.isVersion(parts[1]):
            self.init(plural: plural, version: parts[1])
        case 3...:
            let group = parts[2...].joined(separator: ".")
            guard Self.isVersion(parts[1]), parts[2...].allSatisfy(Self.isLabel) else {
                throw KubeExportError.usage("resource \"\(text)\" is not PLURAL.VERSION.GROUP: \(example)")
            }
            self.init(plural: plural, version: parts[1], group: group)
        default:
            throw KubeExportError.usage("resource \"\(text)\" has no version: \(example)")
        }
    }

    /// `secrets` for core v1, else `plural.version.group` (the form a user gives and the summary reports).
    public var description: String {
        if group.isEmpty {
            return version == "v1" ? plural : "\(plural).\(version)"
        }
        return "\(plural).\(version).\(group)"
    }

    /// The collection's path in one namespace, e.g. `/api/v1/namespaces/kdl/secrets`.
    public func listPath(namespace: String) -> String {
        let base = group.isEmpty ? "/api/\(version)" : "/apis/\(group)/\(version)"
        return "\(base)/namespaces/\(namespace)/\(plural)"
    }

    /// A DNS label (RFC 1123): what plurals, group parts and namespaces are made of.
    static func isLabel(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty, bytes.count <= 63, bytes.first != UInt8(ascii: "-"), bytes.last != UInt8(ascii: "-") else {
            return false
        }
        return bytes.allSatisfy { (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || $0 == UInt8(ascii: "-") }
    }

    /// `v1`, `v1alpha1`, `v2beta3`: the shape of Kubernetes API versions.
    static func isVersion(_ text: String) -> Bool {
        text.range(of: #"^v[1-9][0-9]*((alpha|beta)[1-9][0-9]*)?$"#, options: .regularExpression) != nil
    }
}
