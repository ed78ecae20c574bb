//! Reading request metadata the same way in every service.

use tonic::metadata::MetadataMap;

/// The client's address, as the gateway saw it, on calls it makes for a
/// browser (auth believes it only from `--trusted-proxies`).
pub const CLIENT_IP: &str = "padlock-client-ip";

/// The token of `authorization: Bearer <token>`, if present and well formed.
/// More than one `authorization` is no token at all: which one a proxy in
/// front looked at is unknown (RFC 6750 §2: one method, one token).
pub fn bearer_token(metadata: &MetadataMap) -> Option<&str> {
    let mut values = metadata.get_all("authorization").iter();
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
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
        md.append("authorization", "Bearer ghi.jkl".parse().unwrap());
        assert_eq!(bearer_token(&md), None);
    }
}
