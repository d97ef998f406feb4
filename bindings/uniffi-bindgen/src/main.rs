//! `cargo run -p uniffi-bindgen -- generate --library <lib> --language kotlin ...`: the binding
//! generator at exactly the uniffi version the library was built with.

fn main() {
    uniffi::uniffi_bindgen_main()
}
