import ArgumentParser
import Foundation

/// The exit statuses every helper uses (sysexits.h), so shell callers can branch on them.
public enum ExitStatus {
    public static let ok: Int32 = 0
    public static let failure: Int32 = 1
    /// Bad command line or configuration.
    public static let usage: Int32 = 64
    /// An input file, object or bucket does not exist.
    public static let noInput: Int32 = 66
    /// A service stayed unavailable after retries.
    public static let unavailable: Int32 = 69
    /// A local read or write failed, or data did not match its checksum.
    public static let ioError: Int32 = 74
    /// A temporary failure; running again may succeed.
    public static let tempFailure: Int32 = 75
    /// Permission or signature refused.
    public static let noPermission: Int32 = 77
}

/// An error that knows which exit status it deserves and reads as one human line.
public protocol ExitCodedError: Error, CustomStringConvertible {
    var exitCode: Int32 { get }
}

/// Runs a command body and turns any error into one line on stderr plus its exit status.
/// Only the command layer calls this; libraries just throw.
public func runReportingErrors(tool: String, _ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as ExitCode {
        throw error
    } catch let error as CleanExit {
        throw error
    } catch let error as ValidationError {
        throw error
    } catch let error as ExitCodedError {
        Log.standardError.write("\(tool): \(error.description)\n")
        throw ExitCode(error.exitCode)
    } catch {
        Log.standardError.write("\(tool): \(error)\n")
        throw ExitCode(ExitStatus.failure)
    }
}
