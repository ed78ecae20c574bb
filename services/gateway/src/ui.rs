//! The web UI (`services/gateway/ui/`), embedded in the binary at build
//! time and served at `/`, `/app.js` and `/app.css` with a strict
//! Content-Security-Policy: only this origin's scripts and styles, images
//! also as `data:` URIs (the TOTP QR code), and no framing. `/reasons.js`
//! gives the UI padlock's error reasons, from the generated enum.

use std::sync::LazyLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use padlock_proto::Reason;
use prost::Message as _;
use prost_types::FileDescriptorSet;

const INDEX_HTML: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const APP_CSS: &str = include_str!("../ui/app.css");
const REASONS_TEMPLATE: &str = include_str!("../ui/reasons.js");
/// Where `ui/reasons.js` takes the reasons.
const REASONS_SLOT: &str = "/* REASONS */";

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'";

pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

pub async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

pub async fn reasons_js() -> Response {
    asset("text/javascript; charset=utf-8", REASONS_JS.as_str())
}

/// Every [`Reason`] but the unspecified one, in the contract's order: the
/// values of `padlock.errors.v1.ErrorReason` as the generated code's
/// descriptor set lists them (prost gives enums no iterator).
pub(crate) fn reasons() -> Vec<Reason> {
    let Ok(set) = FileDescriptorSet::decode(padlock_proto::AUTH_DESCRIPTOR_SET) else {
        return Vec::new();
    };
    set.file
        .iter()
        .filter(|file| file.package() == "padlock.errors.v1")
        .flat_map(|file| &file.enum_type)
        .filter(|e| e.name() == "ErrorReason")
        .flat_map(|e| &e.value)
        .filter_map(|value| Reason::from_str_name(value.name()))
        .filter(|reason| *reason != Reason::Unspecified)
        .collect()
}

/// `/reasons.js`: `ui/reasons.js` with every reason filled in.
static REASONS_JS: LazyLock<String> = LazyLock::new(|| {
    let entries: Vec<String> = reasons()
        .iter()
        .map(|r| format!("{0}: '{0}',", r.as_str_name()))
        .collect();
    REASONS_TEMPLATE.replace(REASONS_SLOT, &entries.join("\n  "))
});

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reasons_are_every_value_of_the_generated_enum() {
        let reasons = reasons();
        // prost enums have no iterator: try every number the contract could
        // plausibly use.
        let generated: Vec<Reason> = (1..=1000)
            .filter_map(|v| Reason::try_from(v).ok())
            .collect();
        assert!(generated.len() > 10, "{generated:?}");
        let mut sorted = reasons.clone();
        sorted.sort_by_key(|r| *r as i32);
        assert_eq!(sorted, generated);
    }

    #[test]
    fn reasons_js_names_each_reason_as_itself() {
        let js = REASONS_JS.as_str();
        assert!(!js.contains(REASONS_SLOT));
        for reason in reasons() {
            let name = reason.as_str_name();
            assert!(js.contains(&format!("\n  {name}: '{name}',\n")), "{name}");
        }
        assert!(!js.contains("UNSPECIFIED"));
    }

    /// Every `Reason.NAME` of app.js is a reason, and app.js spells no
    /// reason as a string of its own.
    #[test]
    fn app_js_uses_only_reasons_that_exist_and_only_through_reason() {
        let mut used = 0;
        for (i, _) in APP_JS.match_indices("Reason.") {
            let name: String = APP_JS[i + "Reason.".len()..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if name.is_empty() {
                continue;
            }
            assert!(
                Reason::from_str_name(&name).is_some_and(|r| r != Reason::Unspecified),
                "app.js uses Reason.{name}, which errors.proto does not have"
            );
            used += 1;
        }
        assert!(used > 10, "app.js compares with only {used} reasons");
        for reason in reasons() {
            let name = reason.as_str_name();
            for quote in ['\'', '"', '`'] {
                assert!(
                    !APP_JS.contains(&format!("{quote}{name}{quote}")),
                    "app.js spells {name} itself: use Reason.{name}"
                );
            }
        }
    }
}
