import DoorstepFFI
import Foundation

/// Wall time from `Date()`, and the system uptime as the monotonic reading.
public final class SystemClock: Clock {
    public init() {}

    public func wallTimeMs() throws -> Int64 {
        Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
    }

    public func monotonicMs() throws -> Int64 {
        Int64((ProcessInfo.processInfo.systemUptime * 1000).rounded(.down))
    }
}
