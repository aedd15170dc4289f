//! A request's query parameters, parsed once: typed accessors for the ones the proxy acts on, and the pairs as they
//! came (decoded), for classification and for the store client to filter through its allow-lists.

use crate::s3::error::RequestError;

/// `uploadId`: the multipart upload a request belongs to.
pub const UPLOAD_ID: &str = "uploadId";
/// `partNumber`: a part of an upload, or of an object to read.
pub const PART_NUMBER: &str = "partNumber";
/// `upload-id-marker`: where a ListMultipartUploads page starts.
pub const UPLOAD_ID_MARKER: &str = "upload-id-marker";
/// `versionId`: the object version a request names.
pub const VERSION_ID: &str = "versionId";

/// Largest part number (S3's limit).
const MAX_PART_NUMBER: u32 = 10_000;

/// The decoded query parameters of a request, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn new(pairs: Vec<(String, String)>) -> Query {
        Query { pairs }
    }

    /// Every parameter, as it came.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    pub fn has(&self, name: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == name)
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn upload_id(&self) -> Option<&str> {
        self.get(UPLOAD_ID)
    }

    pub fn version_id(&self) -> Option<&str> {
        self.get(VERSION_ID)
    }

    /// `partNumber`, 1..=10000, if given; anything else is S3's `InvalidArgument`.
    pub fn part_number(&self) -> Result<Option<u16>, RequestError> {
        let Some(v) = self.get(PART_NUMBER) else { return Ok(None) };
        v.parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_PART_NUMBER).contains(n))
            .and_then(|n| u16::try_from(n).ok())
            .map(Some)
            .ok_or(RequestError::InvalidArgument(
                "Part number must be an integer between 1 and 10000, inclusive".into(),
            ))
    }

    /// `partNumber`, required (an UploadPart).
    pub fn required_part_number(&self) -> Result<u16, RequestError> {
        self.part_number()?.ok_or(RequestError::InvalidArgument(
            "Part number must be an integer between 1 and 10000, inclusive".into(),
        ))
    }

    /// Points `uploadId` at another upload (the store's own ID behind the client's).
    pub fn set_upload_id(&mut self, id: &str) {
        self.map_upload_ids(UPLOAD_ID, |_| id.to_owned());
    }

    /// Rewrites every value of `name` (`uploadId`, `upload-id-marker`).
    pub fn map_upload_ids(&mut self, name: &str, f: impl Fn(&str) -> String) {
        for (k, v) in &mut self.pairs {
            if k == name {
                *v = f(v);
            }
        }
    }

    /// These parameters without `name`.
    pub fn without(&self, name: &str) -> Query {
        Query { pairs: self.pairs.iter().filter(|(k, _)| k != name).cloned().collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::AtBoundary;

    fn q(pairs: &[(&str, &str)]) -> Query {
        Query::new(pairs.iter().map(|(a, b)| ((*a).into(), (*b).into())).collect())
    }

    #[test]
    fn part_numbers_are_read_like_s3_reads_them() {
        assert_eq!(q(&[]).part_number().unwrap(), None);
        assert_eq!(q(&[("partNumber", "10000")]).part_number().unwrap(), Some(10_000));
        for bad in ["0", "10001", "-1", "x", "", "1.0"] {
            assert_eq!(q(&[("partNumber", bad)]).part_number().unwrap_err().code(), "InvalidArgument", "{bad}");
        }
        assert!(q(&[]).required_part_number().is_err());
    }

    #[test]
    fn the_upload_id_is_replaced_in_place_and_parameters_can_be_left_out() {
        let mut query = q(&[("partNumber", "2"), ("uploadId", "client"), ("x-id", "UploadPart")]);
        query.set_upload_id("store");
        assert_eq!(query.upload_id(), Some("store"));
        assert_eq!(query.pairs()[1], ("uploadId".to_owned(), "store".to_owned()));
        let less = query.without(PART_NUMBER);
        assert!(!less.has(PART_NUMBER) && less.has("x-id") && query.has(PART_NUMBER));
    }
}
