package app.doorstep.android

import android.content.Context
import java.io.File

/**
 * Where the device database lives: in [Context.getNoBackupFilesDir], which Android never copies
 * into a cloud backup or a device-to-device transfer. Restoring an old copy of the database would
 * bring back attempts already spent at the door and receipts dispatch already acknowledged, so
 * the file must never travel (docs/security.md, "Backups"). The sealed secrets in it would not
 * open on another phone anyway: the Keystore key does not leave this one.
 */
object DoorstepFiles {
    const val DATABASE_NAME = "doorstep.db"

    fun databaseFile(context: Context): File = File(context.noBackupFilesDir, DATABASE_NAME)
}
