package app.doorstep.android

import android.os.SystemClock
import app.doorstep.ffi.Clock

/** Wall time, and `elapsedRealtime()` as the monotonic reading (keeps counting in deep sleep). */
class AndroidClock : Clock {
    override fun wallTimeMs(): Long = System.currentTimeMillis()

    override fun monotonicMs(): Long = SystemClock.elapsedRealtime()
}
