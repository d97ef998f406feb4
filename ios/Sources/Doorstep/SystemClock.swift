import DoorstepFFI
import Foundation

/// Wall time from `Date()`, and the system uptime as the monotonic reading.
public final class SystemClock: Clock {
    public init() {}

    public func wallTime() throws -> Date {
        Date()
    }

    public func monotonic() throws -> TimeInterval {
        ProcessInfo.processInfo.systemUptime
    }
}
