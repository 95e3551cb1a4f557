//! Canonical JSON: object keys sorted by their UTF-8 bytes, no insignificant whitespace.
//!
//! The spec crate keeps labels and annotations in `HashMap`s, whose iteration order changes from
//! run to run; serializing through this module gives the same bytes, hence the same digest, for
//! the same value every time.

use serde::Serialize;
use serde_json::Value;

/// Serializes `value` canonically.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let value = serde_json::to_value(value)?;
    let mut out = Vec::new();
    write_value(&value, &mut out)?;
    Ok(out)
}

fn write_value(value: &Value, out: &mut Vec<u8>) -> serde_json::Result<()> {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key)?;
                out.push(b':');
                write_value(value, out)?;
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    #[test]
    fn keys_are_sorted_at_every_depth_whatever_the_map_order() {
        let mut inner = HashMap::new();
        for k in ["zeta", "alpha", "mid", "Beta"] {
            inner.insert(k.to_string(), k.len());
        }
        let mut outer = HashMap::new();
        outer.insert("b", serde_json::json!([inner.clone(), 1, "x"]));
        outer.insert("a", serde_json::json!(inner));
        let out = String::from_utf8(super::to_vec(&outer).unwrap()).unwrap();
        assert_eq!(
            out,
            r#"{"a":{"Beta":4,"alpha":5,"mid":3,"zeta":4},"b":[{"Beta":4,"alpha":5,"mid":3,"zeta":4},1,"x"]}"#
        );
    }
}
