use redis::Value;

use super::*;

fn bulk(text: &str) -> Value {
    Value::BulkString(text.as_bytes().to_vec())
}

#[test]
fn the_slot_map_names_each_ranges_master() {
    let reply = Value::Array(vec![
        Value::Array(vec![
            Value::Int(0),
            Value::Int(5460),
            Value::Array(vec![bulk("10.0.0.1"), Value::Int(7000), bulk("id-a")]),
        ]),
        Value::Array(vec![
            Value::Int(5461),
            Value::Int(16382),
            Value::Array(vec![bulk(""), Value::Int(7001), bulk("id-b")]),
            Value::Array(vec![bulk("10.0.0.3"), Value::Int(7002), bulk("id-c")]),
        ]),
        Value::Array(vec![
            Value::Int(16383),
            Value::Int(16383),
            Value::Array(vec![bulk("0.0.0.0"), Value::Int(7003), bulk("id-d")]),
        ]),
    ]);
    assert_eq!(
        parse_slots(&reply, "seed").unwrap(),
        vec![
            (0, 5460, ("10.0.0.1".to_owned(), 7000)),
            (5461, 16382, ("seed".to_owned(), 7001)),
            (16383, 16383, ("seed".to_owned(), 7003)),
        ],
        "an empty or wildcard host is the node asked; replicas are not masters"
    );
    assert!(parse_slots(&Value::Int(1), "seed").is_err());
}

#[test]
fn a_topic_goes_to_the_master_owning_its_hash_tags_slot() {
    let slots = [(0, 5460, 0), (5461, 10922, 1), (10923, 16383, 2)];
    // The topic and the channel's keys share the hash tag, hence the slot and the master.
    let topic_slot = slot(b"rt:ch:{room:1}");
    assert_eq!(topic_slot, slot(b"rt:{room:1}:log"));
    let expected = match topic_slot {
        0..=5460 => 0,
        5461..=10922 => 1,
        _ => 2,
    };
    assert_eq!(owner(&slots, "rt:ch:{room:1}"), Some(expected));
    assert_eq!(
        owner(&slots[..1], "rt:ch:{x}"),
        (slot(b"x") <= 5460).then_some(0)
    );
    assert_eq!(owner(&[], "rt:ch:{x}"), None, "uncovered slot");
}

#[test]
fn key_slots_are_the_ones_redis_computes() {
    // The spec's CRC16 check value; the slots are `CLUSTER KEYSLOT` answers of redis-server 7.
    assert_eq!(crc16_xmodem(b"123456789"), 0x31c3);
    assert_eq!(slot(b"somekey"), 11058);
    assert_eq!(slot(b"foo{hash_tag}"), 2515);
    assert_eq!(slot(b"foo"), 12182);
    assert_eq!(slot(b"rt:ch:{room:1}"), 10963);
    // Hash-tag rules: the first `{` and the next `}`; an empty or unclosed tag hashes all.
    assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
    assert_eq!(slot(b"foo{bar}{zap}"), slot(b"bar"));
    assert_eq!(slot(b"foo{{bar}}zap"), 4015);
    assert_eq!(slot(b"{bar"), 4015);
    assert_eq!(slot(b"foo{}{bar}"), 8363);
    assert_eq!(slot(b"foo{bar"), 15278);
}

#[test]
fn a_master_is_reached_as_the_seeds_are_tls_and_certificates_included() {
    // Empty PEM: no certificate, yet `tls_params` is set, which is what must be carried over.
    let tls = RedisTls {
        ca_pem: Some(Vec::new()),
        client: None,
    };
    let shards = Shards::new(&["rediss://:pw@10.0.0.1:7000".to_owned()], Some(&tls)).unwrap();
    let master = at(&shards.seeds[0], "10.0.0.2", 7001);
    assert!(
        matches!(
            master.addr(),
            ConnectionAddr::TcpTls { host, port: 7001, insecure: false, tls_params: Some(_) }
                if host == "10.0.0.2"
        ),
        "{:?}",
        master.addr()
    );
    assert_eq!(host_of(&master), "10.0.0.2");
    assert_eq!(master.redis_settings().password(), Some("pw"));

    let plain = Shards::new(&["redis://10.0.0.1:7000".to_owned()], None).unwrap();
    let master = at(&plain.seeds[0], "10.0.0.3", 7002);
    assert_eq!(
        master.addr(),
        &ConnectionAddr::Tcp("10.0.0.3".to_owned(), 7002)
    );
    assert_eq!(host_of(&master), "10.0.0.3");
}
