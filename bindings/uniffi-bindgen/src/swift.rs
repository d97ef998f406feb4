//! `uniffi-bindgen-swift`: Swift-specific generation (headers, module maps, sources) for packaging
//! an XCFramework; used by ios/build-xcframework.sh.

fn main() {
    uniffi::uniffi_bindgen_swift()
}
