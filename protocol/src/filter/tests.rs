use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::*;

fn headers(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("headers must be an object"),
    }
}

/// Whether `expr` matches a message with this name and these headers.
fn passes(expr: &str, name: Option<&str>, header_json: Option<Value>) -> bool {
    let filter = Filter::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
    filter.matches_fields(name, header_json.map(headers).as_ref())
}

fn message(name: Option<&str>, extras: Option<Value>) -> Message {
    Message {
        name: name.map(str::to_owned),
        extras,
        ..Message::default()
    }
}

#[test]
fn ably_js_subscribes_to_filtered_channel() {
    // ably-js 2.26.0 test/realtime/message.test.js 'subscribes to filtered channel': six
    // messages published over REST, the filtered channel must get exactly the first and third.
    let filter = Filter::parse(r#"name == `"filtered"` && headers.number == `26095`"#).unwrap();
    let published = [
        message(
            Some("filtered"),
            Some(json!({"headers": {"name": "Lorem Choo", "number": 26095, "bool": true}})),
        ),
        message(Some("filtered"), None),
        message(
            Some("filtered"),
            Some(json!({"headers": {"name": "John Bull", "number": 26095, "bool": false}})),
        ),
        message(Some("filtered"), None),
        message(
            Some("filtered"),
            Some(json!({"headers": {"name": "John Bull", "number": 12345, "bool": false}})),
        ),
        message(Some("end"), None),
    ];
    let passed: Vec<bool> = published.iter().map(|m| filter.matches(m)).collect();
    assert_eq!(passed, [true, false, true, false, false, false]);
}

#[test]
fn ably_docs_examples() {
    let ice_cream =
        r#"name == `"ice-cream"` && headers.flavor == `"strawberry"` && headers.cost < `50`"#;
    let strawberry = json!({"flavor": "strawberry", "cost": 35, "temp": 3});
    assert!(passes(
        ice_cream,
        Some("ice-cream"),
        Some(strawberry.clone())
    ));
    assert!(!passes(
        ice_cream,
        Some("ice-cream"),
        Some(json!({"flavor": "strawberry", "cost": 50}))
    ));
    assert!(!passes(ice_cream, Some("sorbet"), Some(strawberry)));
    assert!(!passes(
        ice_cream,
        Some("ice-cream"),
        Some(json!({"flavor": "strawberry"}))
    ));

    let either = r#"headers.flavor == `"strawberry"` || headers.flavor == `"chocolate"`"#;
    assert!(passes(either, None, Some(json!({"flavor": "chocolate"}))));
    assert!(!passes(either, None, Some(json!({"flavor": "vanilla"}))));
    assert!(!passes(either, None, None));
}

#[test]
fn every_comparison() {
    let h = || Some(json!({"n": 5, "f": 2.5, "s": "abc", "b": true, "z": null}));
    let table = [
        ("headers.n == `5`", true),
        ("headers.n == `5.0`", true),
        ("headers.n == `6`", false),
        ("headers.n != `6`", true),
        ("headers.n != `5`", false),
        ("headers.n < `6`", true),
        ("headers.n < `5`", false),
        ("headers.n <= `5`", true),
        ("headers.n <= `4.9`", false),
        ("headers.n > `4`", true),
        ("headers.n > `5`", false),
        ("headers.n >= `5`", true),
        ("headers.n >= `5.1`", false),
        ("headers.f > `2`", true),
        ("headers.f < `-1e3`", false),
        ("headers.s == 'abc'", true),
        ("headers.s == `\"abc\"`", true),
        ("headers.s != 'abd'", true),
        ("headers.b == `true`", true),
        ("headers.b", true),
        ("headers.z == `null`", true),
        ("headers.z", false),
        (
            "headers == `{\"n\": 5, \"f\": 2.5, \"s\": \"abc\", \"b\": true, \"z\": null}`",
            true,
        ),
        ("`[1, 2]` == `[1.0, 2]`", true),
        ("`{\"a\": [1]}` == `{\"a\": [2]}`", false),
    ];
    for (expr, expected) in table {
        assert_eq!(passes(expr, Some("x"), h()), expected, "{expr}");
    }
}

#[test]
fn logic_returns_operands_and_uses_jmespath_truthiness() {
    let h = || Some(json!({"zero": 0, "empty": "", "text": "t", "no": false}));
    let table = [
        ("headers.zero", true), // JMESPath: every number is true
        ("headers.empty", false),
        ("headers.text", true),
        ("headers.no", false),
        ("`[]`", false),
        ("`{}`", false),
        ("`[0]`", true),
        ("!headers.empty", true),
        ("!headers.zero", false),
        ("!!headers.text", true),
        ("headers.empty || headers.text", true),
        ("(headers.empty || 'x') == 'x'", true),
        ("(headers.text && 'y') == 'y'", true),
        ("(headers.no && 'y') == `false`", true),
        ("(headers.missing || headers.no) == `false`", true),
        ("headers.text && headers.no", false),
        ("headers.no || headers.empty || headers.zero", true),
    ];
    for (expr, expected) in table {
        assert_eq!(passes(expr, None, h()), expected, "{expr}");
    }
}

#[test]
fn precedence() {
    let h = || Some(json!({"a": 1, "b": 2}));
    let table = [
        // && binds tighter than ||
        (
            "headers.a == `1` || headers.a == `2` && headers.b == `3`",
            true,
        ),
        (
            "(headers.a == `1` || headers.a == `2`) && headers.b == `3`",
            false,
        ),
        // ! binds tighter than == (JMESPath): `!headers.a == `false`` is `(!headers.a) == false`
        ("!headers.a == `false`", true),
        ("!(headers.a == `2`)", true),
        ("!headers.a == `2`", false),
        // comparisons chain from the left
        ("headers.a == `1` == `true`", true),
        ("headers.a < headers.b", true),
        ("headers.b < headers.a", false),
    ];
    for (expr, expected) in table {
        assert_eq!(passes(expr, None, h()), expected, "{expr}");
    }
}

#[test]
fn missing_fields_are_null() {
    for (name, header_json) in [(None, None), (Some("x"), Some(json!({})))] {
        assert!(passes("headers.nope == `null`", name, header_json.clone()));
        assert!(!passes("headers.nope", name, header_json.clone()));
        assert!(!passes("headers.nope == `0`", name, header_json.clone()));
        assert!(passes("headers.nope != `0`", name, header_json.clone()));
        // ordering against null is null, and so is its result
        assert!(!passes("headers.nope < `1`", name, header_json.clone()));
        assert!(!passes("headers.nope >= `1`", name, header_json.clone()));
        assert!(passes("!(headers.nope < `1`)", name, header_json.clone()));
        assert!(passes("other == `null`", name, header_json.clone()));
        assert!(passes("headers.a.b == `null`", name, header_json.clone()));
    }
    assert!(passes("name == `null`", None, None));
    assert!(!passes("name", None, None));
    assert!(passes("name", Some("n"), None));
    assert!(passes("name.length == `null`", Some("n"), None));
    // extras without headers, or with headers that are not an object
    for extras in [json!({}), json!({"headers": "x"}), json!({"push": {}})] {
        let filter = Filter::parse("headers == `null`").unwrap();
        assert!(filter.matches(&message(None, Some(extras))));
    }
}

#[test]
fn type_mismatches() {
    let h = || Some(json!({"n": 5, "s": "5", "b": true}));
    let table = [
        ("headers.n == headers.s", false),
        ("headers.s == `5`", false),
        ("headers.b == `1`", false),
        ("headers.n == `true`", false),
        // ordering non-numbers is null
        ("headers.s < `6`", false),
        ("headers.s > 'a'", false),
        ("'a' < 'b'", false),
        ("headers.b > `0`", false),
        ("!(headers.s < `6`)", true),
        // a function given the wrong type fails the whole expression
        ("contains(headers.n, '5') || `true`", false),
        ("starts_with(headers.missing, 'x') || `true`", false),
        ("length(headers.n) == `1`", false),
    ];
    for (expr, expected) in table {
        assert_eq!(passes(expr, None, h()), expected, "{expr}");
    }
}

#[test]
fn functions() {
    let h = || Some(json!({"tags": "[\"a\",\"b\"]", "n": 12, "s": "3.5", "dotted.key": "v"}));
    let table = [
        ("contains(headers.tags, '\"a\"')", true),
        ("!contains(headers.tags, '\"c\"')", true),
        ("contains(`[1, 2]`, `2.0`)", true),
        ("starts_with(name, 'ice')", true),
        ("ends_with(name, 'cream')", true),
        ("ends_with(name, 'ice')", false),
        ("length(name) == `9`", true),
        ("length(headers) == `4`", true),
        ("not_null(headers.missing, headers.n) == `12`", true),
        ("not_null(headers.missing) == `null`", true),
        ("to_string(headers.n) == '12'", true),
        ("to_number(headers.s) > `3`", true),
        ("to_number(name) == `null`", true),
        ("type(headers.n) == 'number'", true),
        ("type(headers.missing) == 'null'", true),
        ("headers.\"dotted.key\" == 'v'", true),
        ("\"headers\".\"dotted.key\" == 'v'", true),
    ];
    for (expr, expected) in table {
        assert_eq!(passes(expr, Some("ice-cream"), h()), expected, "{expr}");
    }
}

#[test]
fn literals_and_escapes() {
    let h = || Some(json!({"q": "it's", "b": "a`b", "bs": "a\\b", "u": "é"}));
    let table = [
        (r"headers.q == 'it\'s'", true),
        (r#"headers.b == `"a\`b"`"#, true),
        (r"headers.bs == 'a\\b'", true),
        (r"headers.bs == 'a\b'", true), // other escapes stay as written
        (r#"headers.u == `"\u00e9"`"#, true),
        ("headers.u == 'é'", true),
        ("` 42 ` == `42`", true),
    ];
    for (expr, expected) in table {
        assert_eq!(passes(expr, None, h()), expected, "{expr}");
    }
}

#[test]
fn invalid_expressions_are_refused() {
    for bad in [
        "",
        "   ",
        "name ==",
        "== name",
        "name = 'x'",
        "name == 5",
        "headers.n > -1",
        "name == \"x",
        "name == `x`", // JMESPath's deprecated bare literal: not JSON
        "name == `\"x\"",
        "name == 'x",
        "(name",
        "name)",
        "name ()",
        "name & x",
        "name | x",
        "name || ",
        "&& name",
        "!",
        "headers.",
        "headers.[0]",
        "headers[0]",
        "headers['x']",
        "headers.*",
        "@",
        "{a: name}",
        "name == 'x' 'y'",
        "unknown(name)",
        "contains(name)",
        "length(name, name)",
        "not_null()",
        "contains(name, 'a',)",
        "name ≠ 'x'",
        "name\u{0} == 'x'",
        "#",
    ] {
        let error = Filter::parse(bad).expect_err(bad);
        assert_eq!(error.info().code, 40010, "{bad}");
    }
}

#[test]
fn bounds_are_enforced() {
    let long = format!("name == '{}'", "x".repeat(MAX_FILTER_BYTES));
    assert_eq!(
        Filter::parse(&long).unwrap_err(),
        FilterError::TooLong {
            max: MAX_FILTER_BYTES
        }
    );
    let deep = |n: usize| format!("{}name{}", "(".repeat(n), ")".repeat(n));
    assert!(Filter::parse(&deep(MAX_FILTER_DEPTH)).is_ok());
    assert_eq!(
        Filter::parse(&deep(MAX_FILTER_DEPTH + 1)).unwrap_err(),
        FilterError::TooDeep {
            max: MAX_FILTER_DEPTH
        }
    );
    let nots = format!("{}name", "!".repeat(MAX_FILTER_DEPTH + 1));
    assert!(matches!(
        Filter::parse(&nots),
        Err(FilterError::TooDeep { .. })
    ));
    let calls = format!("{}name{}", "length(".repeat(40), ")".repeat(40));
    assert!(matches!(
        Filter::parse(&calls),
        Err(FilterError::TooDeep { .. })
    ));
    let chain = std::iter::repeat_n("name", 40)
        .collect::<Vec<_>>()
        .join(" == ");
    assert!(matches!(
        Filter::parse(&chain),
        Err(FilterError::TooDeep { .. })
    ));
    // long && / || chains stay flat, so they are fine up to the length limit
    let wide = std::iter::repeat_n("name", 80)
        .collect::<Vec<_>>()
        .join(" && ");
    assert!(passes(&wide, Some("n"), None));
}

#[test]
fn filters_compare_by_source() {
    use std::collections::HashSet;
    let a = Filter::parse("name == 'a'").unwrap();
    let set: HashSet<Filter> = [a.clone(), Filter::parse("name == 'a'").unwrap()].into();
    assert_eq!(set.len(), 1);
    assert_ne!(a, Filter::parse("name=='a'").unwrap());
    assert_eq!(a.source(), "name == 'a'");
    assert_eq!(a.to_string(), "name == 'a'");
}

#[test]
fn splits_filter_qualifiers() {
    let expr = r#"name == `"filtered"` && headers.number == `26095`"#;
    let encoded = STANDARD.encode(expr);
    let channel = format!("[filter={encoded}]chan");
    let qualifier = split_qualifier(&channel).unwrap().unwrap();
    assert_eq!(qualifier.filter.source(), expr);
    assert_eq!((qualifier.params, qualifier.base), (None, "chan"));

    // ably-js keeps channel params: [?rewind=1]foo becomes [filter=…?rewind=1]foo
    let channel = format!("[filter={encoded}?rewind=1&delta=vcdiff]ns:foo");
    let qualifier = split_qualifier(&channel).unwrap().unwrap();
    assert_eq!(qualifier.params, Some("rewind=1&delta=vcdiff"));
    assert_eq!(qualifier.base, "ns:foo");

    // URL-safe alphabet, no padding: `??>` encodes with '/' and '=' in standard base64
    let odd = "name == '??>'";
    assert!(STANDARD.encode(odd).contains(['/', '=']));
    let channel = format!("[filter={}]c", URL_SAFE_NO_PAD.encode(odd));
    assert_eq!(
        split_qualifier(&channel).unwrap().unwrap().filter.source(),
        odd
    );

    for other in [
        "chan",
        "[?rewind=1]chan",
        "[meta]log",
        "[filter]chan",
        "filter=x]y",
        "",
    ] {
        assert_eq!(split_qualifier(other).unwrap(), None, "{other}");
    }
}

#[test]
fn refuses_bad_filter_qualifiers() {
    let good = STANDARD.encode("name");
    let not_utf8 = STANDARD.encode([0xff, 0xfe]);
    let bad_expr = STANDARD.encode("name ==");
    let too_long = STANDARD.encode("x".repeat(MAX_FILTER_BYTES + 1));
    for bad in [
        format!("[filter={good}"),
        format!("[filter={good}]"),
        "[filter=***]chan".to_owned(),
        "[filter=]chan".to_owned(),
        format!("[filter={not_utf8}]chan"),
        format!("[filter={bad_expr}]chan"),
        format!("[filter={too_long}]chan"),
    ] {
        let error = split_qualifier(&bad).expect_err(&bad);
        assert_eq!(ErrorInfo::from(error).code, 40010, "{bad}");
    }
}

#[test]
fn channel_names_accept_filter_qualifiers() {
    let channel = format!("[filter={}]chan", STANDARD.encode("name == 'x'"));
    let parsed = crate::ChannelName::parse(&channel).unwrap();
    assert_eq!(parsed.base(), "chan");
}

/// Well-formed expressions over every construct, for the evaluator to chew on.
fn expression() -> impl Strategy<Value = String> {
    let leaf = prop::sample::select(vec![
        "name",
        "headers",
        "headers.k",
        "headers.x",
        "headers.n",
        "headers.o.k",
        "headers.\"o\"",
        "nothing",
        "`1`",
        "`-2.5`",
        "`\"s\"`",
        "`true`",
        "`null`",
        "`[1, \"s\"]`",
        "`{}`",
        "'r'",
        "''",
    ])
    .prop_map(str::to_owned);
    leaf.prop_recursive(6, 48, 3, |inner| {
        let operator = prop::sample::select(vec!["==", "!=", "<", "<=", ">", ">=", "&&", "||"]);
        let unary =
            prop::sample::select(vec!["length", "not_null", "to_string", "to_number", "type"]);
        let binary = prop::sample::select(vec!["contains", "starts_with", "ends_with", "not_null"]);
        prop_oneof![
            (inner.clone(), operator, inner.clone()).prop_map(|(a, op, b)| format!("{a} {op} {b}")),
            inner.clone().prop_map(|a| format!("!{a}")),
            inner.clone().prop_map(|a| format!("({a})")),
            (unary, inner.clone()).prop_map(|(f, a)| format!("{f}({a})")),
            (binary, inner.clone(), inner).prop_map(|(f, a, b)| format!("{f}({a}, {b})")),
        ]
    })
}

/// What a message might carry, of every JSON type.
fn header_values() -> impl Strategy<Value = Map<String, Value>> {
    let scalar = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,6}".prop_map(Value::from),
    ];
    prop::collection::btree_map(
        prop::sample::select(vec!["k", "x", "n", "o"]).prop_map(str::to_owned),
        scalar,
        0..4,
    )
    .prop_map(|map| map.into_iter().collect())
}

proptest! {
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(filter) = Filter::parse(&text) {
            filter.matches_fields(Some("name"), None);
        }
        let _ = split_qualifier(&format!("[filter={text}]c"));
    }

    #[test]
    fn expressions_evaluate_and_mangled_ones_never_panic(
        text in expression(),
        header_json in header_values(),
        name in proptest::option::of(".{0,6}"),
        cut in any::<prop::sample::Index>(),
        cut_len in 0..4usize,
    ) {
        if text.len() <= MAX_FILTER_BYTES {
            let filter = Filter::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            filter.matches_fields(name.as_deref(), Some(&header_json));
            filter.matches_fields(None, None);
            let channel = format!("[filter={}]c", STANDARD.encode(&text));
            let qualifier = split_qualifier(&channel).ok().flatten().map(|q| q.filter);
            prop_assert_eq!(qualifier, Some(filter));
        }
        // Dropping a few bytes anywhere makes most of them invalid, in every possible place.
        let bytes = text.as_bytes();
        let at = cut.index(bytes.len() + 1);
        let mangled = [&bytes[..at], &bytes[(at + cut_len).min(bytes.len())..]].concat();
        if let Ok(filter) = Filter::parse(&String::from_utf8_lossy(&mangled)) {
            filter.matches_fields(name.as_deref(), Some(&header_json));
        }
    }
}
