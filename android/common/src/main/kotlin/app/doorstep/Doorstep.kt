package app.doorstep

import app.doorstep.ffi.AckReport
import app.doorstep.ffi.ApplyReport
import app.doorstep.ffi.Clock
import app.doorstep.ffi.DoorstepDevice
import app.doorstep.ffi.FailureReason
import app.doorstep.ffi.HandoverOutcome
import app.doorstep.ffi.KeyVault
import app.doorstep.ffi.Location
import app.doorstep.ffi.Logger
import app.doorstep.ffi.Parcel
import app.doorstep.ffi.PurgeReport
import app.doorstep.ffi.Receipt
import app.doorstep.ffi.RetryAdvice
import app.doorstep.ffi.ScannedParcel
import app.doorstep.ffi.Status
import app.doorstep.ffi.UploadBatch
import kotlinx.coroutines.CoroutineDispatcher
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.withContext

/**
 * The coroutine face of [DoorstepDevice]: every call runs on [dispatcher] (by default
 * [Dispatchers.IO]), so a durable commit never blocks the caller's thread. Failures are thrown as
 * `DoorstepException` subclasses that say what to do (for example `DoorstepException.CodeFormat`:
 * ask again, no attempt was counted).
 *
 * Safe to share between coroutines and threads. Close it when the app no longer needs it.
 */
class Doorstep(
    private val device: DoorstepDevice,
    private val dispatcher: CoroutineDispatcher = Dispatchers.IO,
) : AutoCloseable {

    companion object {
        /** Opens (or creates) the device database at [path] off the calling thread. */
        suspend fun open(
            path: String,
            vault: KeyVault,
            clock: Clock = JvmClock(),
            logger: Logger? = null,
            dispatcher: CoroutineDispatcher = Dispatchers.IO,
        ): Doorstep = withContext(dispatcher) {
            Doorstep(DoorstepDevice.open(path, vault, clock, logger), dispatcher)
        }
    }

    private suspend fun <T> io(block: DoorstepDevice.() -> T): T = withContext(dispatcher) { device.block() }

    suspend fun isEnrolled(): Boolean = io { isEnrolled() }
    suspend fun enrolmentRequest(): ByteArray = io { enrolmentRequest() }
    suspend fun completeEnrolment(bundle: ByteArray) = io { completeEnrolment(bundle) }
    suspend fun applyManifest(envelope: ByteArray): ApplyReport = io { applyManifest(envelope) }

    suspend fun parcel(parcelId: String): Parcel = io { parcel(parcelId) }
    suspend fun parcelByBarcode(barcode: String): Parcel = io { parcelByBarcode(barcode) }
    suspend fun parcelsAtStop(stopId: String): List<Parcel> = io { parcelsAtStop(stopId) }
    suspend fun parcels(): List<Parcel> = io { parcels() }

    suspend fun verifyCode(scanned: List<ScannedParcel>, code: String, location: Location? = null): HandoverOutcome =
        io { verifyCode(scanned, code, location) }

    suspend fun verifyQrToken(scanned: List<ScannedParcel>, token: String, location: Location? = null): HandoverOutcome =
        io { verifyQrToken(scanned, token, location) }

    suspend fun deliverWithoutCode(scanned: List<ScannedParcel>, location: Location? = null): HandoverOutcome =
        io { deliverWithoutCode(scanned, location) }

    suspend fun recordFailure(
        scanned: List<ScannedParcel>,
        reason: FailureReason,
        note: String? = null,
        location: Location? = null,
    ): Receipt = io { recordFailure(scanned, reason, note, location) }

    suspend fun reverseDelivery(
        parcelId: String,
        reason: FailureReason,
        note: String? = null,
        location: Location? = null,
    ): Receipt = io { reverseDelivery(parcelId, reason, note, location) }

    suspend fun nextBatch(maxReceipts: UInt = 200u, maxBytes: UInt = 512u * 1024u): UploadBatch? =
        io { nextBatch(maxReceipts, maxBytes) }

    suspend fun applyAck(signedAck: ByteArray): AckReport = io { applyAck(signedAck) }

    /**
     * The `Device-Signature` header for a request to dispatch (method, path with query, body),
     * signed with this device's key. Add it to manifest fetches and receipt uploads.
     */
    suspend fun signRequest(method: String, path: String, body: ByteArray): String =
        io { signRequest(method, path, body) }
    suspend fun recordUploadFailure(error: String): RetryAdvice = io { recordUploadFailure(error) }
    suspend fun purgeExpired(): PurgeReport = io { purgeExpired() }
    suspend fun status(): Status = io { status() }

    /** Releases the native object and closes the database once calls in progress have finished. */
    override fun close() = device.close()
}
