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
        let accepted = try await withThrowingTaskGroup(of: Bool.self) { group in
            for i in codeParcels {
                group.addTask { _ = try await d.verifyCode(wrong(codes["P\(i)"]!), for: scan("BC\(i)")); return false }
                group.addTask {
                    if case .accepted = try await d.verifyCode(codes["P\(i)"]!, for: scan("BC\(i)")) { return true }
                    return false
                }
                group.addTask { _ = try await d.status(); return false }
            }
            var n = 0
            for try await ok in group where ok { n += 1 }
            return n
        }
        XCTAssertEqual(accepted, codeParcels.count)
        _ = try await Uploader(doorstep: d, post: day.post).drain()
        XCTAssertEqual(try day.dispatch.verifiedChainLength(), UInt64(codeParcels.count))
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
