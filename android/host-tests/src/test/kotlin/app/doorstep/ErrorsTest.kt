package app.doorstep

import app.doorstep.ffi.DoorstepException
import app.doorstep.ffi.FailureReason
import app.doorstep.ffi.Holder
import app.doorstep.ffi.Identification
import app.doorstep.ffi.Location
import app.doorstep.ffi.ScannedParcel
import app.doorstep.ffi.quarantineDatabase
import kotlinx.coroutines.runBlocking
import java.io.File
import kotlin.test.Test
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertTrue

/** Bad input of every kind is a typed exception that says what to do, and changes nothing. */
class ErrorsTest {
    @Test
    fun `malformed codes are CodeFormat and spend no attempt`(): Unit = runBlocking {
        val day = Day()
        day.enrolledDevice().use { d ->
            for (bad in listOf("", "12345", "1234567", "12a456", "abcdef")) {
                assertFailsWith<DoorstepException.CodeFormat> { d.verifyCode(scan("BC0"), bad) }
            }
            assertEquals(0u, d.parcel("P0").attemptsUsed)
        }
    }

    @Test
    fun `invalid arguments are InvalidInput`(): Unit = runBlocking {
        val day = Day()
        day.enrolledDevice().use { d ->
            assertFailsWith<DoorstepException.InvalidInput> { d.verifyCode(emptyList(), "123456") }
            val twice = listOf(ScannedParcel("BC0", Identification.SCANNED), ScannedParcel("BC0", Identification.TYPED))
            assertFailsWith<DoorstepException.InvalidInput> { d.verifyCode(twice, "123456") }
            assertFailsWith<DoorstepException.InvalidInput> {
                d.recordFailure(scan("BC0"), FailureReason.OTHER, note = null)
            }
            assertFailsWith<DoorstepException.InvalidInput> {
                d.recordFailure(scan("BC0"), FailureReason.NO_ACCESS, location = Location(120.0, 0.0, 5.0))
            }
            assertFailsWith<DoorstepException.UnknownParcel> { d.parcel("nope") }
            assertFailsWith<DoorstepException.NotAllowed> {
                d.reverseDelivery("P0", FailureReason.DAMAGED_NOT_DELIVERED)
            }
            assertEquals(0u, d.status().pendingReceipts)
        }
    }

    @Test
    fun `forged manifests, tokens and acks are rejected`(): Unit = runBlocking {
        val day = Day()
        day.enrolledDevice().use { d ->
            val manifest = day.dispatch.fullManifest("R1", DAY.toString(), day.clock.now())
            manifest[manifest.size / 2] = (manifest[manifest.size / 2].toInt() xor 1).toByte()
            assertFailsWith<DoorstepException.ManifestRejected> { d.applyManifest(manifest) }
            assertFailsWith<DoorstepException.ManifestRejected> { d.applyManifest("{}".toByteArray()) }
            // A delta that skips a sequence number asks for a full manifest.
            day.dispatch.resetLockout("P0", day.clock.now())
            val gap = day.dispatch.resetLockout("P0", day.clock.now())
            val e = assertFailsWith<DoorstepException.ManifestRejected> { d.applyManifest(gap) }
            assertTrue(e.fetchFull)

            assertFailsWith<DoorstepException.QrTokenRejected> { d.verifyQrToken(scan("BC0"), "DSQ1.x.y.z") }
            val other = day.dispatch.qrToken("P3", Holder.Customer, day.clock.now(), END_OF_DAY)
            assertFailsWith<DoorstepException.QrTokenRejected> { d.verifyQrToken(scan("BC0"), other) }

            d.recordFailure(scan("BC0"), FailureReason.RECIPIENT_UNAVAILABLE)
            val batch = d.nextBatch()!!
            val ack = day.dispatch.verifyBatch(batch.bytes, day.clock.now()).signedAck
            ack[ack.size / 3] = (ack[ack.size / 3].toInt() xor 1).toByte()
            assertFailsWith<DoorstepException.AckRejected> { d.applyAck(ack) }
            assertEquals(1u, d.status().pendingReceipts, "a refused ack deletes nothing")
        }
    }

    @Test
    fun `an unenrolled device says so`(): Unit = runBlocking {
        val day = Day()
        day.openDevice().use { d ->
            assertFalse(d.isEnrolled())
            assertFailsWith<DoorstepException.NotEnrolled> { d.verifyCode(scan("BC0"), "123456") }
            assertFailsWith<DoorstepException.EnrolmentRejected> { d.completeEnrolment("not json".toByteArray()) }
        }
    }

    @Test
    fun `a file that is not a doorstep database is refused and can be quarantined`(): Unit = runBlocking {
        val day = Day()
        val junk = File(day.dbPath).apply { writeBytes(ByteArray(8192) { 0x5A }) }
        assertFailsWith<DoorstepException.DatabaseUnusable> { day.openDevice() }
        assertEquals(8192, junk.length().toInt(), "left untouched")
        val moved = File(quarantineDatabase(day.dbPath))
        assertTrue(moved.exists() && !junk.exists())
        day.openDevice().use { assertFalse(it.isEnrolled()) }
    }

    @Test
    fun `a locked key vault is reported`(): Unit = runBlocking {
        val day = Day()
        day.enrolledDevice().close()
        day.vault.locked = true
        assertFailsWith<DoorstepException.KeyVaultUnavailable> { day.openDevice() }
        Unit
    }
}
