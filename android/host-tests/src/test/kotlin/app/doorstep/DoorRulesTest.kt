package app.doorstep

import app.doorstep.ffi.DoorRules
import app.doorstep.ffi.DoorstepException
import app.doorstep.ffi.FailureReason
import app.doorstep.ffi.HandoverOutcome
import app.doorstep.ffi.IdDocument
import app.doorstep.ffi.Identification
import app.doorstep.ffi.Inspection
import app.doorstep.ffi.ScannedParcel
import kotlinx.coroutines.runBlocking
import kotlin.test.Test
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertIs
import kotlin.test.assertTrue

/**
 * A parcel's rules at the door from the app's side: an addressee-only parcel needs the kind of ID
 * the driver checked, an open-box parcel what the customer found on opening it; without them the
 * call throws DoorCheckMissing and nothing is counted.
 */
class DoorRulesTest {
    @Test
    fun `an addressee-only parcel needs an ID check and an open-box parcel the customer's inspection`(): Unit =
        runBlocking {
            val day = Day()
            day.dispatch.setDoorRules("P0", DoorRules(addresseeOnly = true, openBox = false))
            day.dispatch.setDoorRules("P2", DoorRules(addresseeOnly = false, openBox = true))
            day.dispatch.setDoorRules("P5", DoorRules(addresseeOnly = false, openBox = true))
            day.enrolledDevice().use { d ->
                assertTrue(d.parcel("P0").rules.addresseeOnly)
                assertTrue(d.parcel("P2").rules.openBox)
                val code = day.codes.getValue("P0")
                val missing = assertFailsWith<DoorstepException.DoorCheckMissing> { d.verifyCode(scan("BC0"), code) }
                assertEquals("P0", missing.parcel)
                assertEquals(0u, d.parcel("P0").attemptsUsed)

                val withId = listOf(ScannedParcel("BC0", Identification.SCANNED, idChecked = IdDocument.PASSPORT))
                assertIs<HandoverOutcome.Accepted>(d.verifyCode(withId, code))

                assertFailsWith<DoorstepException.DoorCheckMissing> { d.deliverWithoutCode(scan("BC2")) }
                val dented = Inspection.AcceptedWithReservation("corner of the box dented")
                val inspected = listOf(ScannedParcel("BC2", Identification.SCANNED, inspection = dented))
                assertIs<HandoverOutcome.Accepted>(d.deliverWithoutCode(inspected))
                d.recordFailure(scan("BC5"), FailureReason.REFUSED_ON_INSPECTION)

                assertIs<UploadOutcome.Done>(Uploader(d, day.post).drain())
                assertEquals(0u, d.status().pendingReceipts)
            }
        }
}
