import DoorstepFFI
import Foundation

/// The async face of `DoorstepDevice`: every call, opening included, runs on this object's own
/// queue, so a durable commit never blocks the main actor or a cooperative-pool thread. Errors are
/// `DoorstepError` cases that say what to do (for example `.CodeFormat`: ask again, no attempt was
/// counted).
///
/// Safe to share between tasks; the core serialises calls on its database connection. The
/// database closes when the last reference to this object goes.
public final class Doorstep: Sendable {
    private let device: DoorstepDevice
    private let queue: DispatchQueue

    /// Wraps a device the app opened itself (call `excludeFromBackup(path:)` for its file).
    public convenience init(device: DoorstepDevice, qos: DispatchQoS = .userInitiated) {
        self.init(device: device, queue: Doorstep.makeQueue(qos))
    }

    private init(device: DoorstepDevice, queue: DispatchQueue) {
        self.device = device
        self.queue = queue
    }

    private static func makeQueue(_ qos: DispatchQoS) -> DispatchQueue {
        DispatchQueue(label: "app.doorstep.core", qos: qos, attributes: .concurrent)
    }

    /// Opens (or creates) the device database at `path` off the calling thread, and excludes it
    /// (with its WAL and shared-memory files) from iCloud and computer backups.
    public static func open(
        path: String,
        vault: KeyVault,
        clock: Clock = SystemClock(),
        logger: Logger? = nil,
        qos: DispatchQoS = .userInitiated
    ) async throws -> Doorstep {
        let queue = makeQueue(qos)
        let device = try await onQueue(queue) {
            let device = try DoorstepDevice.open(path: path, vault: vault, clock: clock, logger: logger)
            try excludeFromBackup(path: path)
            return device
        }
        return Doorstep(device: device, queue: queue)
    }

    /// A restored old copy of the database would bring back attempts already spent at the door and
    /// receipts dispatch already acknowledged, so it never goes into a backup (docs/security.md,
    /// "Backups"). Only Apple platforms have backups; elsewhere this does nothing.
    public static func excludeFromBackup(path: String) throws {
        #if canImport(Darwin)
        for suffix in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: path + suffix) {
            var url = URL(fileURLWithPath: path + suffix)
            var values = URLResourceValues()
            values.isExcludedFromBackup = true
            try url.setResourceValues(values)
        }
        #endif
    }

    private static func onQueue<T: Sendable>(
        _ queue: DispatchQueue, _ body: @escaping @Sendable () throws -> T
    ) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: Result(catching: { try body() })) }
        }
    }

    private func run<T: Sendable>(_ body: @escaping @Sendable (DoorstepDevice) throws -> T) async throws -> T {
        let device = self.device
        return try await Doorstep.onQueue(queue) { try body(device) }
    }

    public func isEnrolled() async throws -> Bool { try await run { try $0.isEnrolled() } }
    public func enrolmentRequest() async throws -> Data { try await run { try $0.enrolmentRequest() } }
    public func completeEnrolment(_ bundle: Data) async throws { try await run { try $0.completeEnrolment(bundle: bundle) } }
    public func applyManifest(_ envelope: Data) async throws -> ApplyReport {
        try await run { try $0.applyManifest(envelope: envelope) }
    }

    public func parcel(id: String) async throws -> Parcel { try await run { try $0.parcel(parcelId: id) } }
    public func parcel(barcode: String) async throws -> Parcel { try await run { try $0.parcelByBarcode(barcode: barcode) } }
    public func parcels(stop: String) async throws -> [Parcel] { try await run { try $0.parcelsAtStop(stopId: stop) } }
    public func parcels() async throws -> [Parcel] { try await run { try $0.parcels() } }

    public func verifyCode(_ code: String, for scanned: [ScannedParcel], at location: Location? = nil) async throws -> HandoverOutcome {
        try await run { try $0.verifyCode(scanned: scanned, code: code, location: location) }
    }

    public func verifyQrToken(_ token: String, for scanned: [ScannedParcel], at location: Location? = nil) async throws -> HandoverOutcome {
        try await run { try $0.verifyQrToken(scanned: scanned, token: token, location: location) }
    }

    public func deliverWithoutCode(_ scanned: [ScannedParcel], at location: Location? = nil) async throws -> HandoverOutcome {
        try await run { try $0.deliverWithoutCode(scanned: scanned, location: location) }
    }

    public func recordFailure(
        _ scanned: [ScannedParcel], reason: FailureReason, note: String? = nil, at location: Location? = nil
    ) async throws -> Receipt {
        try await run { try $0.recordFailure(scanned: scanned, reason: reason, note: note, location: location) }
    }

    public func reverseDelivery(
        parcelId: String, reason: FailureReason, note: String? = nil, at location: Location? = nil
    ) async throws -> Receipt {
        try await run { try $0.reverseDelivery(parcelId: parcelId, reason: reason, note: note, location: location) }
    }

    public func nextBatch(maxReceipts: UInt32 = 200, maxBytes: UInt32 = 512 * 1024) async throws -> UploadBatch? {
        try await run { try $0.nextBatch(maxReceipts: maxReceipts, maxBytes: maxBytes) }
    }

    public func applyAck(_ signedAck: Data) async throws -> AckReport { try await run { try $0.applyAck(signedAck: signedAck) } }

    /// The `Device-Signature` header for a request to dispatch (method, path with query, body).
    public func signRequest(method: String, path: String, body: Data) async throws -> String {
        try await run { try $0.signRequest(method: method, path: path, body: body) }
    }
    public func recordUploadFailure(_ error: String) async throws -> RetryAdvice {
        try await run { try $0.recordUploadFailure(error: error) }
    }
    public func purgeExpired() async throws -> PurgeReport { try await run { try $0.purgeExpired() } }
    public func status() async throws -> Status { try await run { try $0.status() } }
}
