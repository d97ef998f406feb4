// The Android build of doorstep: one library module producing the AAR. Needs the Android SDK + NDK
// and cargo-ndk on the developer's workstation (see README.md). The host-JVM tests are a separate
// Maven build in host-tests/ that CI runs.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "doorstep-android"
include(":doorstep")
