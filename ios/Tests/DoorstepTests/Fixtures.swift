import Doorstep
import DoorstepFFI
import Foundation
import XCTest

/// A Swift KeyVault for tests: XOR with a key stream and a tag, so sealed bytes never equal the
/// secret (the Keychain vault needs Apple platforms).
final class TestVault: KeyVault, @unchecked Sendable {
    private let lock = NSLock()
    private var _locked = false
    var locked: Bool {
        get { lock.sync { _locked } }
        set { lock.sync { _locked = newValue } }
    }

    func seal(plaintext: Data) throws -> Data {
        if locked { throw HostError.Failed(reason: "vault locked") }
        return Data("sealed:".utf8) + Data(plaintext.enumerated().map { $1 ^ UInt8(truncatingIfNeeded: $0 &* 31 &+ 0xA5) })
    }

    func unseal(sealed: Data) throws -> Data {
        if locked { throw HostError.Failed(reason: "vault locked") }
        let prefix = Data("sealed:".utf8)
        guard sealed.starts(with: prefix) else { throw HostError.Failed(reason: "not sealed here") }
        return Data(sealed.dropFirst(prefix.count).enumerated().map { $1 ^ UInt8(truncatingIfNeeded: $0 &* 31 &+ 0xA5) })
    }
}

/// A Swift Clock the test moves.
final class TestClock: Clock, @unchecked Sendable {
    private let lock = NSLock()
    private var wall: Int64
    private var mono: Int64 = 1_000

    init(_ start: Date) { wall = Int64(start.timeIntervalSince1970 * 1000) }

    func advance(minutes: Int64) {
        lock.sync {
            wall += minutes * 60_000
            mono += minutes * 60_000
        }
    }

    var now: Date { lock.sync { Date(timeIntervalSince1970: Double(wall) / 1000) } }

    func wallTime() throws -> Date { lock.sync { Date(timeIntervalSince1970: Double(wall) / 1000) } }
    func monotonic() throws -> TimeInterval { lock.sync { Double(mono) / 1000 } }
}

final class CollectingLogger: Logger, @unchecked Sendable {
    private let lock = NSLock()
    private var _lines: [String] = []
    var lines: [String] { lock.sync { _lines } }
    func log(level: LogLevel, message: String) throws { lock.sync { _lines.append("\(level) \(message)") } }
}

let dayStart = Date(timeIntervalSince1970: 1_795_651_200) // 2026-11-26T00:00:00Z
let morning = dayStart.addingTimeInterval(8 * 3600)
let endOfDay = dayStart.addingTimeInterval(23 * 3600)

func scan(_ barcode: String) -> [ScannedParcel] { [ScannedParcel(barcode: barcode, identified: .scanned)] }

/// A wrong 6-digit code for `right` (differs in every position).
func wrong(_ right: String) -> String {
    String(right.map { Character(String((Int(String($0))! + 5) % 10)) })
}

/// A dispatch with `count` parcels (P0...): every third needs no code, P1 has the delegate "Anna".
final class Day {
    let dispatch: TestDispatch
    let clock = TestClock(morning)
    let vault = TestVault()
    let logger = CollectingLogger()
    var codes: [String: String] = [:]
    var delegateCodes: [String: String] = [:]
    let dbPath: String

    init(count: Int = 12) throws {
        dispatch = try TestDispatch()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("doorstep-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        dbPath = dir.appendingPathComponent("device.db").path
        for i in 0..<count {
            let issued = try dispatch.addParcel(
                parcelId: "P\(i)", barcode: "BC\(i)", stopId: "S\(i / 2)", stopSequence: UInt32(i / 2 + 1),
                needsCode: i % 3 != 2, delegates: i == 1 ? ["Anna"] : [],
                notBefore: dayStart, notAfter: endOfDay
            )
            if let code = issued.customer { codes["P\(i)"] = code }
            for d in issued.delegates { delegateCodes["P\(i)/\(d.label)"] = d.code }
        }
    }

    func openDevice() async throws -> Doorstep {
        try await Doorstep.open(path: dbPath, vault: vault, clock: clock, logger: logger)
    }

    func enrolledDevice() async throws -> Doorstep {
        let d = try await openDevice()
        try await d.completeEnrolment(try dispatch.enrol(request: try await d.enrolmentRequest(), deviceId: "swift-1", now: clock.now))
        _ = try await d.applyManifest(try dispatch.fullManifest(routeId: "R1", deliveryDate: "2026-11-26", issuedAt: clock.now))
        return d
    }

    var post: @Sendable (Data) async throws -> Data {
        let dispatch = self.dispatch
        let clock = self.clock
        return { body in try dispatch.verifyBatch(body: body, now: clock.now).signedAck }
    }
}

extension NSLock {
    /// `withLock` needs iOS 16 / macOS 13; the package supports iOS 15 / macOS 12.
    func sync<T>(_ body: () throws -> T) rethrows -> T {
        lock()
        defer { unlock() }
        return try body()
    }
}
