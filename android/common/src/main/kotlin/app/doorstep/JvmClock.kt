package app.doorstep

import app.doorstep.ffi.Clock
import java.time.Duration
import java.time.Instant

/**
 * The JVM's clocks. On Android prefer `AndroidClock`, whose monotonic reading keeps counting in deep
 * sleep; this one serves host tests, servers and tools.
 */
class JvmClock : Clock {
    override fun wallTime(): Instant = Instant.now()

    // On Linux and Android JVMs nanoTime counts from boot; a JVM with a negative origin reads 0.
    override fun monotonic(): Duration = Duration.ofNanos(System.nanoTime().coerceAtLeast(0))
}
