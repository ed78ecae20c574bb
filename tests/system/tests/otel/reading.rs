//! TOTP by hand, and reading OTLP spans, metrics and logs.

use super::*;

// ---------------------------------------------------------------- TOTP

pub fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut value, mut out) = (0u32, 0u32, Vec::new());
    for c in text.trim_end_matches('=').bytes() {
        let digit = ALPHABET
            .iter()
            .position(|&a| a == c.to_ascii_uppercase())
            .unwrap();
        value = (value << 5) | u32::try_from(digit).unwrap();
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((value >> bits) & 0xff).unwrap());
        }
    }
    out
}

/// RFC 6238 TOTP with HMAC-SHA1, six digits, at Unix time `at`.
pub fn totp(secret_b32: &str, at: u64) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&base32_decode(secret_b32)).unwrap();
    mac.update(&(at / STEP_SECS).to_be_bytes());
    let hash = mac.finalize().into_bytes();
    // RFC 4226 §5.3: dynamic truncation.
    let offset = usize::from(hash[hash.len() - 1] & 0x0f);
    let binary = u32::from_be_bytes([
        hash[offset] & 0x7f,
        hash[offset + 1],
        hash[offset + 2],
        hash[offset + 3],
    ]);
    format!("{:06}", binary % 1_000_000)
}

pub fn unix_now() -> u64 {
    std::time::UNIX_EPOCH.elapsed().unwrap().as_secs()
}

/// Six digits that are no code of `secret_b32` within two steps of now.
pub fn a_wrong_code(secret_b32: &str) -> String {
    let now = unix_now();
    let near: Vec<_> = (0..5)
        .map(|i| totp(secret_b32, now + i * STEP_SECS - 2 * STEP_SECS))
        .collect();
    ["000000", "123456", "654321", "999999"]
        .into_iter()
        .find(|c| !near.iter().any(|n| n == c))
        .unwrap()
        .to_owned()
}

#[test]
pub fn totp_matches_rfc_6238_appendix_b() {
    // The SHA1 seed "12345678901234567890" in base32; the test vectors'
    // last six of eight digits.
    let seed = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    assert_eq!(totp(seed, 59), "287082");
    assert_eq!(totp(seed, 1_111_111_109), "081804");
    assert_eq!(totp(seed, 2_000_000_000), "279037");
}

// ---------------------------------------------------------------- reading OTLP

pub fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

pub fn str_attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attr(attributes, key)? {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

pub fn int_attr(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attributes, key)? {
        any_value::Value::IntValue(i) => Some(*i),
        any_value::Value::StringValue(s) => s.parse().ok(),
        _ => None,
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every string in `value`, however nested.
pub fn strings_in(value: Option<&AnyValue>, out: &mut Vec<String>) {
    let Some(value) = value.and_then(|v| v.value.as_ref()) else {
        return;
    };
    match value {
        any_value::Value::StringValue(s) => out.push(s.clone()),
        any_value::Value::ArrayValue(array) => {
            for v in &array.values {
                strings_in(Some(v), out);
            }
        }
        any_value::Value::KvlistValue(list) => {
            for kv in &list.values {
                out.push(kv.key.clone());
                strings_in(kv.value.as_ref(), out);
            }
        }
        any_value::Value::BytesValue(b) => out.push(String::from_utf8_lossy(b).into_owned()),
        _ => {}
    }
}

pub fn strings_of(attributes: &[KeyValue], out: &mut Vec<String>) {
    for kv in attributes {
        out.push(kv.key.clone());
        strings_in(kv.value.as_ref(), out);
    }
}

/// Every string a span carries: name, attributes, events, links, status.
pub fn span_strings(span: &Span) -> Vec<String> {
    let mut out = vec![span.name.clone()];
    strings_of(&span.attributes, &mut out);
    for event in &span.events {
        out.push(event.name.clone());
        strings_of(&event.attributes, &mut out);
    }
    for link in &span.links {
        strings_of(&link.attributes, &mut out);
    }
    if let Some(status) = &span.status {
        out.push(status.message.clone());
    }
    out
}

/// Every string a metric carries: name, description, point attributes.
pub fn metric_strings(metric: &Metric) -> Vec<String> {
    let mut out = vec![metric.name.clone(), metric.description.clone()];
    match &metric.data {
        Some(metric::Data::Sum(sum)) => {
            for point in &sum.data_points {
                strings_of(&point.attributes, &mut out);
            }
        }
        Some(metric::Data::Histogram(histogram)) => {
            for point in &histogram.data_points {
                strings_of(&point.attributes, &mut out);
            }
        }
        Some(metric::Data::Gauge(gauge)) => {
            for point in &gauge.data_points {
                strings_of(&point.attributes, &mut out);
            }
        }
        _ => {}
    }
    out
}

/// Whether `text` holds `digits` as a whole number (not inside a longer run
/// of digits, where a six-digit code would turn up by chance).
pub fn holds_number(text: &str, digits: &str) -> bool {
    text.match_indices(digits).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + digits.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

/// Whether `text` holds something shaped like a JWS compact token: `eyJ`
/// (base64url of `{"`) opening a base64url run, a dot, another run and a
/// dot. A bare `eyJ` is not enough: a key id (a base64url SHA-256 thumbprint,
/// which the JWKS log line names) holds one by chance in about 1 of 6,400
/// keys.
pub fn holds_jwt(text: &str) -> bool {
    let base64url = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices("eyJ").any(|(at, _)| {
        let mut parts = text[at..].split('.');
        let header = parts.next().unwrap_or_default();
        let payload = parts.next();
        header.chars().all(base64url)
            && payload.is_some_and(|p| !p.is_empty() && p.chars().all(base64url))
            && parts.next().is_some()
    })
}

#[test]
pub fn a_jwt_is_found_and_a_key_id_is_not() {
    assert!(holds_jwt(
        "token=eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln end"
    ));
    assert!(holds_jwt("eyJhbGciOiJub25lIn0.e30."));
    assert!(!holds_jwt("kids=[\"3eyJq0fHnW-Jx_abc\"] JWKS fetched"));
    assert!(!holds_jwt("eyJ alone. and more."));
}

/// The largest value of `name` from `service` whose point has every
/// attribute in `want` (cumulative sums: the last export holds the total);
/// for a histogram, its count.
pub fn metric_value(
    metrics: &[Exported<Metric>],
    service: &str,
    name: &str,
    want: &[(&str, &str)],
) -> Option<i64> {
    let matches = |attributes: &[KeyValue]| {
        want.iter().all(|(k, v)| match attr(attributes, k) {
            Some(any_value::Value::StringValue(s)) => s == v,
            Some(any_value::Value::IntValue(i)) => i.to_string() == *v,
            _ => false,
        })
    };
    let mut best = None;
    for exported in metrics
        .iter()
        .filter(|m| m.service == service && m.item.name == name)
    {
        let values: Vec<i64> = match &exported.item.data {
            Some(metric::Data::Sum(sum)) => sum
                .data_points
                .iter()
                .filter(|p| matches(&p.attributes))
                .filter_map(|p| match p.value {
                    Some(number_data_point::Value::AsInt(i)) => Some(i),
                    _ => None,
                })
                .collect(),
            Some(metric::Data::Histogram(histogram)) => histogram
                .data_points
                .iter()
                .filter(|p| matches(&p.attributes))
                .map(|p| i64::try_from(p.count).unwrap())
                .collect(),
            _ => Vec::new(),
        };
        best = values.into_iter().chain(best).max();
    }
    best
}

pub async fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + ARRIVAL_TIMEOUT;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The one span of `service` in `trace` named `name`, whose parent is
/// `parent` (a span id), if given.
pub fn one_span<'a>(
    spans: &'a [Exported<Span>],
    trace: &[u8],
    service: &str,
    name: &str,
    parent: Option<&[u8]>,
) -> &'a Span {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| s.service == service && s.item.trace_id == trace && s.item.name == name)
        .filter(|s| parent.is_none_or(|p| s.item.parent_span_id == p))
        .map(|s| &s.item)
        .collect();
    let names: Vec<_> = spans
        .iter()
        .filter(|s| s.item.trace_id == trace)
        .map(|s| format!("{}: {}", s.service, s.item.name))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "want one {service} span {name:?} (parent {:?}) in trace {}; the trace has {names:#?}",
        parent.map(hex),
        hex(trace)
    );
    found[0]
}

/// The (trace id, span id) of every JSON log line of `log` whose message
/// is `message`.
pub fn logged_ids(log: &str, message: &str) -> Vec<(String, String)> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == message)
        .filter_map(|line| {
            let span = &line["span"];
            Some((
                span["trace_id"].as_str()?.to_owned(),
                span["span_id"].as_str()?.to_owned(),
            ))
        })
        .collect()
}
