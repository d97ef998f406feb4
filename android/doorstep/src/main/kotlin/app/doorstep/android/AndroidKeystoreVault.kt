package app.doorstep.android

import android.security.keystore.KeyGenParameterSpec
import android.security.keystore.KeyProperties
import app.doorstep.ffi.HostException
import app.doorstep.ffi.KeyVault
import java.security.GeneralSecurityException
import java.security.KeyStore
import javax.crypto.Cipher
import javax.crypto.KeyGenerator
import javax.crypto.SecretKey
import javax.crypto.spec.GCMParameterSpec

/**
 * Seals doorstep's secrets with a non-exportable AES-256-GCM key held by the Android Keystore
 * (hardware-backed where the phone has it). The sealed form is `IV (12 bytes) ‖ ciphertext ‖ tag`.
 *
 * The key never leaves the Keystore; uninstalling the app deletes it, and with it the ability to
 * unseal (the device must then enrol again).
 */
class AndroidKeystoreVault(private val alias: String = "app.doorstep.vault") : KeyVault {

    private val key: SecretKey by lazy { loadOrCreateKey() }

    private fun loadOrCreateKey(): SecretKey {
        val keyStore = KeyStore.getInstance(KEYSTORE).apply { load(null) }
        (keyStore.getKey(alias, null) as? SecretKey)?.let { return it }
        val generator = KeyGenerator.getInstance(KeyProperties.KEY_ALGORITHM_AES, KEYSTORE)
        generator.init(
            KeyGenParameterSpec.Builder(alias, KeyProperties.PURPOSE_ENCRYPT or KeyProperties.PURPOSE_DECRYPT)
                .setBlockModes(KeyProperties.BLOCK_MODE_GCM)
                .setEncryptionPaddings(KeyProperties.ENCRYPTION_PADDING_NONE)
                .setKeySize(256)
                .setRandomizedEncryptionRequired(true)
                .build(),
        )
        return generator.generateKey()
    }

    override fun seal(plaintext: ByteArray): ByteArray = guarded {
        val cipher = Cipher.getInstance(TRANSFORMATION)
        cipher.init(Cipher.ENCRYPT_MODE, key)
        cipher.iv + cipher.doFinal(plaintext)
    }

    override fun unseal(sealed: ByteArray): ByteArray = guarded {
        if (sealed.size < IV_BYTES + TAG_BITS / 8) throw HostException.Failed("sealed value too short")
        val cipher = Cipher.getInstance(TRANSFORMATION)
        cipher.init(Cipher.DECRYPT_MODE, key, GCMParameterSpec(TAG_BITS, sealed, 0, IV_BYTES))
        cipher.doFinal(sealed, IV_BYTES, sealed.size - IV_BYTES)
    }

    // Report the failure's kind only: exception messages may carry key material details.
    private inline fun guarded(block: () -> ByteArray): ByteArray = try {
        block()
    } catch (e: GeneralSecurityException) {
        throw HostException.Failed("keystore: ${e.javaClass.simpleName}")
    }

    private companion object {
        const val KEYSTORE = "AndroidKeyStore"
        const val TRANSFORMATION = "AES/GCM/NoPadding"
        const val IV_BYTES = 12
        const val TAG_BITS = 128
    }
}
