package app.doorstep

import app.doorstep.ffi.DoorstepException
import app.doorstep.ffi.HandoverOutcome
import app.doorstep.ffi.ReceiptEvent
import app.doorstep.ffi.ReceiptStatus
import app.doorstep.ffi.verifyEvidence
import kotlinx.coroutines.runBlocking
import kotlin.test.Test
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertIs

/** A parcel's evidence file verifies offline in the app with only dispatch's published keys. */
class EvidenceTest {
    @Test
    fun `a parcel's evidence verifies offline and one changed byte is refused`(): Unit = runBlocking {
        val day = Day()
        day.enrolledDevice().use { d ->
            assertIs<HandoverOutcome.WrongCode>(d.verifyCode(scan("BC0"), wrong(day.codes.getValue("P0"))))
            assertIs<HandoverOutcome.Accepted>(d.verifyCode(scan("BC1"), day.codes.getValue("P1")))
            assertIs<HandoverOutcome.Accepted>(d.verifyCode(scan("BC0"), day.codes.getValue("P0")))
            assertIs<UploadOutcome.Done>(Uploader(d, day.post).drain())

            val file = day.dispatch.evidence("P0", day.clock.now())
            val keys = day.dispatch.publicKeys()
            val report = verifyEvidence(file, keys)
            assertEquals("P0", report.parcelId)
            assertEquals(listOf(ReceiptEvent.WRONG_CODE, ReceiptEvent.DELIVERED), report.events.map { it.event })
            assertEquals(ReceiptStatus.ACCEPTED, report.events[1].status)

            val changed = file.copyOf()
            changed[changed.size / 2] = (changed[changed.size / 2].toInt() xor 1).toByte()
            assertFailsWith<DoorstepException.EvidenceRejected> { verifyEvidence(changed, keys) }
            assertFailsWith<DoorstepException.InvalidInput> { verifyEvidence(file, "not keys".toByteArray()) }
        }
    }
}
