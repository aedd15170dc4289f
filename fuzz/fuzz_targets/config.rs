//! The configuration loader over arbitrary text: a configuration or a list of problems, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = s3crypt::Config::from_toml(text, std::path::Path::new("/nonexistent"), &|_| None);
    }
});
