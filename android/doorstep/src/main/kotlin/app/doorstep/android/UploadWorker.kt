package app.doorstep.android

import android.content.Context
import androidx.work.Constraints
import androidx.work.CoroutineWorker
import androidx.work.ExistingWorkPolicy
import androidx.work.NetworkType
import androidx.work.OneTimeWorkRequestBuilder
import androidx.work.WorkManager
import androidx.work.WorkerParameters
import androidx.work.workDataOf
import app.doorstep.Doorstep
import app.doorstep.UploadOutcome
import app.doorstep.Uploader
import java.net.HttpURLConnection
import java.net.URL
import java.util.concurrent.TimeUnit

/**
 * Example WorkManager worker that drains doorstep's outbox when the network is back.
 *
 * The app's `Application` implements [DoorstepProvider] so the worker uses the same [Doorstep]
 * instance as the UI. Schedule with [UploadWorker.enqueue] after each hand-over and at start-up;
 * the worker reschedules itself with the core's backoff (exponential, full jitter) on failure.
 * Replace [post] with the app's own HTTP client (OkHttp, with its authentication) in production.
 */
class UploadWorker(context: Context, params: WorkerParameters) : CoroutineWorker(context, params) {

    interface DoorstepProvider {
        suspend fun doorstep(): Doorstep
    }

    override suspend fun doWork(): Result {
        val endpoint = inputData.getString(KEY_ENDPOINT) ?: return Result.failure()
        val provider = applicationContext as? DoorstepProvider ?: return Result.failure()
        val doorstep = provider.doorstep()
        val path = URL(endpoint).path
        val uploader = Uploader(doorstep) { body -> post(endpoint, body, doorstep.signRequest("POST", path, body)) }
        return when (val outcome = uploader.drain()) {
            is UploadOutcome.Done -> Result.success()
            is UploadOutcome.RetryLater -> {
                enqueue(applicationContext, endpoint, delayMs = outcome.after.toMillis())
                Result.success()
            }
            is UploadOutcome.Stuck -> Result.failure(workDataOf("rejected" to outcome.rejectedSeqs.size))
        }
    }

    private fun post(endpoint: String, body: ByteArray, signature: String): ByteArray {
        val connection = URL(endpoint).openConnection() as HttpURLConnection
        try {
            connection.requestMethod = "POST"
            connection.doOutput = true
            connection.connectTimeout = 15_000
            connection.readTimeout = 30_000
            connection.setRequestProperty("Content-Type", "application/json")
            connection.setRequestProperty("Device-Signature", signature)
            connection.outputStream.use { it.write(body) }
            if (connection.responseCode !in 200..299) error("HTTP ${connection.responseCode}")
            return connection.inputStream.use { it.readBytes() }
        } finally {
            connection.disconnect()
        }
    }

    companion object {
        private const val KEY_ENDPOINT = "endpoint"
        private const val UNIQUE_NAME = "doorstep-upload"

        fun enqueue(context: Context, endpoint: String, delayMs: Long = 0) {
            val request = OneTimeWorkRequestBuilder<UploadWorker>()
                .setInputData(workDataOf(KEY_ENDPOINT to endpoint))
                .setConstraints(Constraints.Builder().setRequiredNetworkType(NetworkType.CONNECTED).build())
                .setInitialDelay(delayMs, TimeUnit.MILLISECONDS)
                .build()
            WorkManager.getInstance(context).enqueueUniqueWork(UNIQUE_NAME, ExistingWorkPolicy.REPLACE, request)
        }
    }
}
