import Doorstep
import DoorstepFFI
import XCTest

/// Bad input is a typed DoorstepError and changes nothing, mirroring the Kotlin ErrorsTest.
final class ErrorTests: XCTestCase {
    func testMalformedCodesSpendNoAttempt() async throws {
        let day = try Day()
        let d = try await day.enrolledDevice()
        for bad in ["", "12345", "1234567", "12a456"] {
            do {
                _ = try await d.verifyCode(bad, for: scan("BC0"))
                XCTFail("accepted \(bad)")
            } catch DoorstepError.CodeFormat {}
        }
        let attempts = try await d.parcel(id: "P0").attemptsUsed
        XCTAssertEqual(attempts, 0)
    }

    func testInvalidArguments() async throws {
        let day = try Day()
        let d = try await day.enrolledDevice()
        do { _ = try await d.verifyCode("123456", for: []); XCTFail() } catch DoorstepError.InvalidInput {}
        do { _ = try await d.recordFailure(scan("BC0"), reason: .other); XCTFail() } catch DoorstepError.InvalidInput {}
        do { _ = try await d.parcel(id: "nope"); XCTFail() } catch DoorstepError.UnknownParcel {}
        do {
            _ = try await d.reverseDelivery(parcelId: "P0", reason: .damagedNotDelivered)
            XCTFail()
        } catch DoorstepError.NotAllowed {}
        let pending = try await d.status().pendingReceipts
        XCTAssertEqual(pending, 0)
    }

    func testForgedManifestTokenAndAckAreRejected() async throws {
        let day = try Day()
        let d = try await day.enrolledDevice()
        var manifest = try day.dispatch.fullManifest(routeId: "R1", deliveryDate: "2026-11-26", issuedAt: day.clock.now)
        manifest[manifest.count / 2] ^= 1
        do { _ = try await d.applyManifest(manifest); XCTFail() } catch DoorstepError.ManifestRejected {}
        do { _ = try await d.verifyQrToken("DSQ1.x.y.z", for: scan("BC0")); XCTFail() } catch DoorstepError.QrTokenRejected {}

        _ = try await d.recordFailure(scan("BC0"), reason: .recipientUnavailable)
        let batch = try await d.nextBatch()!
        var ack = try day.dispatch.verifyBatch(body: batch.bytes, now: day.clock.now).signedAck
        ack[ack.count / 3] ^= 1
        do { _ = try await d.applyAck(ack); XCTFail() } catch DoorstepError.AckRejected {}
        let pending = try await d.status().pendingReceipts
        XCTAssertEqual(pending, 1, "a refused ack deletes nothing")
    }

    func testAnUnenrolledDeviceSaysSo() async throws {
        let day = try Day()
        let d = try await day.openDevice()
        let enrolled = try await d.isEnrolled()
        XCTAssertFalse(enrolled)
        do { _ = try await d.verifyCode("123456", for: scan("BC0")); XCTFail() } catch DoorstepError.NotEnrolled {}
        do { try await d.completeEnrolment(Data("not json".utf8)); XCTFail() } catch DoorstepError.EnrolmentRejected {}
    }

    func testUnusableDatabaseIsRefusedAndCanBeQuarantined() async throws {
        let day = try Day()
        try Data(repeating: 0x5A, count: 8192).write(to: URL(fileURLWithPath: day.dbPath))
        do { _ = try await day.openDevice(); XCTFail() } catch DoorstepError.DatabaseUnusable {}
        let moved = try quarantineDatabase(path: day.dbPath)
        XCTAssertTrue(FileManager.default.fileExists(atPath: moved))
        let fresh = try await day.openDevice()
        let enrolled = try await fresh.isEnrolled()
        XCTAssertFalse(enrolled)
    }

    func testLockedVaultIsReported() async throws {
        let day = try Day()
        _ = try await day.enrolledDevice()
        day.vault.locked = true
        do { _ = try await day.openDevice(); XCTFail() } catch DoorstepError.KeyVaultUnavailable {}
    }
}
