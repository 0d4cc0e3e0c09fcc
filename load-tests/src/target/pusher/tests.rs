use super::*;

#[test]
fn signs_as_the_pusher_http_api_documents() {
    // The worked example of Pusher's "Generating authentication signatures" page.
    let body = r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
    let query = signed_query(
        "278d425bdf160c739803",
        "7ad3773142a6692b25b8",
        "POST",
        "/apps/3/events",
        1353088179,
        body,
    );
    assert_eq!(
        query,
        "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0\
         &body_md5=ec365a775a4cd0599faeb73354201b6f\
         &auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
    );
}

#[test]
fn channel_names_lose_their_colons() {
    assert_eq!(pusher_channel("fanout:abc:3"), "fanout;abc;3");
}

#[test]
fn credentials_are_app_key_secret() {
    assert!(PusherTarget::new("http://127.0.0.1:1", "app:key:secret").is_ok());
    assert!(PusherTarget::new("http://127.0.0.1:1", "app.key:secret").is_err());
}
