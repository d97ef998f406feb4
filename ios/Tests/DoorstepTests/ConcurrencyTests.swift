import Doorstep
import DoorstepFFI
import XCTest

/// One device object used from many tasks at once; persistence across reopening.
final class ConcurrencyTests: XCTestCase {
    func testManyTasksAtOnce() async throws {
        let day = try Day(count: 60)
        let d = try await day.enrolledDevice()
        let codeParcels = (0..<60).filter { $0 % 3 != 2 }
        let codes = day.codes
        // Each task reports (hand-overs, wrong codes answered) of its call.
        let (accepted, wrongCodes) = try await withThrowingTaskGroup(of: (Int, Int).self) { group in
            for i in codeParcels {
                group.addTask {
                    if case .wrongCode = try await d.verifyCode(wrong(codes["P\(i)"]!), for: scan("BC\(i)")) { return (0, 1) }
                    return (0, 0)
                }
                group.addTask {
                    if case .accepted = try await d.verifyCode(codes["P\(i)"]!, for: scan("BC\(i)")) { return (1, 0) }
                    return (0, 0)
                }
                group.addTask { _ = try await d.status(); return (0, 0) }
            }
            var totals = (0, 0)
            for try await (a, w) in group { totals = (totals.0 + a, totals.1 + w) }
            return totals
        }
        XCTAssertEqual(accepted, codeParcels.count)
        _ = try await Uploader(doorstep: d, post: day.post).drain()
        // One receipt per hand-over, and one per wrong code that came before its parcel's right one.
        XCTAssertEqual(try day.dispatch.verifiedChainLength(), UInt64(codeParcels.count + wrongCodes))
    }

    /// Kotlin closes a device explicitly and a later call fails cleanly. Swift has no such state:
    /// the object (and its database connection) goes with its last reference, which this checks,
    /// so no call can reach a released device.
    func testAReleasedDeviceIsGoneAndItsDatabaseOpensAgain() async throws {
        let day = try Day()
        weak var released: Doorstep?
        do {
            let d = try await day.enrolledDevice()
            _ = try await d.verifyCode(day.codes["P0"]!, for: scan("BC0"))
            released = d
        }
        XCTAssertNil(released, "no queue or task keeps the device alive")
        let reopened = try await day.openDevice()
        let pending = try await reopened.status().pendingReceipts
        XCTAssertEqual(pending, 1)
    }

    func testAReceiptSurvivesReopening() async throws {
        let day = try Day()
        do {
            let d = try await day.enrolledDevice()
            _ = try await d.verifyCode(day.codes["P0"]!, for: scan("BC0"))
        }
        let reopened = try await day.openDevice()
        let pending = try await reopened.status().pendingReceipts
        XCTAssertEqual(pending, 1)
        let state = try await reopened.parcel(id: "P0").state
        XCTAssertEqual(state, .delivered)
    }
}
