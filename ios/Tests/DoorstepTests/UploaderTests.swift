import Doorstep
import DoorstepFFI
import Foundation
import XCTest

struct NoRoute: Error {}

/// The upload loop's failure paths, mirroring the Kotlin UploaderTest: network errors back off and
/// lose nothing; an answer lost on the way is recovered by sending the same batch again.
final class UploaderTests: XCTestCase {
    func testANetworkFailureBacksOffAndLosesNothing() async throws {
        let day = try Day()
        let d = try await day.enrolledDevice()
        for i in 0..<3 { _ = try await d.recordFailure(scan("BC\(i * 3)"), reason: .noAccess) }
        let offline = try await Uploader(doorstep: d, post: { _ in throw NoRoute() }).drain()
        guard case .retryLater(let after) = offline else { return XCTFail("\(offline)") }
        XCTAssertTrue((0...5).contains(after), "first retry within 5 s, got \(after)")
        var status = try await d.status()
        XCTAssertEqual(status.pendingReceipts, 3)
        XCTAssertEqual(status.uploadFailures, 1)

        // While backing off, the uploader waits instead of hammering dispatch.
        if let batch = try await d.nextBatch(), batch.retryAfter > 0 {
            let waiting = try await Uploader(doorstep: d, post: day.post).drain()
            guard case .retryLater = waiting else { return XCTFail("\(waiting)") }
            day.clock.advance(minutes: 1)
        }
        let done = try await Uploader(doorstep: d, post: day.post).drain()
        XCTAssertEqual(done, .done(acknowledged: 3, flagged: 0))
        status = try await d.status()
        XCTAssertEqual(status.pendingReceipts, 0)
        XCTAssertEqual(status.uploadFailures, 0)
        XCTAssertEqual(try day.dispatch.verifiedChainLength(), 3)
    }

    func testAnAnswerLostOnTheWayIsRecoveredBySendingTheSameBatchAgain() async throws {
        let day = try Day()
        let d = try await day.enrolledDevice()
        _ = try await d.recordFailure(scan("BC0"), reason: .noAccess)
        // Dispatch receives and stores the batch, but the answer never reaches the phone.
        let post = day.post
        let lost = try await Uploader(doorstep: d, post: { body in _ = try await post(body); throw NoRoute() }).drain()
        guard case .retryLater = lost else { return XCTFail("\(lost)") }
        day.clock.advance(minutes: 1)
        let again = try await d.nextBatch()
        XCTAssertEqual(again?.resend, true)
        let verdict = try day.dispatch.verifyBatch(body: again!.bytes, now: day.clock.now)
        XCTAssertEqual(verdict.duplicates, 1)
        let removed = try await d.applyAck(verdict.signedAck).removed
        XCTAssertEqual(removed, 1)
        XCTAssertEqual(try day.dispatch.verifiedChainLength(), 1)
    }

    func testACancelledUploadGoesOnCancellingAndRecordsNoFailure() async throws {
        let day = try Day()
        let d = try await day.enrolledDevice()
        _ = try await d.recordFailure(scan("BC0"), reason: .noAccess)
        do {
            _ = try await Uploader(doorstep: d, post: { _ in throw CancellationError() }).drain()
            XCTFail("cancellation was swallowed")
        } catch is CancellationError {}
        let status = try await d.status()
        XCTAssertEqual(status.uploadFailures, 0, "cancellation is not a network failure")
        XCTAssertEqual(status.pendingReceipts, 1)
    }
}
