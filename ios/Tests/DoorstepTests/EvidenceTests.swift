import Doorstep
import DoorstepFFI
import XCTest

/// A parcel's evidence file verifies offline with only dispatch's published keys, mirroring the
/// Kotlin EvidenceTest.
final class EvidenceTests: XCTestCase {
    func testAParcelsEvidenceVerifiesOfflineAndOneChangedByteIsRefused() async throws {
        let day = try Day()
        let d = try await day.enrolledDevice()
        _ = try await d.verifyCode(wrong(day.codes["P0"]!), for: scan("BC0"))
        _ = try await d.verifyCode(day.codes["P1"]!, for: scan("BC1"))
        guard case .accepted = try await d.verifyCode(day.codes["P0"]!, for: scan("BC0")) else {
            return XCTFail("right code refused")
        }
        _ = try await Uploader(doorstep: d, post: day.post).drain()

        let file = try day.dispatch.evidence(parcelId: "P0", now: day.clock.now)
        let keys = try day.dispatch.publicKeys()
        let report = try verifyEvidence(evidence: file, dispatchKeys: keys)
        XCTAssertEqual(report.parcelId, "P0")
        XCTAssertEqual(report.events.map { $0.event }, [.wrongCode, .delivered])
        XCTAssertEqual(report.events[1].status, .accepted)

        var changed = file
        changed[changed.count / 2] ^= 1
        do {
            _ = try verifyEvidence(evidence: changed, dispatchKeys: keys)
            XCTFail("a changed file verified")
        } catch DoorstepError.EvidenceRejected {}
    }
}
