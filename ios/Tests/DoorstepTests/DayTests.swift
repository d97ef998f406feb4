import Doorstep
import DoorstepFFI
import XCTest

/// A whole day through the Swift API, mirroring the Kotlin DayTest.
final class DayTests: XCTestCase {
    func testAFullDayReconciles() async throws {
        let day = try Day()
        let d = try await day.enrolledDevice()
        let enrolled = try await d.isEnrolled()
        XCTAssertTrue(enrolled)

        guard case let .accepted(holder, _, receipt) = try await d.verifyCode(day.codes["P0"]!, for: scan("BC0")) else {
            return XCTFail("right code refused")
        }
        XCTAssertEqual(holder, .customer)
        XCTAssertEqual(receipt.event, .delivered)

        let anna = day.delegateCodes["P1/Anna"]!
        guard case let .accepted(delegate, method, _) = try await d.verifyCode(anna, for: scan("BC1")) else {
            return XCTFail("delegate code refused")
        }
        XCTAssertEqual(delegate, .delegate("Anna"))
        XCTAssertEqual(method, .delegateCode)

        let noCode = try await d.verifyCode("123456", for: scan("BC2"))
        XCTAssertEqual(noCode, .noCodeNeeded)
        _ = try await d.deliverWithoutCode(scan("BC2"))

        let typo = try await d.verifyCode(wrong(day.codes["P3"]!), for: scan("BC3"))
        XCTAssertEqual(typo, .wrongCode(attemptsLeft: 4))
        guard case .accepted = try await d.verifyCode(day.codes["P3"]!, for: scan("BC3")) else { return XCTFail() }

        let token = try day.dispatch.qrToken(parcelId: "P4", holder: .customer, notBefore: day.clock.now, notAfter: endOfDay)
        guard case .accepted(_, .qrToken, _) = try await d.verifyQrToken(token, for: scan("BC4")) else { return XCTFail() }

        for _ in 0..<4 { _ = try await d.verifyCode(wrong(day.codes["P6"]!), for: scan("BC6")) }
        guard case let .locked(_, lockReceipt) = try await d.verifyCode(wrong(day.codes["P6"]!), for: scan("BC6")) else {
            return XCTFail("not locked")
        }
        XCTAssertEqual(lockReceipt?.event, .lockedOut)

        _ = try await d.recordFailure(scan("BC7"), reason: .recipientUnavailable)
        _ = try await d.recordFailure(scan("BC9"), reason: .refusedByRecipient)
        _ = try await d.recordFailure(scan("BC10"), reason: .other, note: "gate locked")

        let first = try await Uploader(doorstep: d, post: day.post).drain(maxReceipts: 3)
        guard case .done = first else { return XCTFail("upload: \(first)") }

        day.clock.advance(minutes: 16 * 60 + 30)
        guard case .expired = try await d.verifyCode(day.codes["P10"]!, for: scan("BC10")) else { return XCTFail() }
        let purge = try await d.purgeExpired()
        XCTAssertEqual(purge.expired, 7)
        _ = try await Uploader(doorstep: d, post: day.post).drain()

        let status = try await d.status()
        XCTAssertEqual(status.pendingReceipts, 0)
        XCTAssertEqual(status.parcels.delivered, 5)
        // 5 deliveries + 5 wrong codes + 1 lock-out + 3 failures + 7 expiries.
        XCTAssertEqual(try day.dispatch.verifiedChainLength(), 21)
        let logs = day.logger.lines.joined(separator: "\n")
        for code in Array(day.codes.values) + Array(day.delegateCodes.values) {
            XCTAssertFalse(logs.contains(code), "a code is in the logs")
        }
    }

    func testTomorrowsRouteLoadsBesideTodaysAndTodaysParcelsStayDeliverable() async throws {
        let day = try Day(count: 3)
        let d = try await day.enrolledDevice()
        try day.dispatch.startRoute()
        let tomorrow = dayStart.addingTimeInterval(24 * 3600)
        let codes = try day.dispatch.addParcel(
            parcelId: "T0", barcode: "TBC0", stopId: "S9", stopSequence: 1, needsCode: true, delegates: [],
            notBefore: tomorrow, notAfter: tomorrow.addingTimeInterval(23 * 3600)
        )
        let report = try await d.applyManifest(
            try day.dispatch.fullManifest(routeId: "R1", deliveryDate: "2026-11-27", issuedAt: day.clock.now))
        XCTAssertEqual(report.removed, 0)

        let status = try await d.status()
        XCTAssertEqual(status.days.map { $0.deliveryDate }, ["2026-11-26", "2026-11-27"])
        XCTAssertEqual(status.deliveryDate, "2026-11-26")
        let t0 = try await d.parcel(id: "T0")
        XCTAssertEqual(t0.deliveryDate, "2026-11-27")
        guard case .accepted = try await d.verifyCode(day.codes["P0"]!, for: scan("BC0")) else {
            return XCTFail("today's parcel refused after tomorrow's route loaded")
        }
        guard case .notYetValid = try await d.verifyCode(codes.customer!, for: scan("TBC0")) else {
            return XCTFail("tomorrow's parcel not refused as not yet valid")
        }
    }
}
