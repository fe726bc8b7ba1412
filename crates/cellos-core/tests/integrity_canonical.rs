//! The fast canonical serializer produces exactly RFC 8785 bytes, as computed by the reference
//! canonicalizer, for any JSON value (including floats, large integers and keys whose UTF-8
//! and UTF-16 orders differ, which take the slow path).

use cellos_core::integrity::canonical_value_bytes;
use proptest::prelude::*;
use serde_json::{Map, Number, Value};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<u64>().prop_map(|n| Value::Number(n.into())),
        (-1e6f64..1e6f64).prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<String>().prop_map(Value::String),
        "[a-z\\x00-\\x1f\"\\\\/]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        "[a-zA-Z]{1,8}".boxed(),
                        any::<String>().boxed(),
                        "[\u{e000}-\u{e0ff}\u{10000}-\u{100ff}a]{1,3}".boxed()
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #[test]
    fn fast_canonical_bytes_equal_rfc8785(value in json_value()) {
        let expected = serde_json_canonicalizer::to_vec(&value).unwrap();
        prop_assert_eq!(canonical_value_bytes(&value).unwrap(), expected);
    }
}

#[test]
fn keys_whose_utf8_and_utf16_orders_differ_are_sorted_by_utf16() {
    // U+10000 is a surrogate pair in UTF-16 (0xD800...) and sorts before U+E000 there,
    // although its UTF-8 bytes sort after.
    let value: Value = serde_json::json!({ "\u{e000}": 1, "\u{10000}": 2 });
    let bytes = canonical_value_bytes(&value).unwrap();
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        "{\"\u{10000}\":2,\"\u{e000}\":1}"
    );
}
