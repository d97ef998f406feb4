import DoorstepFFI
import Foundation

/// What one `Uploader.drain()` achieved.
public enum UploadOutcome: Sendable, Equatable {
    /// The outbox is empty: every receipt is acknowledged by dispatch.
    case done(acknowledged: Int, flagged: Int)
    /// Something failed; try again after this many seconds (exponential backoff with full jitter).
    case retryLater(after: TimeInterval)
    /// Dispatch refused receipts; they stay on the device. Escalate to support.
    case stuck(rejectedSeqs: [UInt64])
}

/// Drains the outbox through `post`, the app's HTTP call (URLSession, typically from a
/// BGProcessingTask): it sends a batch body to dispatch and returns dispatch's signed answer, or
/// throws. Receipts are forgotten only after the core has verified that answer.
public struct Uploader: Sendable {
    public let doorstep: Doorstep
    public let post: @Sendable (Data) async throws -> Data

    public init(doorstep: Doorstep, post: @escaping @Sendable (Data) async throws -> Data) {
        self.doorstep = doorstep
        self.post = post
    }

    public func drain(maxReceipts: UInt32 = 200, maxBytes: UInt32 = 512 * 1024) async throws -> UploadOutcome {
        var acknowledged = 0
        var flagged = 0
        while let batch = try await doorstep.nextBatch(maxReceipts: maxReceipts, maxBytes: maxBytes) {
            if batch.retryAfter > 0 { return .retryLater(after: batch.retryAfter) }
            let report: AckReport
            do {
                report = try await doorstep.applyAck(try await post(batch.bytes))
            } catch DoorstepError.AckRejected {
                return .retryLater(after: try await doorstep.recordUploadFailure("ack rejected").retryAfter)
            } catch let error as DoorstepError {
                throw error
            } catch let cancelled as CancellationError {
                // The task was cancelled (the background task expired): not a network failure, so
                // no backoff is recorded and cancellation goes on up.
                throw cancelled
            } catch {
                return .retryLater(after: try await doorstep.recordUploadFailure("\(type(of: error))").retryAfter)
            }
            acknowledged += Int(report.removed)
            flagged += report.flagged.count
            if !report.rejected.isEmpty && report.removed == 0 {
                return .stuck(rejectedSeqs: report.rejected.map(\.seq))
            }
        }
        return .done(acknowledged: acknowledged, flagged: flagged)
    }
}
