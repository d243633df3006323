import Foundation

/// Sleeps between attempts; injected so tests do not wait.
public protocol Sleeper: Sendable {
    func sleep(seconds: Double)
}

public struct ThreadSleeper: Sleeper {
    public init() {}
    public func sleep(seconds: Double) {
        guard seconds > 0 else { return }
        Thread.sleep(forTimeInterval: seconds)
    }
}

/// Exponential backoff with full jitter (AWS's recommended scheme): attempt n waits
/// a random time in [0, min(cap, base * 2^n)].
public struct RetryPolicy: Sendable {
    public var attempts: Int
    public var baseDelay: Double
    public var maxDelay: Double

    public init(retries: Int, baseDelay: Double = 0.2, maxDelay: Double = 20) {
        self.attempts = max(1, retries + 1)
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
    }

    public func delay(afterAttempt attempt: Int) -> Double {
        let ceiling = min(maxDelay, baseDelay * pow(2, Double(attempt)))
        return Double.random(in: 0...ceiling)
    }

    /// Runs `body` until it succeeds, `isRetryable` says no, or attempts run out; rethrows the last error.
    public func run<T>(
        sleeper: Sleeper = ThreadSleeper(),
        isRetryable: (Error) -> Bool,
        onRetry: (Int, Error) -> Void = { _, _ in },
        _ body: (Int) throws -> T
    ) throws -> T {
        var attempt = 0
        while true {
            do {
                return try body(attempt)
            } catch {
                attempt += 1
                guard attempt < attempts, isRetryable(error) else { throw error }
                onRetry(attempt, error)
                sleeper.sleep(seconds: delay(afterAttempt: attempt - 1))
            }
        }
    }
}
