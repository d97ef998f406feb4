package app.doorstep

import app.doorstep.ffi.HandoverOutcome
import app.doorstep.ffi.ParcelState
import app.doorstep.ffi.ReceiptEvent
import app.doorstep.ffi.Task
import kotlinx.coroutines.runBlocking
import kotlin.test.Test
import kotlin.test.assertEquals
import kotlin.test.assertIs

/** A return collected with its pickup code: the receipt says COLLECTED, the parcel shows it. */
class PickupTest {
    @Test
    fun `a return is collected with its pickup code and the receipt says collected`(): Unit = runBlocking {
        val day = Day()
        day.dispatch.setTask("P0", Task.PICKUP)
        day.enrolledDevice().use { d ->
            assertEquals(Task.PICKUP, d.parcel("P0").task)
            val wrongCode = d.verifyCode(scan("BC0"), wrong(day.codes.getValue("P0")))
            assertEquals(4u, assertIs<HandoverOutcome.WrongCode>(wrongCode).attemptsLeft)
            val ok = assertIs<HandoverOutcome.Accepted>(d.verifyCode(scan("BC0"), day.codes.getValue("P0")))
            assertEquals(ReceiptEvent.COLLECTED, ok.receipt.event)
            assertEquals(ParcelState.COLLECTED, d.parcel("P0").state)
            assertEquals(1u, d.status().parcels.collected)
            assertIs<UploadOutcome.Done>(Uploader(d, day.post).drain())
            assertEquals(0u, d.status().pendingReceipts)
        }
    }
}
