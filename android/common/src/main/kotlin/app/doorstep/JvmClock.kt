package app.doorstep

import app.doorstep.ffi.Clock

/**
 * The JVM's clocks. On Android prefer `AndroidClock`, whose monotonic reading keeps counting in deep
 * sleep; this one serves host tests, servers and tools.
 */
class JvmClock : Clock {
    override fun wallTimeMs(): Long = System.currentTimeMillis()

    override fun monotonicMs(): Long = System.nanoTime() / 1_000_000
}
