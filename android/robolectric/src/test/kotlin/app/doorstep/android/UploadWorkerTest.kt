package app.doorstep.android

import android.app.Application
import androidx.work.Configuration
import androidx.work.ListenableWorker
import androidx.work.WorkInfo
import androidx.work.WorkManager
import androidx.work.testing.SynchronousExecutor
import androidx.work.testing.TestListenableWorkerBuilder
import androidx.work.testing.WorkManagerTestInitHelper
import androidx.work.workDataOf
import app.doorstep.DAY
import app.doorstep.Day
import app.doorstep.Doorstep
import app.doorstep.ffi.FailureReason
import app.doorstep.scan
import com.sun.net.httpserver.HttpServer
import kotlinx.coroutines.runBlocking
import org.junit.After
import org.junit.Before
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.RobolectricTestRunner
import org.robolectric.RuntimeEnvironment
import org.robolectric.annotation.Config
import java.net.InetSocketAddress
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.atomic.AtomicInteger
import kotlin.test.assertEquals
import kotlin.test.assertTrue

/** The app's Application hands the worker its Doorstep, as UploadWorker.DoorstepProvider asks. */
class TestApp : Application(), UploadWorker.DoorstepProvider {
    @Volatile var device: Doorstep? = null
    override suspend fun doorstep(): Doorstep = checkNotNull(device)
}

/**
 * [UploadWorker] under WorkManager's test support, posting over real HTTP to a local server that
 * answers as dispatch does (the fixture dispatch verifies each batch), or fails.
 */
@RunWith(RobolectricTestRunner::class)
@Config(sdk = [34], application = TestApp::class)
class UploadWorkerTest {
    private val app get() = RuntimeEnvironment.getApplication() as TestApp
    private val day = Day()
    private val failuresLeft = AtomicInteger(0)
    private val signatures = CopyOnWriteArrayList<String?>()
    private val server = HttpServer.create(InetSocketAddress("127.0.0.1", 0), 0).apply {
        createContext("/v1/devices/android-1/receipts") { exchange ->
            signatures.add(exchange.requestHeaders.getFirst("Device-Signature"))
            val body = exchange.requestBody.readBytes()
            val (status, answer) = if (failuresLeft.getAndDecrement() > 0) {
                503 to "{\"error\":\"internal\"}".toByteArray()
            } else {
                200 to day.dispatch.verifyBatch(body, day.clock.now()).signedAck
            }
            exchange.sendResponseHeaders(status, answer.size.toLong())
            exchange.responseBody.use { it.write(answer) }
        }
        start()
    }
    private val endpoint get() = "http://127.0.0.1:${server.address.port}/v1/devices/android-1/receipts"

    @Before
    fun setUp(): Unit = runBlocking {
        TestAndroidKeyStore.install()
        WorkManagerTestInitHelper.initializeTestWorkManager(
            app,
            Configuration.Builder().setExecutor(SynchronousExecutor()).build(),
        )
        val d = Doorstep.open(day.dbPath, AndroidKeystoreVault(), day.clock, day.logger)
        d.completeEnrolment(day.dispatch.enrol(d.enrolmentRequest(), "android-1", day.clock.now()))
        d.applyManifest(day.dispatch.fullManifest("R1", DAY.toString(), day.clock.now()))
        app.device = d
    }

    @After
    fun tearDown() {
        server.stop(0)
        app.device?.close()
    }

    private fun runWorker(): ListenableWorker.Result = runBlocking {
        TestListenableWorkerBuilder<UploadWorker>(app).setInputData(workDataOf("endpoint" to endpoint)).build().doWork()
    }

    private fun scheduled(): List<WorkInfo> =
        WorkManager.getInstance(app).getWorkInfosForUniqueWork("doorstep-upload").get()

    @Test
    fun `a failed upload reschedules itself with the core's backoff, then drains the outbox`(): Unit = runBlocking {
        val d = app.doorstep()
        repeat(3) { d.recordFailure(scan("BC${it * 3}"), FailureReason.NO_ACCESS) }
        failuresLeft.set(1)

        assertEquals(ListenableWorker.Result.success(), runWorker())
        val retry = scheduled().single()
        assertEquals(WorkInfo.State.ENQUEUED, retry.state)
        assertTrue(retry.initialDelayMillis in 0..5_000, "the core's first backoff, got ${retry.initialDelayMillis}")
        assertEquals(3u, d.status().pendingReceipts, "nothing lost")
        assertEquals(1u, d.status().uploadFailures)

        day.clock.advanceMinutes(1)
        assertEquals(ListenableWorker.Result.success(), runWorker())
        assertEquals(0u, d.status().pendingReceipts)
        assertEquals(3uL, day.dispatch.verifiedChainLength())
        assertTrue(signatures.all { !it.isNullOrEmpty() }, "every upload carries the device's signature")
    }

    @Test
    fun `a worker without an endpoint fails without touching the outbox`(): Unit = runBlocking {
        app.doorstep().recordFailure(scan("BC0"), FailureReason.NO_ACCESS)
        val worker = TestListenableWorkerBuilder<UploadWorker>(app).build()
        assertEquals(ListenableWorker.Result.failure(), worker.doWork())
        assertEquals(1u, app.doorstep().status().pendingReceipts)
        assertTrue(signatures.isEmpty())
    }
}
