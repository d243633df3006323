import Testing

@testable import BackupKit

@Suite struct JQTests {
    @Test func runsAProgramWithSortedCompactOutput() throws {
        let program = try JQProgram(".items[] | {name: .metadata.name, kind: \"Secret\"}")
        let outputs = try program.run(json: #"{"items":[{"metadata":{"name":"a"}},{"metadata":{"name":"b"}}]}"#)
        #expect(outputs == [#"{"kind":"Secret","name":"a"}"#, #"{"kind":"Secret","name":"b"}"#])
    }

    @Test func deletesPaths() throws {
        let program = try JQProgram("del(.metadata.uid, .status)")
        let outputs = try program.run(json: #"{"metadata":{"uid":"x","name":"n"},"status":{},"spec":1}"#)
        #expect(outputs == [#"{"metadata":{"name":"n"},"spec":1}"#])
    }

    @Test func aProgramThatDoesNotCompileCarriesJqsMessage() {
        #expect {
            _ = try JQProgram(".items[ | bad")
        } throws: { error in
            guard let error = error as? JQError, case .compile(let message) = error else { return false }
            return error.exitCode == ExitStatus.usage && message.contains("syntax error")
        }
    }

    @Test func invalidInputIsAnInputError() throws {
        let program = try JQProgram(".")
        #expect(throws: JQError.self) { try program.run(json: "{not json") }
    }

    @Test func runtimeErrorsAreReported() throws {
        let program = try JQProgram(#"error("boom")"#)
        #expect {
            _ = try program.run(json: "{}")
        } throws: { error in
            guard case .runtime(let message) = error as? JQError else { return false }
            return message.contains("boom")
        }
    }

    @Test func aProgramRunsOnManyInputs() throws {
        let program = try JQProgram(".n + 1")
        for n in 0..<100 {
            #expect(try program.run(json: #"{"n":\#(n)}"#) == ["\(n + 1)"])
        }
    }

    @Test func emptyOutputIsNoError() throws {
        let program = try JQProgram("empty")
        #expect(try program.run(json: "{}").isEmpty)
    }

    @Test func namedArgumentsAreStringVariables() throws {
        let program = try JQProgram("{kind: $kind} + .", arguments: ["kind": "Secret", "unused": "x"])
        #expect(try program.run(json: #"{"a":1}"#) == [#"{"a":1,"kind":"Secret"}"#])
        #expect(throws: JQError.self) { _ = try JQProgram("$missing") }
    }
}
