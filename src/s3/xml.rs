//! S3 XML: reading upstream error documents and results, rewriting listings (plaintext sizes), filtering
//! ListBuckets for clients limited to some buckets, and writing small result documents. Readers work on byte ranges so that what the proxy does
//! not change is passed on byte for byte.

use bytes::Bytes;
use quick_xml::Reader;
use quick_xml::escape::{escape, resolve_predefined_entity};
use quick_xml::events::Event;

/// Appends the text of a text or entity event to `out`.
pub(crate) fn push_text(ev: &Event<'_>, out: &mut String) {
    match ev {
        Event::Text(t) => {
            if let Ok(s) = t.decode() {
                out.push_str(&s);
            }
        }
        Event::CData(t) => {
            if let Ok(s) = t.decode() {
                out.push_str(&s);
            }
        }
        Event::GeneralRef(r) => {
            if let Ok(Some(c)) = r.resolve_char_ref() {
                out.push(c);
            } else if let Ok(name) = r.decode()
                && let Some(v) = resolve_predefined_entity(&name)
            {
                out.push_str(v);
            }
        }
        _ => {}
    }
}

/// `Code` and `Message` of an S3 `<Error>` document, if the body is one.
pub fn parse_error(body: &[u8]) -> Option<(String, String)> {
    let mut reader = Reader::from_reader(body);
    let mut path: Vec<Vec<u8>> = Vec::new();
    let (mut code, mut message) = (None::<String>, None::<String>);
    loop {
        let ev = reader.read_event().ok()?;
        match &ev {
            Event::Start(e) => path.push(e.local_name().as_ref().to_vec()),
            Event::End(_) => {
                path.pop();
            }
            Event::Eof => break,
            Event::Text(_) | Event::CData(_) | Event::GeneralRef(_) if path.len() == 2 && path[0] == b"Error" => {
                let slot = match path[1].as_slice() {
                    b"Code" => &mut code,
                    b"Message" => &mut message,
                    _ => continue,
                };
                push_text(&ev, slot.get_or_insert_with(String::new));
            }
            _ => {}
        }
    }
    Some((code?, message.unwrap_or_default()))
}

/// Removes `<Bucket>` entries of a ListAllMyBucketsResult whose `<Name>` is not allowed.
pub fn filter_list_buckets(body: &[u8], allowed: &dyn Fn(&str) -> bool) -> Option<Vec<u8>> {
    let mut reader = Reader::from_reader(body);
    let mut depth = 0usize;
    let mut drop_ranges: Vec<(usize, usize)> = Vec::new();
    let mut bucket_start: Option<usize> = None;
    let mut in_name = false;
    let mut name = String::new();
    loop {
        let before = usize::try_from(reader.buffer_position()).ok()?;
        let ev = reader.read_event().ok()?;
        match &ev {
            Event::Start(e) => {
                depth += 1;
                let local = e.local_name();
                if depth == 3 && local.as_ref() == b"Bucket" {
                    bucket_start = Some(before);
                    name.clear();
                } else if depth == 4 && bucket_start.is_some() && local.as_ref() == b"Name" {
                    in_name = true;
                }
            }
            Event::End(e) => {
                if depth == 3 && e.local_name().as_ref() == b"Bucket" {
                    let after = usize::try_from(reader.buffer_position()).ok()?;
                    if let Some(start) = bucket_start.take()
                        && !allowed(&name)
                    {
                        drop_ranges.push((start, after));
                    }
                }
                in_name = false;
                depth = depth.checked_sub(1)?;
            }
            Event::Text(_) | Event::CData(_) | Event::GeneralRef(_) if in_name => push_text(&ev, &mut name),
            Event::Eof => break,
            _ => {}
        }
    }
    let mut out = Vec::with_capacity(body.len());
    let mut pos = 0;
    for (start, end) in drop_ranges {
        out.extend_from_slice(&body[pos..start]);
        pos = end;
    }
    out.extend_from_slice(&body[pos..]);
    Some(out)
}

/// Rewrites a listing (ListObjects, ListObjectsV2, ListObjectVersions, ListParts): every `<Size>` of an entry is
/// passed through `size` (ciphertext → plaintext), every `<ETag>` through `etag` (both with the entry's key), and
/// checksum elements, which describe the stored ciphertext, are removed. Everything else is kept byte for byte.
pub fn rewrite_listing(
    body: &[u8],
    size: &dyn Fn(&str, u64) -> u64,
    etag: &dyn Fn(&str, &str) -> String,
) -> Option<Vec<u8>> {
    const ENTRIES: [&[u8]; 5] = [b"Contents", b"Version", b"DeleteMarker", b"Part", b"Upload"];
    const DROPPED: [&[u8]; 8] = [
        b"ChecksumAlgorithm",
        b"ChecksumType",
        b"ChecksumCRC32",
        b"ChecksumCRC32C",
        b"ChecksumCRC64NVME",
        b"ChecksumSHA1",
        b"ChecksumSHA256",
        b"Checksum",
    ];
    let mut reader = Reader::from_reader(body);
    let mut path: Vec<Vec<u8>> = Vec::new();
    // (start, end, replacement)
    let mut edits: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    let mut drop_start: Option<(usize, usize)> = None; // (start offset, depth)
    let mut size_text: Option<(usize, String)> = None;
    let mut etag_text: Option<(usize, String)> = None;
    // The entry's key (URL-decoded), read before its size.
    let mut key_text: Option<String> = None;
    let mut entry_key = String::new();
    loop {
        let before = usize::try_from(reader.buffer_position()).ok()?;
        let ev = reader.read_event().ok()?;
        match &ev {
            Event::Start(e) => {
                let name = e.local_name().as_ref().to_vec();
                let in_entry = path.len() == 2 && ENTRIES.contains(&path[1].as_slice());
                if in_entry && drop_start.is_none() && DROPPED.contains(&name.as_slice()) {
                    drop_start = Some((before, path.len()));
                }
                if in_entry && name == b"Size" {
                    size_text = Some((usize::try_from(reader.buffer_position()).ok()?, String::new()));
                }
                if in_entry && name == b"ETag" {
                    etag_text = Some((usize::try_from(reader.buffer_position()).ok()?, String::new()));
                }
                if in_entry && name == b"Key" {
                    key_text = Some(String::new());
                }
                if path.len() == 1 && ENTRIES.contains(&name.as_slice()) {
                    entry_key.clear();
                }
                path.push(name);
            }
            Event::Empty(e) => {
                let in_entry = path.len() == 2 && ENTRIES.contains(&path[1].as_slice());
                if in_entry && DROPPED.contains(&e.local_name().as_ref()) {
                    edits.push((before, usize::try_from(reader.buffer_position()).ok()?, Vec::new()));
                }
            }
            Event::End(_) => {
                path.pop();
                let after = usize::try_from(reader.buffer_position()).ok()?;
                if let Some((start, depth)) = drop_start
                    && path.len() == depth
                {
                    edits.push((start, after, Vec::new()));
                    drop_start = None;
                }
                if let Some(k) = key_text.take() {
                    entry_key = String::from_utf8_lossy(&crate::util::uri::percent_decode(k.as_bytes())).into_owned();
                }
                if let Some((text_start, text)) = etag_text.take() {
                    let shown = etag(&entry_key, text.trim());
                    edits.push((text_start, before, escape(&shown).into_owned().into_bytes()));
                }
                if let Some((text_start, text)) = size_text.take() {
                    let text_end = before;
                    let replacement =
                        text.trim().parse::<u64>().ok().map(|n| size(&entry_key, n).to_string().into_bytes());
                    if let Some(r) = replacement {
                        edits.push((text_start, text_end, r));
                    }
                }
            }
            Event::Text(_) | Event::GeneralRef(_) => {
                if let Some((_, text)) = size_text.as_mut() {
                    push_text(&ev, text);
                }
                if let Some((_, text)) = etag_text.as_mut() {
                    push_text(&ev, text);
                }
                if let Some(k) = key_text.as_mut() {
                    push_text(&ev, k);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Some(apply_edits(body, edits))
}

/// `body` with `element` inserted just before the end tag of its root element.
pub fn insert_before_end(body: &[u8], element: &[u8]) -> Option<Vec<u8>> {
    let end = body.windows(2).rposition(|w| w == b"</")?;
    let mut out = Vec::with_capacity(body.len() + element.len());
    out.extend_from_slice(&body[..end]);
    out.extend_from_slice(element);
    out.extend_from_slice(&body[end..]);
    Some(out)
}

/// Rewrites a GetObjectAttributes response: `ObjectSize` through `object_size`, each `ObjectParts/Part/Size`
/// through `part_size`; `Checksum` elements (of ciphertext) removed. Everything else is kept byte for byte.
pub fn rewrite_object_attributes(
    body: &[u8],
    object_size: &dyn Fn(u64) -> u64,
    part_size: &dyn Fn(u64) -> u64,
) -> Option<Vec<u8>> {
    let mut reader = Reader::from_reader(body);
    let mut path: Vec<Vec<u8>> = Vec::new();
    let mut edits: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    let mut drop_start: Option<(usize, usize)> = None;
    let mut text: Option<(usize, String, bool)> = None; // (start, text, is the object size)
    loop {
        let before = usize::try_from(reader.buffer_position()).ok()?;
        let ev = reader.read_event().ok()?;
        match &ev {
            Event::Start(e) => {
                let name = e.local_name().as_ref().to_vec();
                let is_checksum = name.starts_with(b"Checksum");
                let in_part = path.len() == 3 && path[1] == b"ObjectParts" && path[2] == b"Part";
                if drop_start.is_none() && is_checksum && (path.len() == 1 || in_part) {
                    drop_start = Some((before, path.len()));
                }
                let after = usize::try_from(reader.buffer_position()).ok()?;
                if path.len() == 1 && name == b"ObjectSize" {
                    text = Some((after, String::new(), true));
                } else if in_part && name == b"Size" {
                    text = Some((after, String::new(), false));
                }
                path.push(name);
            }
            Event::Empty(e) if e.local_name().as_ref().starts_with(b"Checksum") => {
                edits.push((before, usize::try_from(reader.buffer_position()).ok()?, Vec::new()));
            }
            Event::End(_) => {
                path.pop();
                let after = usize::try_from(reader.buffer_position()).ok()?;
                if let Some((start, depth)) = drop_start
                    && path.len() == depth
                {
                    edits.push((start, after, Vec::new()));
                    drop_start = None;
                }
                if let Some((start, t, whole)) = text.take()
                    && let Ok(n) = t.trim().parse::<u64>()
                {
                    let v = if whole { object_size(n) } else { part_size(n) };
                    edits.push((start, before, v.to_string().into_bytes()));
                }
            }
            Event::Text(_) | Event::GeneralRef(_) => {
                if let Some((_, t, _)) = text.as_mut() {
                    push_text(&ev, t);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Some(apply_edits(body, edits))
}

/// Replaces the text of the direct child `name` of each record at `record` (a path from the root, as in
/// [`records`]): `value(i)` gives the new text of the i-th record's, `None` keeps it.
pub fn replace_in_records(
    body: &[u8],
    record: &[&str],
    name: &str,
    value: &dyn Fn(usize) -> Option<String>,
) -> Option<Vec<u8>> {
    let mut reader = Reader::from_reader(body);
    let mut path: Vec<Vec<u8>> = Vec::new();
    let mut edits: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    let mut index: Option<usize> = None;
    let mut seen = 0usize;
    let mut text_start: Option<usize> = None;
    let at_record =
        |path: &[Vec<u8>]| path.len() == record.len() && path.iter().zip(record).all(|(a, b)| a == b.as_bytes());
    loop {
        let before = usize::try_from(reader.buffer_position()).ok()?;
        match reader.read_event().ok()? {
            Event::Start(e) => {
                path.push(e.local_name().as_ref().to_vec());
                if at_record(&path) {
                    index = Some(seen);
                    seen += 1;
                } else if index.is_some() && path.len() == record.len() + 1 && path[record.len()] == name.as_bytes() {
                    text_start = Some(usize::try_from(reader.buffer_position()).ok()?);
                }
            }
            Event::End(_) => {
                if let Some(start) = text_start.take()
                    && let Some(v) = index.and_then(value)
                {
                    edits.push((start, before, escape(&v).into_owned().into_bytes()));
                }
                if at_record(&path) {
                    index = None;
                }
                path.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if path.is_empty() && !record.is_empty() { Some(apply_edits(body, edits)) } else { None }
}

/// Replaces the byte ranges `(start, end)` of `body` with their replacements; ranges inside an earlier one (an
/// element already dropped) are skipped.
fn apply_edits(body: &[u8], mut edits: Vec<(usize, usize, Vec<u8>)>) -> Vec<u8> {
    edits.sort_by_key(|e| e.0);
    let mut out = Vec::with_capacity(body.len());
    let mut pos = 0;
    for (start, end, replacement) in edits {
        if start < pos {
            continue;
        }
        out.extend_from_slice(&body[pos..start]);
        out.extend_from_slice(&replacement);
        pos = end;
    }
    out.extend_from_slice(&body[pos..]);
    out
}

/// The `(name, text)` children of one element.
pub type Record = Vec<(String, String)>;

/// The records at `record` (a path of local names from the root, e.g. `["ListPartsResult", "Part"]`): for each,
/// the text of its direct children, in order. Also returns the text of the root's direct children (paging
/// fields such as `IsTruncated`). `None` if the body is not well-formed XML or its root is not `record[0]`.
pub fn records(body: &[u8], record: &[&str]) -> Option<(Vec<Record>, Record)> {
    let mut reader = Reader::from_reader(body);
    let mut path: Vec<String> = Vec::new();
    let mut out: Vec<Vec<(String, String)>> = Vec::new();
    let mut top: Vec<(String, String)> = Vec::new();
    let mut field: Option<(String, String)> = None;
    let mut saw_root = false;
    loop {
        let ev = reader.read_event().ok()?;
        match &ev {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if path.is_empty() {
                    if name != record[0] || saw_root {
                        return None;
                    }
                    saw_root = true;
                }
                path.push(name);
                if path.len() == record.len() && path.iter().zip(record).all(|(a, b)| a == b) {
                    out.push(Vec::new());
                }
                let in_record = path.len() == record.len() + 1 && path.iter().zip(record).all(|(a, b)| a == b);
                if in_record || path.len() == 2 {
                    field = Some((path[path.len() - 1].clone(), String::new()));
                }
            }
            Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if path.is_empty() {
                    return (name == record[0] && !saw_root).then(|| (Vec::new(), Vec::new()));
                }
                let in_record = path.len() == record.len() && path.iter().zip(record).all(|(a, b)| a == b);
                if in_record && let Some(r) = out.last_mut() {
                    r.push((name, String::new()));
                } else if path.len() == 1 {
                    top.push((name, String::new()));
                }
            }
            Event::End(_) => {
                let closed = path.len();
                path.pop();
                if let Some((name, text)) = field.take() {
                    let in_record = closed == record.len() + 1;
                    if in_record && path.iter().zip(record).all(|(a, b)| a == b) {
                        if let Some(r) = out.last_mut() {
                            r.push((name, text));
                        }
                    } else if closed == 2 {
                        top.push((name, text));
                    }
                }
            }
            Event::Text(_) | Event::CData(_) | Event::GeneralRef(_) => {
                if let Some((_, text)) = field.as_mut() {
                    push_text(&ev, text);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    saw_root.then_some((out, top))
}

/// The keys a DeleteObjects body names (`<Delete><Object><Key>`), exactly as written (not trimmed); `None` if it is
/// not such a document.
pub fn delete_keys(body: &[u8]) -> Option<Vec<String>> {
    let (records, _) = records(body, &["Delete", "Object"])?;
    Some(records.iter().filter_map(|r| r.iter().find(|(n, _)| n == "Key").map(|(_, v)| v.clone())).collect())
}

/// The text of field `name` in a record from [`records`].
pub fn field<'a>(record: &'a [(String, String)], name: &str) -> Option<&'a str> {
    record.iter().find(|(n, _)| n == name).map(|(_, v)| v.trim())
}

/// Replaces the text of every element at `path` (local names from the root) with `value` (escaped here).
pub fn replace_text(body: &[u8], path: &[&str], value: &str) -> Option<Vec<u8>> {
    let mut reader = Reader::from_reader(body);
    let mut cur: Vec<Vec<u8>> = Vec::new();
    let mut edits: Vec<(usize, usize)> = Vec::new();
    let mut start: Option<usize> = None;
    loop {
        let before = usize::try_from(reader.buffer_position()).ok()?;
        let ev = reader.read_event().ok()?;
        match &ev {
            Event::Start(e) => {
                cur.push(e.local_name().as_ref().to_vec());
                if cur.len() == path.len() && cur.iter().zip(path).all(|(a, b)| a == b.as_bytes()) {
                    start = Some(usize::try_from(reader.buffer_position()).ok()?);
                }
            }
            Event::End(_) => {
                if let Some(s) = start.take() {
                    edits.push((s, before));
                }
                cur.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let escaped = escape(value);
    let mut out = Vec::with_capacity(body.len() + 64);
    let mut pos = 0;
    for (s, e) in edits {
        out.extend_from_slice(&body[pos..s]);
        out.extend_from_slice(escaped.as_bytes());
        pos = e;
    }
    out.extend_from_slice(&body[pos..]);
    Some(out)
}

/// Writes an XML document: `<root xmlns="...">` then `(name, value)` children (escaped), nested one level by
/// `groups` (each group is an element name and its children).
pub fn document(root: &str, fields: &[(&str, String)], groups: &[(&str, Vec<(&str, String)>)]) -> Bytes {
    let mut s = String::with_capacity(256 + groups.len() * 96);
    s.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<");
    s.push_str(root);
    s.push_str(" xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    for (name, value) in fields {
        crate::util::push_xml_element(&mut s, name, value);
    }
    for (name, children) in groups {
        s.push('<');
        s.push_str(name);
        s.push('>');
        for (n, v) in children {
            crate::util::push_xml_element(&mut s, n, v);
        }
        s.push_str("</");
        s.push_str(name);
        s.push('>');
    }
    s.push_str("</");
    s.push_str(root);
    s.push('>');
    Bytes::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_error_bodies_are_not_parsed_as_errors() {
        assert_eq!(parse_error(b"<ListBucketResult><Code>x</Code></ListBucketResult>"), None);
        assert_eq!(parse_error(b"not xml at all"), None);
    }

    #[test]
    fn texts_in_records_are_replaced_by_index() {
        let body = b"<R><U><K>a</K><Id>x</Id></U><U><K>b</K><Id>y</Id></U><Id>top</Id></R>";
        let out = replace_in_records(body, &["R", "U"], "Id", &|i| (i == 1).then(|| "n<1>".to_owned())).unwrap();
        assert_eq!(out, b"<R><U><K>a</K><Id>x</Id></U><U><K>b</K><Id>n&lt;1&gt;</Id></U><Id>top</Id></R>");
    }

    #[test]
    fn listing_sizes_are_rewritten_and_checksums_dropped() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><KeyCount>2</KeyCount><Contents><Key>Size</Key><Size>100</Size><ETag>"e"</ETag><ChecksumAlgorithm>CRC32</ChecksumAlgorithm><ChecksumType>FULL_OBJECT</ChecksumType></Contents><Contents><Key>b</Key><Size> 7 </Size></Contents></ListBucketResult>"#;
        let out = rewrite_listing(body, &|k, n| if k == "b" { n } else { n - 1 }, &|_, e| format!("{e}x")).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.contains("<Key>Size</Key><Size>99</Size><ETag>&quot;e&quot;x</ETag></Contents>"),
            "ETags rewritten: {s}"
        );
        assert!(s.contains("<Key>b</Key><Size>7</Size>"), "the size function sees each entry's key: {s}");
        assert!(!s.contains("Checksum"), "{s}");
        assert!(s.contains("<KeyCount>2</KeyCount>"));
    }

    #[test]
    fn records_and_top_level_fields_are_read_with_entities_resolved() {
        let body = br#"<?xml version="1.0"?><ListPartsResult xmlns="x"><Bucket>b</Bucket><IsTruncated>true</IsTruncated><Part><PartNumber>1</PartNumber><ETag>&quot;e1&quot;</ETag><Size>10</Size></Part><Part><PartNumber>2</PartNumber><ETag>"e2"</ETag><Size>5</Size><ChecksumCRC32/></Part></ListPartsResult>"#;
        let (parts, top) = records(body, &["ListPartsResult", "Part"]).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(field(&parts[0], "ETag"), Some("\"e1\""));
        assert_eq!(field(&parts[1], "Size"), Some("5"));
        assert_eq!(field(&top, "IsTruncated"), Some("true"));
        assert!(records(body, &["Other", "Part"]).is_none());
        let e = records(b"<CompleteMultipartUpload/>", &["CompleteMultipartUpload", "Part"]).unwrap();
        assert!(e.0.is_empty());
    }

    #[test]
    fn element_text_is_replaced_in_place_and_documents_are_escaped() {
        let body = b"<R><UploadId>raw</UploadId><X>1</X></R>";
        let out = replace_text(body, &["R", "UploadId"], "s3c1.a&b").unwrap();
        assert_eq!(out, b"<R><UploadId>s3c1.a&amp;b</UploadId><X>1</X></R>");
        let d = document("R", &[("Key", "a<b".into())], &[("Part", vec![("N", "1".into())])]);
        let s = String::from_utf8(d.to_vec()).unwrap();
        assert!(s.ends_with("<Key>a&lt;b</Key><Part><N>1</N></Part></R>"), "{s}");
    }

    #[test]
    fn object_attributes_get_plaintext_sizes_and_lose_ciphertext_checksums() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<GetObjectAttributesResponse xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><ETag>e</ETag><Checksum><ChecksumCRC32>x</ChecksumCRC32></Checksum><ObjectParts><TotalPartsCount>2</TotalPartsCount><Part><PartNumber>1</PartNumber><Size>100</Size><ChecksumCRC32>y</ChecksumCRC32></Part><Part><PartNumber>2</PartNumber><Size>50</Size></Part></ObjectParts><ObjectSize>150</ObjectSize></GetObjectAttributesResponse>"#;
        let out = rewrite_object_attributes(body, &|n| n - 10, &|n| n - 1).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("<ObjectSize>140</ObjectSize>"), "{s}");
        assert!(s.contains("<Size>99</Size>") && s.contains("<Size>49</Size>"), "{s}");
        assert!(!s.contains("Checksum"), "{s}");
        assert!(s.contains("<TotalPartsCount>2</TotalPartsCount>"));
    }

    #[test]
    fn list_buckets_keeps_only_allowed_buckets_byte_for_byte() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListAllMyBucketsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Owner><ID>o</ID></Owner><Buckets><Bucket><Name>keep</Name><CreationDate>2020</CreationDate></Bucket><Bucket><Name>drop</Name><CreationDate>2021</CreationDate></Bucket></Buckets></ListAllMyBucketsResult>"#;
        let out = filter_list_buckets(body, &|n| n == "keep").unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("<Name>keep</Name>"));
        assert!(!s.contains("drop"));
        assert!(s.ends_with("</Buckets></ListAllMyBucketsResult>"));
    }
}
