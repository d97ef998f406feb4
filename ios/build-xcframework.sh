#!/usr/bin/env bash
# Builds DoorstepFFI.xcframework for iOS devices (arm64) and simulators (arm64 + x86_64), and the
# Swift bindings, on a Mac with Xcode and the Rust iOS targets:
#   rustup target add aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios
# Output: ios/DoorstepFFI.xcframework and ios/Sources/DoorstepFFI/DoorstepFFI.swift.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
export IPHONEOS_DEPLOYMENT_TARGET="${IPHONEOS_DEPLOYMENT_TARGET:-15.0}"

for target in aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios; do
  cargo build --locked -p doorstep-ffi --profile mobile --target "$target"
done

work=target/xcframework
rm -rf "$work" "$here/DoorstepFFI.xcframework"
mkdir -p "$work/headers" "$work/ios-sim"

# Headers and module map for the C part, Swift source for the package, via uniffi-bindgen-swift.
cargo build --quiet --locked -p uniffi-bindgen --bin uniffi-bindgen-swift
lib=target/aarch64-apple-ios/mobile/libdoorstep_ffi.a
target/debug/uniffi-bindgen-swift --headers --modulemap --module-name doorstep_ffiFFI \
  --modulemap-filename module.modulemap --config uniffi.toml "$lib" "$work/headers"
target/debug/uniffi-bindgen-swift --swift-sources --config uniffi.toml "$lib" "$work/swift"
cp "$work/swift/"*.swift "$here/Sources/DoorstepFFI/DoorstepFFI.swift"

# One fat static library for both simulator architectures.
lipo -create \
  target/aarch64-apple-ios-sim/mobile/libdoorstep_ffi.a \
  target/x86_64-apple-ios/mobile/libdoorstep_ffi.a \
  -output "$work/ios-sim/libdoorstep_ffi.a"

xcodebuild -create-xcframework \
  -library target/aarch64-apple-ios/mobile/libdoorstep_ffi.a -headers "$work/headers" \
  -library "$work/ios-sim/libdoorstep_ffi.a" -headers "$work/headers" \
  -output "$here/DoorstepFFI.xcframework"
echo "built $here/DoorstepFFI.xcframework"
