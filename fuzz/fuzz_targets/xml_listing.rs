//! The XML rewriters the proxy applies to store responses (listing sizes and ETags, attributes, ListBuckets
//! filtering, error documents) and the DeleteObjects keys it checks: arbitrary bytes give a result or None, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3crypt::s3::xml;

fuzz_target!(|data: &[u8]| {
    let _ = xml::rewrite_listing(data, &|_key, size| size.saturating_sub(32), &|_key, etag| format!("{etag}-1"));
    let _ = xml::rewrite_object_attributes(data, &|size| size / 2, &|size| size / 3);
    let _ = xml::insert_before_end(data, b"<Checksum/>");
    let _ = xml::filter_list_buckets(data, &|name| name.len() % 2 == 0);
    let _ = xml::parse_error(data);
    if let Some(keys) = xml::delete_keys(data) {
        for k in keys {
            let _ = s3crypt::s3::check_key(&k, true);
        }
    }
});
