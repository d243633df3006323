import CJQ
import Foundation

public enum JQError: ExitCodedError {
    case compile(String)
    case input(String)
    case runtime(String)

    public var exitCode: Int32 {
        switch self {
        case .compile: return ExitStatus.usage
        case .input: return ExitStatus.ioError
        case .runtime: return ExitStatus.failure
        }
    }

    public var description: String {
        switch self {
        case .compile(let message): return "jq program does not compile: \(message)"
        case .input(let message): return "input is not valid JSON: \(message)"
        case .runtime(let message): return "jq program failed: \(message)"
        }
    }
}

/// A compiled jq program (libjq). Not thread-safe: one program per thread.
public final class JQProgram {
    private var state: OpaquePointer?
    private var messages: [String] = []

    /// Compiles `source`, binding each of `arguments` as a string variable (`$name`, like jq's `--arg`);
    /// throws `.compile` with jq's own message when it does not compile.
    public init(_ source: String, arguments: [String: String] = [:]) throws {
        guard let state = jq_init() else {
            throw JQError.compile("libjq could not start (out of memory)")
        }
        self.state = state
        let context = Unmanaged.passUnretained(self).toOpaque()
        jq_set_error_cb(state, { context, message in
            let program = Unmanaged<JQProgram>.fromOpaque(context!).takeUnretainedValue()
            program.messages.append(JQProgram.text(of: message))
        }, context)
        var bound = jv_object()
        for (name, value) in arguments.sorted(by: { $0.key < $1.key }) {
            bound = jv_object_set(bound, jv_string(name), jv_string(value))
        }
        guard jq_compile_args(state, source, bound) != 0 else {  // takes ownership of `bound`
            let message = messages.isEmpty ? "syntax error" : messages.joined(separator: "; ")
            throw JQError.compile(message)
        }
    }

    deinit {
        jq_teardown(&state)
    }

    /// Runs the program on one JSON text and returns each output as compact JSON with sorted keys.
    public func run(json: String) throws -> [String] {
        var outputs: [String] = []
        try run(json: json) { outputs.append($0) }
        return outputs
    }

    /// Runs the program on one JSON text, handing each output (compact JSON, sorted keys) to `emit`.
    public func run(json: String, emit: (String) throws -> Void) throws {
        let input = json.withCString { jv_parse_sized($0, Int32(strlen($0))) }
        guard jv_is_valid(input) != 0 else {
            throw JQError.input(Self.invalidMessage(input) ?? "unparseable")
        }
        messages.removeAll()
        jq_start(state, input, 0)  // jq_start takes ownership of input
        while true {
            let output = jq_next(state)
            if jv_is_valid(output) == 0 {
                if let message = Self.invalidMessage(output) {
                    throw JQError.runtime(message)
                }
                return
            }
            let dumped = jv_dump_string(output, Int32(JV_PRINT_SORTED.rawValue))  // consumes output
            let text = String(cString: jv_string_value(dumped))
            jv_free(dumped)
            try emit(text)
        }
    }

    /// The message of an invalid jv (consumes it), or nil when it carries none (the end of a stream).
    private static func invalidMessage(_ value: jv) -> String? {
        guard jv_invalid_has_msg(jv_copy(value)) != 0 else {
            jv_free(value)
            return nil
        }
        return text(of: jv_invalid_get_msg(value))
    }

    /// Text of a jv (consumed): strings as they are, anything else as JSON.
    private static func text(of value: jv) -> String {
        if jv_get_kind(value) == JV_KIND_STRING {
            let text = String(cString: jv_string_value(value))
            jv_free(value)
            return text
        }
        let dumped = jv_dump_string(value, 0)
        let text = String(cString: jv_string_value(dumped))
        jv_free(dumped)
        return text
    }
}
