package app.doorstep.android

import app.doorstep.DAY
import app.doorstep.Day
import app.doorstep.Doorstep
import app.doorstep.Uploader
import app.doorstep.UploadOutcome
import app.doorstep.ffi.HostException
import app.doorstep.scan
import kotlinx.coroutines.runBlocking
import org.junit.Before
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.RobolectricTestRunner
import org.robolectric.annotation.Config
import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertIs

/** The Keystore vault under Robolectric, with a stand-in AndroidKeyStore provider (see [TestAndroidKeyStore]). */
@RunWith(RobolectricTestRunner::class)
@Config(sdk = [34])
class AndroidKeystoreVaultTest {
    private val secret = "device secret: 32 bytes of key..".toByteArray()

    @Before
    fun freshKeystore() = TestAndroidKeyStore.install()

    @Test
    fun `a sealed secret opens again, also from a new vault on the same alias`() {
        val sealed = AndroidKeystoreVault().seal(secret)
        assertFalse(sealed.asList().windowed(secret.size).any { it == secret.asList() }, "the secret is not in the clear")
        assertContentEquals(secret, AndroidKeystoreVault().unseal(sealed), "the key persists in the keystore")
        assertEquals(1, TestAndroidKeyStore.keys.size, "one key, created once")
    }

    @Test
    fun `sealing twice gives different bytes (a fresh IV each time)`() {
        val vault = AndroidKeystoreVault()
        assertFalse(vault.seal(secret).contentEquals(vault.seal(secret)))
    }

    @Test
    fun `a tampered, truncated or foreign sealed value is refused with a typed error`() {
        val vault = AndroidKeystoreVault()
        val sealed = vault.seal(secret)
        for (i in listOf(0, 12, sealed.size - 1)) {
            val tampered = sealed.copyOf().also { it[i] = (it[i].toInt() xor 1).toByte() }
            val e = assertFailsWith<HostException.Failed> { vault.unseal(tampered) }
            assertEquals("keystore: AEADBadTagException", e.reason, "the kind only, no details")
        }
        assertFailsWith<HostException.Failed> { vault.unseal(sealed.copyOf(20)) }
        val other = AndroidKeystoreVault(alias = "another.app.key")
        assertFailsWith<HostException.Failed> { other.unseal(sealed) }
    }

    @Test
    fun `the core runs a day with the Keystore vault`(): Unit = runBlocking {
        val day = Day()
        val vault = AndroidKeystoreVault()
        Doorstep.open(day.dbPath, vault, day.clock, day.logger).use { d ->
            d.completeEnrolment(day.dispatch.enrol(d.enrolmentRequest(), "android-1", day.clock.now()))
            d.applyManifest(day.dispatch.fullManifest("R1", DAY.toString(), day.clock.now()))
            d.verifyCode(scan("BC0"), day.codes.getValue("P0"))
        }
        // Reopened: the device secret and signing key unseal through the Keystore again.
        Doorstep.open(day.dbPath, AndroidKeystoreVault(), day.clock, day.logger).use { d ->
            assertIs<UploadOutcome.Done>(Uploader(d, day.post).drain())
        }
        assertEquals(1uL, day.dispatch.verifiedChainLength())
    }
}
