package app.doorstep

import app.doorstep.ffi.Clock
import app.doorstep.ffi.HostException
import app.doorstep.ffi.Identification
import app.doorstep.ffi.KeyVault
import app.doorstep.ffi.LogLevel
import app.doorstep.ffi.Logger
import app.doorstep.ffi.ScannedParcel
import app.doorstep.ffi.TestDispatch
import java.nio.file.Files
import java.nio.file.Path
import java.time.Instant
import java.time.LocalDate
import java.time.ZoneOffset
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.atomic.AtomicLong
import javax.crypto.Cipher
import javax.crypto.spec.GCMParameterSpec
import javax.crypto.spec.SecretKeySpec

/** A Kotlin KeyVault: AES-GCM with an in-memory key, as the Android Keystore vault does with its own. */
class AesVault(private val key: ByteArray = ByteArray(32) { it.toByte() }) : KeyVault {
    @Volatile var locked = false

    override fun seal(plaintext: ByteArray): ByteArray {
        if (locked) throw HostException.Failed("vault locked")
        val cipher = Cipher.getInstance("AES/GCM/NoPadding")
        cipher.init(Cipher.ENCRYPT_MODE, SecretKeySpec(key, "AES"))
        return cipher.iv + cipher.doFinal(plaintext)
    }

    override fun unseal(sealed: ByteArray): ByteArray {
        if (locked) throw HostException.Failed("vault locked")
        val cipher = Cipher.getInstance("AES/GCM/NoPadding")
        cipher.init(Cipher.DECRYPT_MODE, SecretKeySpec(key, "AES"), GCMParameterSpec(128, sealed, 0, 12))
        return cipher.doFinal(sealed, 12, sealed.size - 12)
    }
}

/** A Kotlin Clock the test moves. */
class TestClock(start: Instant) : Clock {
    val wall = AtomicLong(start.toEpochMilli())
    val mono = AtomicLong(1_000)

    fun advanceMinutes(minutes: Long) {
        wall.addAndGet(minutes * 60_000)
        mono.addAndGet(minutes * 60_000)
    }

    fun now(): Instant = Instant.ofEpochMilli(wall.get())

    override fun wallTime(): Instant = Instant.ofEpochMilli(wall.get())
    override fun monotonic(): java.time.Duration = java.time.Duration.ofMillis(mono.get())
}

class CollectingLogger : Logger {
    val lines = CopyOnWriteArrayList<String>()
    override fun log(level: LogLevel, message: String) {
        lines.add("$level $message")
    }
}

val DAY: LocalDate = LocalDate.of(2026, 11, 26)
val MORNING: Instant = DAY.atTime(8, 0).toInstant(ZoneOffset.UTC)
val END_OF_DAY: Instant = DAY.atTime(23, 0).toInstant(ZoneOffset.UTC)

fun scan(barcode: String) = listOf(ScannedParcel(barcode, Identification.SCANNED))

/** A wrong 6-digit code for [right] (differs in every position). */
fun wrong(right: String): String = right.map { ((it - '0' + 5) % 10).digitToChar() }.joinToString("")

/** A dispatch with [count] parcels (P0..): every third needs no code, P1 has the delegate "Anna". */
class Day(count: Int = 12, val dir: Path = Files.createTempDirectory("doorstep-kt")) {
    val dispatch = TestDispatch()
    val clock = TestClock(MORNING)
    val vault = AesVault()
    val logger = CollectingLogger()
    val codes = mutableMapOf<String, String>()
    val delegateCodes = mutableMapOf<String, String>()
    val dbPath: String = dir.resolve("device.db").toString()

    init {
        for (i in 0 until count) {
            val issued = dispatch.addParcel(
                "P$i", "BC$i", "S${i / 2}", (i / 2 + 1).toUInt(),
                needsCode = i % 3 != 2,
                delegates = if (i == 1) listOf("Anna") else emptyList(),
                notBefore = DAY.atStartOfDay().toInstant(ZoneOffset.UTC),
                notAfter = END_OF_DAY,
            )
            issued.customer?.let { codes["P$i"] = it }
            issued.delegates.forEach { delegateCodes["P$i/${it.label}"] = it.code }
        }
    }

    suspend fun openDevice(): Doorstep = Doorstep.open(dbPath, vault, clock, logger)

    /** Opens, enrols and syncs the full manifest. */
    suspend fun enrolledDevice(): Doorstep {
        val d = openDevice()
        d.completeEnrolment(dispatch.enrol(d.enrolmentRequest(), "kt-device-1", clock.now()))
        d.applyManifest(dispatch.fullManifest("R1", DAY.toString(), clock.now()))
        return d
    }

    /** Dispatch's side of the upload, as the app's HTTP call would reach it. */
    val post: suspend (ByteArray) -> ByteArray = { body -> dispatch.verifyBatch(body, clock.now()).signedAck }
}
