package app.doorstep

import app.doorstep.ffi.FailureReason
import kotlinx.coroutines.runBlocking
import java.io.IOException
import java.time.Duration
import kotlin.test.Test
import kotlin.coroutines.cancellation.CancellationException
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertIs
import kotlin.test.assertTrue

/** The upload loop's failure paths: network errors back off, nothing is lost, a lost answer is resent. */
class UploaderTest {
    @Test
    fun `a network failure backs off and loses nothing`(): Unit = runBlocking {
        val day = Day()
        day.enrolledDevice().use { d ->
            repeat(3) { d.recordFailure(scan("BC${it * 3}"), FailureReason.NO_ACCESS) }
            val offline = Uploader(d) { throw IOException("no route to host") }.drain()
            assertIs<UploadOutcome.RetryLater>(offline)
            assertTrue(offline.after <= Duration.ofSeconds(5), "first retry within 5 s, got ${offline.after}")
            assertEquals(3u, d.status().pendingReceipts)
            assertEquals(1u, d.status().uploadFailures)

            // While backing off, the uploader waits instead of hammering the server.
            val batch = d.nextBatch()!!
            if (!batch.retryAfter.isZero) {
                assertIs<UploadOutcome.RetryLater>(Uploader(d, day.post).drain())
                day.clock.advanceMinutes(1)
            }
            assertIs<UploadOutcome.Done>(Uploader(d, day.post).drain())
            assertEquals(0u, d.status().pendingReceipts)
            assertEquals(0u, d.status().uploadFailures)
            assertEquals(3uL, day.dispatch.verifiedChainLength())
        }
    }

    @Test
    fun `an answer lost on the way is recovered by sending the same batch again`(): Unit = runBlocking {
        val day = Day()
        day.enrolledDevice().use { d ->
            d.recordFailure(scan("BC0"), FailureReason.NO_ACCESS)
            // Dispatch receives and stores the batch, but the answer never reaches the phone.
            val lost = Uploader(d) { body -> day.post(body); throw IOException("connection reset") }.drain()
            assertIs<UploadOutcome.RetryLater>(lost)
            day.clock.advanceMinutes(1)
            val again = d.nextBatch()!!
            assertTrue(again.resend)
            val verdict = day.dispatch.verifyBatch(again.bytes, day.clock.now())
            assertEquals(1u, verdict.duplicates)
            assertEquals(1u, d.applyAck(verdict.signedAck).removed)
            assertEquals(1uL, day.dispatch.verifiedChainLength())
        }
    }

    @Test
    fun `a cancelled upload goes on cancelling and records no failure`(): Unit = runBlocking {
        val day = Day()
        day.enrolledDevice().use { d ->
            d.recordFailure(scan("BC0"), FailureReason.NO_ACCESS)
            assertFailsWith<CancellationException> {
                Uploader(d) { throw CancellationException("worker stopped") }.drain()
            }
            assertEquals(0u, d.status().uploadFailures, "cancellation is not a network failure")
            assertEquals(1u, d.status().pendingReceipts)
            assertIs<UploadOutcome.Done>(Uploader(d, day.post).drain())
        }
    }
}
