// The doorstep AAR: the Rust core for arm64-v8a, armeabi-v7a and x86_64 (cargo-ndk, `mobile`
// profile), the UniFFI-generated Kotlin (android = true), the platform-neutral layer in ../common,
// and the Android pieces (Keystore vault, clock, WorkManager upload worker).
import org.gradle.api.tasks.Exec

plugins {
    id("com.android.library")
    id("org.jetbrains.kotlin.android")
}

val repoRoot: File = rootDir.parentFile
val rustJniLibs = layout.buildDirectory.dir("rustJniLibs")
val generatedKotlin = layout.buildDirectory.dir("generated/uniffi")

android {
    namespace = "app.doorstep"
    compileSdk = 35

    defaultConfig {
        minSdk = 24
        consumerProguardFiles("consumer-rules.pro")
    }

    sourceSets["main"].apply {
        java.srcDirs("src/main/kotlin", "../common/src/main/kotlin", generatedKotlin)
        jniLibs.srcDir(rustJniLibs)
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    // JNA as an AAR: it carries libjnidispatch.so for every Android ABI.
    implementation("net.java.dev.jna:jna:5.19.1@aar")
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.11.0")
    // The version android/robolectric proves (scripts/android-robolectric-tests.sh).
    implementation("androidx.work:work-runtime-ktx:2.11.2")
}

// Cross-compiles the core for the three ABIs into build/rustJniLibs/<abi>/libdoorstep_ffi.so.
val cargoNdk by tasks.registering(Exec::class) {
    description = "Builds libdoorstep_ffi.so for Android ABIs with cargo-ndk"
    workingDir = repoRoot
    // Packed relocations (APS2, Android 6+): the size budget in docs/bindings.md counts on them,
    // as scripts/measure-size.sh packs the host build's (RELR).
    environment("RUSTFLAGS", "-C link-arg=-Wl,--pack-dyn-relocs=android")
    commandLine(
        "cargo", "ndk",
        "-t", "arm64-v8a", "-t", "armeabi-v7a", "-t", "x86_64",
        "--platform", "24",
        "-o", rustJniLibs.get().asFile.absolutePath,
        "build", "--locked", "--profile", "mobile", "-p", "doorstep-ffi",
    )
}

// Generates the Kotlin bindings from the arm64 library (same metadata on every ABI).
val generateBindings by tasks.registering(Exec::class) {
    description = "Generates the UniFFI Kotlin bindings (android = true)"
    dependsOn(cargoNdk)
    workingDir = repoRoot
    val out = layout.buildDirectory.dir("generated/uniffi-out").get().asFile
    commandLine(
        "bash", "scripts/generate-bindings.sh", "--android",
        "target/aarch64-linux-android/mobile/libdoorstep_ffi.so", out.absolutePath,
    )
    doLast {
        project.copy {
            from(File(out, "kotlin"))
            into(generatedKotlin)
        }
    }
}

tasks.named("preBuild") { dependsOn(generateBindings) }
