//! Decoding what other tools wrote: Go's encoding/json writes a nil map, slice or pointer as
//! `null` (docker's `"Volumes": null`, `"Env": null`, ...), where a Rust default (empty map,
//! empty list, empty string, false, 0) means the same thing.

use serde::{Deserialize, Deserializer};

/// `#[serde(default, deserialize_with = "null_default")]`: `null` reads as `T::default()`.
pub fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Deserialize, Debug, PartialEq)]
    struct Sample {
        #[serde(default, deserialize_with = "null_default")]
        list: Vec<String>,
        #[serde(default, deserialize_with = "null_default")]
        map: BTreeMap<String, String>,
        #[serde(default, deserialize_with = "null_default")]
        flag: bool,
    }

    #[test]
    fn null_absent_and_present_values() {
        let null: Sample = serde_json::from_str(r#"{"list":null,"map":null,"flag":null}"#).unwrap();
        let absent: Sample = serde_json::from_str("{}").unwrap();
        assert_eq!(null, absent);
        assert!(null.list.is_empty() && null.map.is_empty() && !null.flag);
        let set: Sample =
            serde_json::from_str(r#"{"list":["a"],"map":{"k":"v"},"flag":true}"#).unwrap();
        assert_eq!(set.list, ["a"]);
        assert_eq!(set.map["k"], "v");
        assert!(set.flag);
        // Wrong types are still errors: leniency covers null only.
        assert!(serde_json::from_str::<Sample>(r#"{"list":"a"}"#).is_err());
    }
}
