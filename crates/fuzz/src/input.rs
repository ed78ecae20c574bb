//! The byte layout of an RPC fuzz input, simple enough to write seeds by
//! hand and loose enough that every byte string means something:
//!
//! ```text
//! input   = call*                       (at most MAX_CALLS are run)
//! call    = method:u8 caller:u8 len:u16be body[len]
//! ```
//!
//! `method` and `caller` index the harness's tables (modulo their length);
//! the last call's body is whatever is left when `len` runs past the end.
//! A streaming call's body is itself a list of messages, each
//! `len:u16be bytes[len]` ([`split_messages`]).
//!
//! Ids the service made up (an app id, a session token, a TOTP code) cannot
//! be guessed by a fuzzer, so seeds carry placeholders of the same length,
//! which [`Substitutions`] swaps for the real value before the bytes are
//! decoded; protobuf length prefixes stay right.

/// More calls than this in one input are ignored: it bounds an input's time.
pub const MAX_CALLS: usize = 8;

/// One call read from an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call<'a> {
    pub method: u8,
    pub caller: u8,
    pub body: &'a [u8],
}

/// The calls in `data`, at most [`MAX_CALLS`].
pub fn calls(data: &[u8]) -> Vec<Call<'_>> {
    let mut calls = Vec::new();
    let mut rest = data;
    while calls.len() < MAX_CALLS {
        let [method, caller, hi, lo, tail @ ..] = rest else {
            break;
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (body, after) = tail.split_at(len);
        calls.push(Call {
            method: *method,
            caller: *caller,
            body,
        });
        rest = after;
    }
    calls
}

/// The bytes of `calls` in the layout [`calls`] reads (for seeds and tests).
///
/// # Panics
///
/// If a body is longer than `u16::MAX`: seeds are small.
pub fn encode(calls: &[Call<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for call in calls {
        let len = u16::try_from(call.body.len()).expect("a seed body under 64 KiB");
        out.extend([call.method, call.caller]);
        out.extend(len.to_be_bytes());
        out.extend(call.body);
    }
    out
}

/// A streaming call's messages: `len:u16be bytes[len]` repeated, the last
/// one cut short by the end of `body`.
pub fn split_messages(body: &[u8]) -> Vec<&[u8]> {
    let mut messages = Vec::new();
    let mut rest = body;
    while let [hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (message, after) = tail.split_at(len);
        messages.push(message);
        rest = after;
    }
    messages
}

/// The bytes [`split_messages`] reads back as `messages`.
///
/// # Panics
///
/// If a message is longer than `u16::MAX`: seeds are small.
pub fn join_messages(messages: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for message in messages {
        let len = u16::try_from(message.len()).expect("a seed message under 64 KiB");
        out.extend(len.to_be_bytes());
        out.extend(*message);
    }
    out
}

/// Placeholder → value swaps, each pair of equal length.
#[derive(Debug, Default, Clone)]
pub struct Substitutions(Vec<(&'static [u8], Vec<u8>)>);

impl Substitutions {
    /// Adds a swap; a value of another length than its placeholder is
    /// skipped, since it would break the length prefixes around it.
    pub fn add(&mut self, placeholder: &'static str, value: &str) {
        if placeholder.len() == value.len() {
            self.0
                .push((placeholder.as_bytes(), value.as_bytes().to_vec()));
        }
    }

    /// `bytes` with every placeholder replaced.
    pub fn apply(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        for (placeholder, value) in &self.0 {
            let mut at = 0;
            while let Some(found) = find(&out[at..], placeholder) {
                let start = at + found;
                out[start..start + placeholder.len()].copy_from_slice(value);
                at = start + placeholder.len();
            }
        }
        out
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_round_trip_and_the_last_body_takes_what_is_left() {
        let a = Call {
            method: 1,
            caller: 2,
            body: b"abc",
        };
        let b = Call {
            method: 3,
            caller: 4,
            body: b"",
        };
        assert_eq!(calls(&encode(&[a, b])), vec![a, b]);

        let mut short = encode(&[a]);
        short[3] = 200;
        assert_eq!(calls(&short)[0].body, b"abc");
        assert!(calls(&[1, 2, 3]).is_empty());
        assert_eq!(calls(&encode(&[a; 20])).len(), MAX_CALLS);
    }

    #[test]
    fn messages_round_trip() {
        let messages: [&[u8]; 3] = [b"meta", b"", b"chunk"];
        assert_eq!(split_messages(&join_messages(&messages)), messages);
        assert_eq!(split_messages(&[0, 9, b'x']), vec![b"x".as_slice()]);
    }

    #[test]
    fn substitutions_replace_equal_length_placeholders_only() {
        let mut s = Substitutions::default();
        s.add("@@", "42");
        s.add("##", "too long");
        assert_eq!(s.apply(b"a@@b@@c##"), b"a42b42c##");
    }
}
