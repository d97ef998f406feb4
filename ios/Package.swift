// swift-tools-version:6.0
// The doorstep Swift package: the UniFFI-generated bindings (DoorstepFFI), a Swift layer with
// async/await and a Keychain-backed KeyVault (Doorstep), and XCTests. Swift 6 language mode.
//
// The Rust core comes from DoorstepFFI.xcframework (build-xcframework.sh, on a Mac) when it is
// present. Without it (Linux, or a Mac running the tests on the host), the package links the
// host-built library: run ./prepare-host.sh first (scripts/swift-tests.sh does it all).
import Foundation
import PackageDescription

let xcframework = Context.packageDirectory + "/DoorstepFFI.xcframework"
let useHostLibrary = !FileManager.default.fileExists(atPath: xcframework)
let hostLibDir = Context.packageDirectory + "/../target/debug"
let ffiTarget: Target = useHostLibrary
    ? .systemLibrary(name: "doorstep_ffiFFI", path: "Sources/doorstep_ffiFFI")
    : .binaryTarget(name: "doorstep_ffiFFI", path: "DoorstepFFI.xcframework")
let testLinkerSettings: [LinkerSetting] = useHostLibrary
    ? [.unsafeFlags(["-L", hostLibDir, "-Xlinker", "-rpath", "-Xlinker", hostLibDir])]
    : []

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
