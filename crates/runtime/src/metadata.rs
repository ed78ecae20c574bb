//! Reading request metadata the same way in every service.

use tonic::metadata::MetadataMap;

/// The token of `authorization: Bearer <token>`, if present and well formed.
pub fn bearer_token(metadata: &MetadataMap) -> Option<&str> {
    let value = metadata.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bearer_authorization_yields_a_token() {
        let mut md = MetadataMap::new();
        assert_eq!(bearer_token(&md), None);
        md.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&md), None);
        md.insert("authorization", "bearer  abc.def ".parse().unwrap());
        assert_eq!(bearer_token(&md), Some("abc.def"));
    }
}
