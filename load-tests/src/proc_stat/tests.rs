#[test]
fn reads_this_process() {
    let sample = super::sample(std::process::id()).unwrap();
    assert!(sample.rss_bytes > 0);
}
