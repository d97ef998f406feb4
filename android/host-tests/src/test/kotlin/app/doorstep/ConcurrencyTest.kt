package app.doorstep

import app.doorstep.ffi.HandoverOutcome
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.runBlocking
import java.util.concurrent.Executors
import kotlinx.coroutines.asCoroutineDispatcher
import kotlin.test.Test
import kotlin.test.assertEquals
import kotlin.test.assertIs

/** One device object used from many threads at once; then closed and reopened. */
class ConcurrencyTest {
    @Test
    fun `calls from many threads at once are serialised correctly`(): Unit = runBlocking {
        val day = Day(count = 60)
        val pool = Executors.newFixedThreadPool(8).asCoroutineDispatcher()
        day.enrolledDevice().use { d ->
            val codeParcels = (0 until 60).filter { it % 3 != 2 }
            // Each code parcel gets one wrong and one right attempt, all racing on 8 threads, while
            // other coroutines read status and parcels.
            val jobs = codeParcels.flatMap { i ->
                listOf(
                    async(pool) { d.verifyCode(scan("BC$i"), wrong(day.codes.getValue("P$i"))) },
                    async(pool) { d.verifyCode(scan("BC$i"), day.codes.getValue("P$i")) },
                    async(Dispatchers.Default) { d.status(); d.parcels().size },
                )
            }
            val results = jobs.awaitAll()
            val accepted = results.count { it is HandoverOutcome.Accepted }
            assertEquals(codeParcels.size, accepted, "every right code was accepted exactly once")
            val status = d.status()
            assertEquals(codeParcels.size.toUInt(), status.parcels.delivered)
            // Receipts are numbered without gaps whatever the interleaving: one per hand-over, and
            // one per wrong code that came before its parcel's right one.
            val wrongCodes = results.count { it is HandoverOutcome.WrongCode }
            assertIs<UploadOutcome.Done>(Uploader(d, day.post).drain())
            assertEquals((codeParcels.size + wrongCodes).toULong(), day.dispatch.verifiedChainLength())
        }
        pool.close()
    }

    @Test
    fun `a receipt survives closing and reopening the store`(): Unit = runBlocking {
        val day = Day()
        day.enrolledDevice().use { d -> d.verifyCode(scan("BC0"), day.codes.getValue("P0")) }
        day.openDevice().use { d ->
            assertEquals(1u, d.status().pendingReceipts)
            assertEquals(app.doorstep.ffi.ParcelState.DELIVERED, d.parcel("P0").state)
            assertIs<UploadOutcome.Done>(Uploader(d, day.post).drain())
        }
        day.openDevice().use { d -> assertEquals(0u, d.status().pendingReceipts) }
        assertEquals(1uL, day.dispatch.verifiedChainLength())
    }

    @Test
    fun `using a destroyed object fails cleanly`() {
        val day = Day()
        val d = runBlocking { day.enrolledDevice() }
        d.close()
        kotlin.test.assertFailsWith<IllegalStateException> { runBlocking { d.status() } }
    }
}
