#![allow(clippy::unwrap_used)]

use super::*;

const TEST: Chain = Chain {
    domain: "test v1",
    table: "t",
    columns: &[("n", Kind::Int), ("s", Kind::Text)],
};

#[test]
fn the_encoding_matches_the_documented_one() {
    // Computed with the Python in the module docs:
    // record_hash("test v1", 1, "00"*32, [42, "héllo"]), then
    // record_hash("test v1", 2, <that>, [None, None]).
    let first = Link::GENESIS.next(
        &TEST,
        &[Value::Int(Some(42)), Value::Text(Some("héllo".into()))],
    );
    assert_eq!(
        hex::encode(first.hash),
        "47a07370ef888746fb6d9f1c912f501fdc084e1096c9a3b4aeec6867de51db27"
    );
    let second = first.next(&TEST, &[Value::Int(None), Value::Text(None)]);
    assert_eq!(second.seq, 2);
    assert_eq!(
        hex::encode(second.hash),
        "6847d08bf73ebfaf544c1a8e317c87103ff59d81f16694f6533ebc17c5c2273d"
    );
}

#[test]
fn null_empty_and_zero_hash_differently() {
    let hash = |v: Value| record_hash("d", 1, &[0; 32], &[v]);
    assert_eq!(
        hash(Value::Int(None)),
        hash(Value::Text(None)),
        "NULL is NULL"
    );
    let all = [
        hash(Value::Int(None)),
        hash(Value::Int(Some(0))),
        hash(Value::Text(Some(String::new()))),
        hash(Value::Text(Some("\0".into()))),
    ];
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert_ne!(a, b);
        }
    }
    // Moving bytes between adjacent texts changes the hash.
    let split = |a: &str, b: &str| {
        record_hash(
            "d",
            1,
            &[0; 32],
            &[Value::Text(Some(a.into())), Value::Text(Some(b.into()))],
        )
    };
    assert_ne!(split("ab", "c"), split("a", "bc"));
}

#[test]
fn a_head_prints_and_parses_back() {
    let link = Link {
        seq: 7,
        hash: [0xab; 32],
    };
    assert_eq!(link.to_string().parse::<Link>(), Ok(link));
    let zeros = "0".repeat(64);
    for bad in [
        String::new(),
        "7".into(),
        "7:abc".into(),
        format!("x:{zeros}"),
        format!("-1:{zeros}"),
        format!("7:{}", "z".repeat(64)),
    ] {
        assert!(bad.parse::<Link>().is_err(), "{bad}");
    }
}

#[test]
fn a_record_of_the_wrong_shape_is_refused() {
    assert!(check_kinds(&TEST, &[Value::Int(None), Value::Text(None)]).is_ok());
    assert!(check_kinds(&TEST, &[Value::Text(None), Value::Int(None)]).is_err());
    assert!(check_kinds(&TEST, &[Value::Int(None)]).is_err());
}
