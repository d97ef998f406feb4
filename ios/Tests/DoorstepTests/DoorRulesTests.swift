import Doorstep
import DoorstepFFI
import XCTest

/// A parcel's rules at the door from the app's side, mirroring the Kotlin DoorRulesTest: an
/// addressee-only parcel needs the kind of ID checked, an open-box parcel the customer's
/// inspection; without them the call throws DoorCheckMissing and nothing is counted.
final class DoorRulesTests: XCTestCase {
    func testAnAddresseeOnlyParcelNeedsAnIdCheckAndAnOpenBoxParcelTheInspection() async throws {
        let day = try Day()
        try day.dispatch.setDoorRules(parcelId: "P0", rules: DoorRules(addresseeOnly: true, openBox: false))
        try day.dispatch.setDoorRules(parcelId: "P2", rules: DoorRules(addresseeOnly: false, openBox: true))
        try day.dispatch.setDoorRules(parcelId: "P5", rules: DoorRules(addresseeOnly: false, openBox: true))
        let d = try await day.enrolledDevice()
        let p0 = try await d.parcel(id: "P0")
        XCTAssertTrue(p0.rules.addresseeOnly)
        let code = day.codes["P0"]!
        do {
            _ = try await d.verifyCode(code, for: scan("BC0"))
            XCTFail("handed over without an ID check")
        } catch DoorstepError.DoorCheckMissing(let parcel, _) {
            XCTAssertEqual(parcel, "P0")
        }
        let attempts = try await d.parcel(id: "P0").attemptsUsed
        XCTAssertEqual(attempts, 0)

        let withId = [ScannedParcel(barcode: "BC0", identified: .scanned, idChecked: .passport)]
        guard case .accepted = try await d.verifyCode(code, for: withId) else {
            return XCTFail("right code with an ID check refused")
        }
        do {
            _ = try await d.deliverWithoutCode(scan("BC2"))
            XCTFail("an open-box parcel handed over without its inspection")
        } catch DoorstepError.DoorCheckMissing {}
        let inspected = [ScannedParcel(
            barcode: "BC2", identified: .scanned, inspection: .acceptedWithReservation(note: "corner of the box dented")
        )]
        guard case .accepted = try await d.deliverWithoutCode(inspected) else {
            return XCTFail("inspected open-box parcel refused")
        }
        _ = try await d.recordFailure(scan("BC5"), reason: .refusedOnInspection)
        _ = try await Uploader(doorstep: d, post: day.post).drain()
        let pending = try await d.status().pendingReceipts
        XCTAssertEqual(pending, 0)
    }
}
