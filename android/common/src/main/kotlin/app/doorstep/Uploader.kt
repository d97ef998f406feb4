package app.doorstep

import app.doorstep.ffi.DoorstepException
import java.time.Duration
import kotlin.coroutines.cancellation.CancellationException

/** What one [Uploader.drain] achieved. */
sealed interface UploadOutcome {
    /** The outbox is empty: every receipt is acknowledged by dispatch. */
    data class Done(val receiptsAcknowledged: Int, val flagged: Int) : UploadOutcome

    /**
     * Try again [after] this long (exponential backoff with full jitter): [cause] failed now, or is
     * null while the outbox is still backing off from an earlier failure.
     */
    data class RetryLater(val after: Duration, val cause: Throwable?) : UploadOutcome

    /** Dispatch refused receipts (tampering or a bug); they stay on the device. Escalate to support. */
    data class Stuck(val rejectedSeqs: List<ULong>) : UploadOutcome
}

/**
 * Drains the outbox through [post], the app's HTTP call (OkHttp, Ktor...): it sends a batch body to
 * dispatch, with the header `Device-Signature: doorstep.signRequest("POST", path, body)`, and
 * returns dispatch's signed answer, or throws. The core never owns a socket.
 *
 * Receipts are only forgotten after the core has verified dispatch's signed acknowledgement; a
 * batch interrupted by a crash or a lost answer is sent again and de-duplicated by dispatch.
 */
class Uploader(
    private val doorstep: Doorstep,
    private val post: suspend (body: ByteArray) -> ByteArray,
) {
    suspend fun drain(maxReceipts: UInt = 200u, maxBytes: UInt = 512u * 1024u): UploadOutcome {
        var acknowledged = 0
        var flagged = 0
        while (true) {
            val batch = doorstep.nextBatch(maxReceipts, maxBytes) ?: return UploadOutcome.Done(acknowledged, flagged)
            if (!batch.retryAfter.isZero) {
                return UploadOutcome.RetryLater(batch.retryAfter, null)
            }
            val report = try {
                doorstep.applyAck(post(batch.bytes))
            } catch (e: DoorstepException.AckRejected) {
                return UploadOutcome.RetryLater(doorstep.recordUploadFailure("ack rejected").retryAfter, e)
            } catch (e: DoorstepException) {
                throw e
            } catch (e: CancellationException) {
                // The caller's scope was cancelled (WorkManager stopped the worker): not a network
                // failure, so no backoff is recorded and cancellation goes on up.
                throw e
            } catch (e: Exception) {
                val kind = e::class.simpleName ?: "error"
                return UploadOutcome.RetryLater(doorstep.recordUploadFailure(kind).retryAfter, e)
            }
            acknowledged += report.removed.toInt()
            flagged += report.flagged.size
            if (report.rejected.isNotEmpty() && report.removed == 0u) {
                return UploadOutcome.Stuck(report.rejected.map { it.seq })
            }
        }
    }
}
