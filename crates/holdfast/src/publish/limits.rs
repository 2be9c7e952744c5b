//! The publish API's limits on what one request may carry, besides its size in bytes
//! (`limits.max_publish_body`): how deep its JSON nests (`publish.max_json_depth`) and how many
//! items it holds (`publish.max_items`).
//!
//! Depth is measured on the bytes before they are parsed, so a body nested thousands deep is
//! refused without building anything; the parser itself stops at 128 levels, which would
//! otherwise be the only bound.

/// Whether arrays and objects in `body` nest deeper than `max` (`[]` is 1, `[{}]` is 2).
///
/// Brackets inside strings do not count. The scan assumes nothing else about the JSON: on
/// malformed input it may answer either way, and the parser that runs next rejects the body.
pub fn nests_deeper_than(body: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
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
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::nests_deeper_than;

    #[test]
    fn depth_counts_arrays_and_objects_outside_strings() {
        // (body, its depth)
        let cases: &[(&str, usize)] = &[
            ("", 0),
            ("1", 0),
            ("\"[[[\"", 0),
            ("[]", 1),
            ("{}", 1),
            ("{\"items\":[{}]}", 3),
            ("[[],[],[[]]]", 3),
            (r#"{"a":"}}}{{{"}"#, 1),
            (r#"{"a":"\"[[["}"#, 1),
            (r#"{"a":"\\","b":[[]]}"#, 3),
            (r#"{"a":"\\\"{{"}"#, 1),
            (r#"[{"k":"[","v":[{"x":"]]"}]}]"#, 4),
        ];
        for &(body, depth) in cases {
            assert!(
                !nests_deeper_than(body.as_bytes(), depth),
                "{body:?} is {depth} deep, not deeper"
            );
            if depth > 0 {
                assert!(
                    nests_deeper_than(body.as_bytes(), depth - 1),
                    "{body:?} is {depth} deep, deeper than {}",
                    depth - 1
                );
            }
        }
    }

    #[test]
    fn a_deep_body_is_caught_early_and_malformed_input_does_not_panic() {
        let deep = "[".repeat(100_000);
        assert!(nests_deeper_than(deep.as_bytes(), 32));
        for junk in ["]]]]", "}{", "\"", "\"\\", "[\"\\\"]"] {
            let _ = nests_deeper_than(junk.as_bytes(), 1);
        }
        assert!(!nests_deeper_than(b"]]]][", 1));
    }
}
