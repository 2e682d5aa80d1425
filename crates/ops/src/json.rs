//! Re-layout of JSON text that keeps it as written: key order and number spelling untouched
//! (parsing into `serde_json::Value` would sort the keys and respell numbers).

/// Whether `bytes` hold one well-formed JSON value (surrounding whitespace allowed).
pub fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

/// `bytes` indented by two spaces per level, or `None` when they are not JSON.
pub fn pretty(bytes: &[u8]) -> Option<String> {
    is_json(bytes).then(|| layout(bytes, true))
}

/// `bytes` without insignificant whitespace, or `None` when they are not JSON.
pub fn compact(bytes: &[u8]) -> Option<String> {
    is_json(bytes).then(|| layout(bytes, false))
}

/// Lays out JSON text already known to be well formed. Bytes inside strings are copied as they
/// are; outside strings only ASCII structure and whitespace occur, so the output stays UTF-8.
fn layout(bytes: &[u8], indent: bool) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    let mut depth = 0usize;
    let newline = |out: &mut Vec<u8>, depth: usize| {
        if indent {
            out.push(b'\n');
            out.extend(std::iter::repeat_n(b' ', depth * 2));
        }
    };
    let (mut in_string, mut escaped) = (false, false);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b' ' | b'\t' | b'\n' | b'\r' => {}
            b'"' => {
                in_string = true;
                out.push(b);
            }
            b'{' | b'[' => {
                out.push(b);
                let next = bytes[i..].iter().position(|c| !c.is_ascii_whitespace()).map(|n| i + n);
                match next {
                    Some(j) if matches!(bytes[j], b'}' | b']') => {
                        out.push(bytes[j]);
                        i = j + 1;
                    }
                    _ => {
                        depth += 1;
                        newline(&mut out, depth);
                    }
                }
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(b);
            }
            b',' => {
                out.push(b);
                newline(&mut out, depth);
            }
            b':' => {
                out.push(b);
                if indent {
                    out.push(b' ');
                }
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_keeps_order_and_numbers() {
        let text = br#" {"b":1.50,"a":[1, 2,{}],"s":"x, \"y\": {z}","e":[],"n":null} "#;
        assert_eq!(
            pretty(text).unwrap(),
            "{\n  \"b\": 1.50,\n  \"a\": [\n    1,\n    2,\n    {}\n  ],\n  \"s\": \"x, \\\"y\\\": {z}\",\n  \"e\": [],\n  \"n\": null\n}"
        );
        assert_eq!(compact(text).unwrap(), r#"{"b":1.50,"a":[1,2,{}],"s":"x, \"y\": {z}","e":[],"n":null}"#);
    }

    #[test]
    fn scalars_and_unicode_pass_through() {
        assert_eq!(pretty(b"42").unwrap(), "42");
        assert_eq!(compact("{ \"é\" : \"ü \\\\\" }".as_bytes()).unwrap(), "{\"é\":\"ü \\\\\"}");
    }

    #[test]
    fn non_json_is_none() {
        assert_eq!(pretty(b"{\"a\":"), None);
        assert_eq!(compact(b"hello"), None);
        assert_eq!(pretty(b"\xff"), None);
        assert_eq!(pretty(b""), None);
    }
}
