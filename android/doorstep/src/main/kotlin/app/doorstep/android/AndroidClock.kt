package app.doorstep.android

import android.os.SystemClock
import app.doorstep.ffi.Clock
import java.time.Duration
import java.time.Instant

/** Wall time, and `elapsedRealtime()` as the monotonic reading (keeps counting in deep sleep). */
class AndroidClock : Clock {
    override fun wallTime(): Instant = Instant.ofEpochMilli(System.currentTimeMillis())

    override fun monotonic(): Duration = Duration.ofMillis(SystemClock.elapsedRealtime())
}
