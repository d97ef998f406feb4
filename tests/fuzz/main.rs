//! The libFuzzer binary of `scripts/fuzz.sh`: runs the target of `doorstep_tests::fuzz` named by
//! `DOORSTEP_FUZZ_TARGET`.
#![no_main]

use std::sync::OnceLock;

use doorstep_tests::fuzz::TARGETS;

fn target() -> fn(&[u8]) {
    static TARGET: OnceLock<fn(&[u8])> = OnceLock::new();
    *TARGET.get_or_init(|| {
        let name = std::env::var("DOORSTEP_FUZZ_TARGET").unwrap_or_default();
        match TARGETS.iter().find(|(n, _)| *n == name) {
            Some((_, f)) => *f,
            None => {
                let names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
                eprintln!("set DOORSTEP_FUZZ_TARGET to one of: {}", names.join(", "));
                std::process::exit(2);
            }
        }
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| target()(data));
