import Foundation

/// The process environment, injected so that logic never reads `ProcessInfo` itself and tests pass their own.
public struct Environment: Sendable {
    public var values: [String: String]

    public init(_ values: [String: String]) {
        self.values = values
    }

    /// The real environment of this process; call only from the command layer.
    public static var process: Environment {
        Environment(ProcessInfo.processInfo.environment)
    }

    public subscript(name: String) -> String? {
        values[name]
    }

    /// The value of the first variable that is set and not empty.
    public func first(_ names: String...) -> String? {
        for name in names {
            if let value = values[name], !value.isEmpty {
                return value
            }
        }
        return nil
    }
}
