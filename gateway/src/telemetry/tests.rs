use super::*;

#[test]
fn namespaces_are_bounded_and_ignore_scope_and_qualifiers() {
    assert_eq!(namespace("session:1"), "session");
    assert_eq!(namespace("[?rewind=1]call:2"), "call");
    assert_eq!(namespace("plain"), "none");
    for n in 0..200 {
        let label = namespace(&format!("ns{n}:x"));
        assert!(label == format!("ns{n}") || label == "other");
    }
    assert_eq!(namespace("ns199:x"), "other", "past the cap");
    assert_eq!(
        namespace("session:9"),
        "session",
        "known ones keep their label"
    );
}
