//! ApiVersions, both ways: what the proxy advertises to clients (capped to what it
//! can decode, from [`crate::apis`]) and what it picks for its own requests (the
//! versions a broker offered, negotiated once per connection).

use std::collections::HashMap;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

use crate::apis;
use crate::codec;

/// Error code UNSUPPORTED_VERSION.
pub const UNSUPPORTED_VERSION: i16 = 35;

/// Intersects every advertised range with what the proxy can decode; APIs the proxy
/// relays opaquely keep the upstream's range. An empty intersection drops the API.
pub fn cap(m: &mut ApiVersionsResponse) {
    m.api_keys
        .retain_mut(|k| match apis::client_versions(k.api_key) {
            None => true,
            Some(ours) => {
                k.min_version = k.min_version.max(ours.min);
                k.max_version = k.max_version.min(ours.max);
                k.min_version <= k.max_version
            }
        });
}

/// The highest ApiVersions request version the proxy can decode the answer to.
pub fn max_request_version() -> i16 {
    ApiKey::ApiVersions.valid_versions().max
}

/// ApiVersions v0 with the given correlation id: understood by every broker, cheap to
/// answer. It stands in for a request the proxy answers itself, so that the answer
/// keeps its place among pipelined ones.
pub fn v0_request(corr: i32) -> Bytes {
    let mut f = bytes::BytesMut::with_capacity(14);
    f.extend_from_slice(&10i32.to_be_bytes());
    f.extend_from_slice(&(ApiKey::ApiVersions as i16).to_be_bytes());
    f.extend_from_slice(&0i16.to_be_bytes());
    f.extend_from_slice(&corr.to_be_bytes());
    f.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    f.freeze()
}

/// The client asked ApiVersions at a version the proxy cannot decode: the upstream was
/// asked v0 ([`v0_request`]), and the client gets v0 with UNSUPPORTED_VERSION and the
/// ranges both sides support, so it retries lower (what a broker does).
pub fn answer_too_new(corr: i32, upstream_v0: Bytes) -> anyhow::Result<Bytes> {
    let mut m: ApiVersionsResponse = codec::decode_body(0, upstream_v0.slice(8..))?;
    cap(&mut m);
    if let Some(av) = m
        .api_keys
        .iter_mut()
        .find(|k| k.api_key == ApiKey::ApiVersions as i16)
    {
        av.max_version = av.max_version.min(max_request_version());
    }
    m.error_code = UNSUPPORTED_VERSION;
    codec::response_frame(corr, 0, 0, &m)
}

/// The versions one broker offered, for the proxy's own requests on a connection.
#[derive(Debug, Clone, Default)]
pub struct Offered(HashMap<i16, (i16, i16)>);

impl Offered {
    pub fn new(m: &ApiVersionsResponse) -> Self {
        Offered(
            m.api_keys
                .iter()
                .map(|k| (k.api_key, (k.min_version, k.max_version)))
                .collect(),
        )
    }

    /// The newest version of `api` both the broker and the proxy speak, at most
    /// `at_most` (a caller's own ceiling, e.g. the last version naming topics by name).
    pub fn pick(&self, api: ApiKey, at_most: i16) -> anyhow::Result<i16> {
        let (min, max) = self
            .0
            .get(&(api as i16))
            .copied()
            .ok_or_else(|| anyhow::anyhow!("the broker does not offer {api:?}"))?;
        let ours = api.valid_versions();
        let v = max.min(ours.max).min(at_most);
        anyhow::ensure!(
            v >= min.max(ours.min),
            "no {api:?} version in common with the broker (it offers {min}..={max}, the proxy {}..={})",
            ours.min,
            ours.max.min(at_most)
        );
        Ok(v)
    }

    /// The range the broker offers for `api`, if any.
    pub fn range(&self, api: ApiKey) -> Option<(i16, i16)> {
        self.0.get(&(api as i16)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::api_versions_response::ApiVersion;

    fn offered(ranges: &[(ApiKey, i16, i16)]) -> ApiVersionsResponse {
        let mut m = ApiVersionsResponse::default();
        for (k, min, max) in ranges {
            m.api_keys.push(
                ApiVersion::default()
                    .with_api_key(*k as i16)
                    .with_min_version(*min)
                    .with_max_version(*max),
            );
        }
        m
    }

    #[test]
    fn cap_limits_looked_into_apis_and_leaves_opaque_ones() {
        let mut m = offered(&[
            (ApiKey::Metadata, 0, 99),
            (ApiKey::OffsetFetch, 0, 99),
            (ApiKey::CreateTopics, 0, 99),
        ]);
        cap(&mut m);
        let md = m.api_keys.iter().find(|k| k.api_key == 3).unwrap();
        assert_eq!(md.max_version, ApiKey::Metadata.valid_versions().max);
        let oc = m.api_keys.iter().find(|k| k.api_key == 9).unwrap();
        assert_eq!(oc.max_version, 99, "opaque APIs keep the broker's range");
        let ct = m.api_keys.iter().find(|k| k.api_key == 19).unwrap();
        assert_eq!(
            ct.max_version, 99,
            "the proxy's own APIs are not capped for clients"
        );
    }

    #[test]
    fn pick_takes_the_newest_common_version_under_a_ceiling() {
        let o = Offered::new(&offered(&[
            (ApiKey::Fetch, 4, 17),
            (ApiKey::Metadata, 0, 5),
        ]));
        assert_eq!(o.pick(ApiKey::Fetch, 11).unwrap(), 11);
        assert_eq!(o.pick(ApiKey::Metadata, i16::MAX).unwrap(), 5);
        let e = o.pick(ApiKey::Fetch, 3).unwrap_err().to_string();
        assert!(e.contains("no Fetch version in common"), "{e}");
        let e = o.pick(ApiKey::Produce, 9).unwrap_err().to_string();
        assert!(e.contains("does not offer Produce"), "{e}");
    }
}
