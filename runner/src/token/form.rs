//! The `application/x-www-form-urlencoded` serializer for token requests.
//!
//! Written here rather than pulled in: the token request is the only form body the core
//! sends, and the rule is short (WHATWG URL standard, "urlencoded serializer").

use std::fmt::Write as _;

/// Appends `name=value` to `out`, separated by `&` from what is already there.
pub(super) fn push_pair(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() {
        out.push('&');
    }
    encode_into(out, name);
    out.push('=');
    encode_into(out, value);
}

/// Percent-encodes one name or value: alphanumerics and `*-._` stay, a space becomes `+`,
/// every other byte of the UTF-8 encoding becomes `%XX`.
fn encode_into(out: &mut String, text: &str) {
    for byte in text.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(byte));
            }
            b' ' => out.push('+'),
            _ => {
                // Writing to a String cannot fail.
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Decodes a form body into pairs (the test token server's parser).
    pub(crate) fn decode(body: &str) -> Vec<(String, String)> {
        body.split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
                (decode_one(n), decode_one(v))
            })
            .collect()
    }

    fn decode_one(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn reserved_characters_are_escaped() {
        let mut body = String::new();
        push_pair(&mut body, "grant_type", "refresh_token");
        push_pair(&mut body, "refresh_token", "a+b/c=d&e f~é");
        assert_eq!(
            body,
            "grant_type=refresh_token&refresh_token=a%2Bb%2Fc%3Dd%26e+f%7E%C3%A9"
        );
    }

    proptest! {
        #[test]
        fn encoding_round_trips(name in "\\PC{0,12}", value in "\\PC{0,40}") {
            let mut body = String::new();
            push_pair(&mut body, &name, &value);
            push_pair(&mut body, "k", "v");
            // Only the separators survive unescaped.
            prop_assert_eq!(body.matches('&').count(), 1);
            prop_assert_eq!(decode(&body), vec![(name, value), ("k".to_string(), "v".to_string())]);
        }
    }
}
