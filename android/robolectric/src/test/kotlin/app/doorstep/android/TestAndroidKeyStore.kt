package app.doorstep.android

import android.security.keystore.KeyGenParameterSpec
import android.security.keystore.KeyProperties
import java.io.InputStream
import java.io.OutputStream
import java.security.Key
import java.security.KeyStoreSpi
import java.security.Provider
import java.security.SecureRandom
import java.security.Security
import java.security.cert.Certificate
import java.security.spec.AlgorithmParameterSpec
import java.util.Collections
import java.util.Date
import java.util.Enumeration
import java.util.concurrent.ConcurrentHashMap
import javax.crypto.KeyGeneratorSpi
import javax.crypto.SecretKey
import javax.crypto.spec.SecretKeySpec

/**
 * A stand-in for the "AndroidKeyStore" JCA provider, which on a phone is backed by the keystore
 * daemon (and hardware) and does not exist under Robolectric: secret keys in memory, and an AES
 * key generator that takes a [KeyGenParameterSpec]. It insists on what the vault must ask for
 * (encrypt and decrypt, GCM, no padding, 256 bits, randomised encryption), so a weaker spec fails
 * here. What it cannot show: that the key stays in hardware and is not exportable.
 */
class TestAndroidKeyStore : Provider("AndroidKeyStore", "1.0", "doorstep's test stand-in for AndroidKeyStore") {
    init {
        put("KeyStore.AndroidKeyStore", Store::class.java.name)
        put("KeyGenerator.AES", Generator::class.java.name)
    }

    companion object {
        val keys = ConcurrentHashMap<String, SecretKey>()

        /** Installs a fresh, empty stand-in (as after installing the app). */
        fun install() {
            keys.clear()
            Security.removeProvider("AndroidKeyStore")
            Security.addProvider(TestAndroidKeyStore())
        }
    }

    class Store : KeyStoreSpi() {
        override fun engineGetKey(alias: String, password: CharArray?): Key? = keys[alias]
        override fun engineLoad(stream: InputStream?, password: CharArray?) {}
        override fun engineAliases(): Enumeration<String> = Collections.enumeration(keys.keys.toList())
        override fun engineContainsAlias(alias: String) = keys.containsKey(alias)
        override fun engineSize() = keys.size
        override fun engineIsKeyEntry(alias: String) = keys.containsKey(alias)
        override fun engineDeleteEntry(alias: String) {
            keys.remove(alias)
        }
        override fun engineIsCertificateEntry(alias: String) = false
        override fun engineGetCertificate(alias: String): Certificate? = null
        override fun engineGetCertificateChain(alias: String): Array<Certificate>? = null
        override fun engineGetCertificateAlias(cert: Certificate): String? = null
        override fun engineGetCreationDate(alias: String): Date? = null
        override fun engineSetKeyEntry(alias: String, key: Key, password: CharArray?, chain: Array<Certificate>?) =
            throw UnsupportedOperationException("keys are only generated inside the keystore")
        override fun engineSetKeyEntry(alias: String, key: ByteArray, chain: Array<Certificate>?) =
            throw UnsupportedOperationException("keys are only generated inside the keystore")
        override fun engineSetCertificateEntry(alias: String, cert: Certificate) = throw UnsupportedOperationException()
        override fun engineStore(stream: OutputStream?, password: CharArray?) = throw UnsupportedOperationException()
    }

    class Generator : KeyGeneratorSpi() {
        private var spec: KeyGenParameterSpec? = null
        private var random = SecureRandom()

        override fun engineInit(params: AlgorithmParameterSpec, random: SecureRandom?) {
            val spec = params as? KeyGenParameterSpec ?: throw IllegalArgumentException("needs a KeyGenParameterSpec")
            val both = KeyProperties.PURPOSE_ENCRYPT or KeyProperties.PURPOSE_DECRYPT
            require(spec.purposes == both) { "purposes ${spec.purposes}" }
            require(spec.blockModes.toList() == listOf(KeyProperties.BLOCK_MODE_GCM)) { "block modes" }
            require(spec.encryptionPaddings.toList() == listOf(KeyProperties.ENCRYPTION_PADDING_NONE)) { "paddings" }
            require(spec.keySize == 256) { "key size ${spec.keySize}" }
            require(spec.isRandomizedEncryptionRequired) { "randomised encryption" }
            this.spec = spec
            random?.let { this.random = it }
        }

        override fun engineInit(random: SecureRandom?) = throw IllegalStateException("needs a KeyGenParameterSpec")
        override fun engineInit(keysize: Int, random: SecureRandom?) =
            throw IllegalStateException("needs a KeyGenParameterSpec")

        override fun engineGenerateKey(): SecretKey {
            val spec = checkNotNull(spec) { "not initialised" }
            val key = SecretKeySpec(ByteArray(32).also(random::nextBytes), "AES")
            keys[spec.keystoreAlias] = key
            return key
        }
    }
}
