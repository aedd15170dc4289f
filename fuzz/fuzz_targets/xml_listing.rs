//! The XML rewriters the proxy applies to store responses (listing sizes, ListBuckets filtering, error
//! documents) and the DeleteObjects keys it checks: arbitrary bytes give a result or None, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3crypt::s3::xml;

fuzz_target!(|data: &[u8]| {
    let _ = xml::rewrite_listing(data, &|_key, size| size.saturating_sub(32));
    let _ = xml::filter_list_buckets(data, &|name| name.len() % 2 == 0);
    let _ = xml::parse_error(data);
    if let Some(keys) = xml::delete_keys(data) {
        for k in keys {
            let _ = s3crypt::s3::check_key(&k, true);
        }
    }
});
