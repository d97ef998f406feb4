import Doorstep
import DoorstepFFI
import XCTest

/// A return collected with its pickup code, mirroring the Kotlin PickupTest.
final class PickupTests: XCTestCase {
    func testAReturnIsCollectedWithItsPickupCodeAndTheReceiptSaysCollected() async throws {
        let day = try Day()
        try day.dispatch.setTask(parcelId: "P0", task: .pickup)
        let d = try await day.enrolledDevice()
        let parcel = try await d.parcel(id: "P0")
        XCTAssertEqual(parcel.task, .pickup)
        guard case .wrongCode(let left) = try await d.verifyCode(wrong(day.codes["P0"]!), for: scan("BC0")) else {
            return XCTFail("a wrong pickup code was not counted")
        }
        XCTAssertEqual(left, 4)
        guard case .accepted(_, _, let receipt) = try await d.verifyCode(day.codes["P0"]!, for: scan("BC0")) else {
            return XCTFail("the pickup code was refused")
        }
        XCTAssertEqual(receipt.event, .collected)
        let state = try await d.parcel(id: "P0").state
        XCTAssertEqual(state, .collected)
        let collected = try await d.status().parcels.collected
        XCTAssertEqual(collected, 1)
        _ = try await Uploader(doorstep: d, post: day.post).drain()
        let pending = try await d.status().pendingReceipts
        XCTAssertEqual(pending, 0)
    }
}
