package app.doorstep

import app.doorstep.ffi.FailureReason
import app.doorstep.ffi.HandoverMethod
import app.doorstep.ffi.HandoverOutcome
import app.doorstep.ffi.Holder
import app.doorstep.ffi.ParcelState
import app.doorstep.ffi.ReceiptEvent
import java.time.ZoneOffset
import kotlinx.coroutines.runBlocking
import kotlin.test.Test
import kotlin.test.assertEquals
import kotlin.test.assertIs
import kotlin.test.assertTrue

/** A whole day through the Kotlin API, with dispatch verifying the receipt chain at the end. */
class DayTest {
    @Test
    fun `a full day reconciles`(): Unit = runBlocking {
        val day = Day()
        day.enrolledDevice().use { d ->
            assertTrue(d.isEnrolled())
            // Requests to dispatch are signed: <device id>.<ms>.<signature>.
            assertEquals(4, d.signRequest("GET", "/v1/devices/x/manifest", ByteArray(0)).split(".").size)
            assertEquals(12, d.parcels().size)

            // Right code.
            val ok = d.verifyCode(scan("BC0"), day.codes.getValue("P0"))
            assertIs<HandoverOutcome.Accepted>(ok)
            assertEquals(Holder.Customer, ok.holder)
            assertEquals(ReceiptEvent.DELIVERED, ok.receipt.event)

            // Delegate code, with spaces as a person would type it.
            val anna = day.delegateCodes.getValue("P1/Anna")
            val viaDelegate = d.verifyCode(scan("BC1"), anna.chunked(3).joinToString(" "))
            assertIs<HandoverOutcome.Accepted>(viaDelegate)
            assertEquals(Holder.Delegate("Anna"), viaDelegate.holder)
            assertEquals(HandoverMethod.DELEGATE_CODE, viaDelegate.method)

            // A parcel that needs no code.
            assertEquals(HandoverOutcome.NoCodeNeeded, d.verifyCode(scan("BC2"), "123456"))
            assertIs<HandoverOutcome.Accepted>(d.deliverWithoutCode(scan("BC2")))

            // Typo, then the right code.
            val typo = d.verifyCode(scan("BC3"), wrong(day.codes.getValue("P3")))
            assertEquals(HandoverOutcome.WrongCode(4u), typo)
            assertIs<HandoverOutcome.Accepted>(d.verifyCode(scan("BC3"), day.codes.getValue("P3")))

            // QR token from the customer app.
            val token = day.dispatch.qrToken("P4", Holder.Customer, day.clock.now(), END_OF_DAY)
            val qr = d.verifyQrToken(scan("BC4"), token)
            assertIs<HandoverOutcome.Accepted>(qr)
            assertEquals(HandoverMethod.QR_TOKEN, qr.method)

            // Wrong code until the parcel locks; the lock holds for the right code too.
            repeat(4) { d.verifyCode(scan("BC6"), wrong(day.codes.getValue("P6"))) }
            val locked = d.verifyCode(scan("BC6"), wrong(day.codes.getValue("P6")))
            assertIs<HandoverOutcome.Locked>(locked)
            assertEquals(ReceiptEvent.LOCKED_OUT, locked.receipt?.event)
            assertIs<HandoverOutcome.Locked>(d.verifyCode(scan("BC6"), day.codes.getValue("P6")))
            assertEquals(ParcelState.LOCKED, d.parcel("P6").state)

            // Failures with reasons.
            d.recordFailure(scan("BC7"), FailureReason.RECIPIENT_UNAVAILABLE)
            d.recordFailure(scan("BC9"), FailureReason.REFUSED_BY_RECIPIENT)
            d.recordFailure(scan("BC10"), FailureReason.OTHER, note = "gate locked, no bell")
            assertEquals(ParcelState.FAILED, d.parcel("P7").state)

            // Upload and acknowledgement round trip.
            val first = Uploader(d, day.post).drain(maxReceipts = 3u)
            assertIs<UploadOutcome.Done>(first)
            assertEquals(0u, d.status().pendingReceipts)

            // End of day: the code of an undelivered parcel has expired, and stays expired.
            day.clock.advanceMinutes(16 * 60)
            assertIs<HandoverOutcome.Expired>(d.verifyCode(scan("BC10"), day.codes.getValue("P10")))
            day.clock.advanceMinutes(30) // past the purge grace
            val purge = d.purgeExpired()
            assertEquals(7u, purge.expired, "every parcel not delivered expires")
            assertIs<UploadOutcome.Done>(Uploader(d, day.post).drain())

            val status = d.status()
            assertEquals(0u, status.pendingReceipts)
            assertEquals(5u, status.parcels.delivered)
            // 5 deliveries + 5 wrong codes (each travels to dispatch) + 1 lock-out + 3 failures
            // + 7 expiries, one unbroken chain, all accepted.
            assertEquals(21uL, day.dispatch.verifiedChainLength())
            // No code ever reached the logs.
            val logs = day.logger.lines.joinToString("\n")
            (day.codes.values + day.delegateCodes.values).forEach { assertTrue(it !in logs, "a code is in the logs") }
        }
    }

    @Test
    fun `tomorrow's route loads beside today's and today's parcels stay deliverable`(): Unit = runBlocking {
        val day = Day(count = 3)
        day.enrolledDevice().use { d ->
            day.dispatch.startRoute()
            val tomorrow = DAY.plusDays(1)
            val codes = day.dispatch.addParcel(
                "T0", "TBC0", "S9", 1u, needsCode = true, delegates = emptyList(),
                notBefore = tomorrow.atStartOfDay().toInstant(ZoneOffset.UTC),
                notAfter = tomorrow.atTime(23, 0).toInstant(ZoneOffset.UTC),
            )
            val report = d.applyManifest(day.dispatch.fullManifest("R1", tomorrow.toString(), day.clock.now()))
            assertEquals(0u, report.removed)

            val status = d.status()
            assertEquals(listOf(DAY.toString(), tomorrow.toString()), status.days.map { it.deliveryDate })
            assertEquals(DAY.toString(), status.deliveryDate)
            assertEquals(tomorrow.toString(), d.parcel("T0").deliveryDate)
            assertIs<HandoverOutcome.Accepted>(d.verifyCode(scan("BC0"), day.codes.getValue("P0")))
            assertIs<HandoverOutcome.NotYetValid>(d.verifyCode(scan("TBC0"), codes.customer!!))
            assertEquals(1u, d.status().days[0].parcels.delivered)
        }
    }
}
