package app.doorstep.android

import android.os.SystemClock
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.RobolectricTestRunner
import org.robolectric.annotation.Config
import org.robolectric.shadows.ShadowSystemClock
import java.time.Duration
import kotlin.test.assertEquals
import kotlin.test.assertTrue

@RunWith(RobolectricTestRunner::class)
@Config(sdk = [34])
class AndroidClockTest {
    @Test
    fun `the monotonic reading is elapsedRealtime and keeps counting`() {
        val clock = AndroidClock()
        val before = clock.monotonic().toMillis()
        assertEquals(SystemClock.elapsedRealtime(), before)
        ShadowSystemClock.advanceBy(Duration.ofMinutes(7))
        assertEquals(before + 7 * 60_000, clock.monotonic().toMillis())
    }

    @Test
    fun `the wall reading is the system's`() {
        val wall = AndroidClock().wallTime().toEpochMilli()
        assertTrue(kotlin.math.abs(wall - System.currentTimeMillis()) < 5_000, "$wall")
    }
}
