// swift-tools-version:5.9
// The doorstep Swift package: the UniFFI-generated bindings (DoorstepFFI), a Swift layer with
// async/await and a Keychain-backed KeyVault (Doorstep), and XCTests.
//
// On Apple platforms the Rust core comes from DoorstepFFI.xcframework (build-xcframework.sh).
// On Linux, `swift test` links the host-built library: run ./prepare-host.sh first.
import PackageDescription

#if os(Linux)
let ffiTarget: Target = .systemLibrary(name: "doorstep_ffiFFI", path: "Sources/doorstep_ffiFFI")
let hostLibDir = Context.packageDirectory + "/../target/debug"
let testLinkerSettings: [LinkerSetting] = [
    .unsafeFlags(["-L", hostLibDir, "-Xlinker", "-rpath", "-Xlinker", hostLibDir]),
]
#else
let ffiTarget: Target = .binaryTarget(name: "doorstep_ffiFFI", path: "DoorstepFFI.xcframework")
let testLinkerSettings: [LinkerSetting] = []
#endif

let package = Package(
    name: "Doorstep",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "Doorstep", targets: ["Doorstep"]),
    ],
    targets: [
        ffiTarget,
        // DoorstepFFI.swift is generated (scripts/generate-bindings.sh) and copied here by
        // build-xcframework.sh or prepare-host.sh.
        .target(name: "DoorstepFFI", dependencies: ["doorstep_ffiFFI"], path: "Sources/DoorstepFFI"),
        .target(name: "Doorstep", dependencies: ["DoorstepFFI"], path: "Sources/Doorstep"),
        .testTarget(
            name: "DoorstepTests",
            dependencies: ["Doorstep"],
            path: "Tests/DoorstepTests",
            linkerSettings: testLinkerSettings
        ),
    ]
)
