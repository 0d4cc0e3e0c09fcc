use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::pairs;

fn round_trip(source: &[u8], target: &[u8]) -> Vec<u8> {
    let delta = vcdiff::encode(source, target);
    assert_eq!(
        &delta[..5],
        &[0xD6, 0xC3, 0xC4, 0x00, 0x00],
        "header, Hdr_Indicator 0"
    );
    let decoded = vcdiff::decode(source, &delta).expect("our own delta decodes");
    assert!(
        decoded == target,
        "round trip of {} -> {} bytes",
        source.len(),
        target.len()
    );
    delta
}

fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.gen()).collect()
}

#[test]
fn empty_source_empty_target_and_both() {
    round_trip(b"", b"");
    round_trip(b"", b"hello hello hello hello");
    round_trip(b"some source bytes", b"");
    // No source: the window has no VCD_SOURCE.
    assert_eq!(vcdiff::encode(b"", b"x")[5], 0);
    assert_eq!(vcdiff::encode(b"s", b"x")[5], 0x01);
}

#[test]
fn identical_is_one_copy() {
    let mut rng = StdRng::seed_from_u64(1);
    let data = random_bytes(&mut rng, 5000);
    let delta = round_trip(&data, &data);
    assert!(
        delta.len() <= 24,
        "identical 5000 bytes took {} bytes",
        delta.len()
    );
}

#[test]
fn appended_and_prepended() {
    let mut rng = StdRng::seed_from_u64(2);
    let source = random_bytes(&mut rng, 3000);
    let extra = random_bytes(&mut rng, 100);
    let appended = [source.as_slice(), &extra].concat();
    let prepended = [extra.as_slice(), &source].concat();
    for target in [appended, prepended] {
        let delta = round_trip(&source, &target);
        assert!(delta.len() < 100 + 30, "delta {} bytes", delta.len());
    }
}

#[test]
fn random_binary_unrelated() {
    let mut rng = StdRng::seed_from_u64(3);
    let source = random_bytes(&mut rng, 4096);
    let target = random_bytes(&mut rng, 4096);
    let delta = round_trip(&source, &target);
    // Nothing to copy: the delta is the target plus a few bytes of framing.
    assert!(
        delta.len() <= target.len() + 24,
        "delta {} bytes",
        delta.len()
    );
}

#[test]
fn long_runs_use_run_and_stay_small() {
    let target: Vec<u8> = [vec![b'a'; 100_000], b"middle".to_vec(), vec![0; 50_000]].concat();
    let delta = round_trip(b"", &target);
    assert!(delta.len() < 40, "runs took {} bytes", delta.len());
    // One byte repeated in both: linear time (the chain cap), and tiny.
    let source = vec![7u8; 1 << 20];
    let delta = round_trip(&source, &vec![7u8; (1 << 20) + 3]);
    assert!(delta.len() < 30, "repeated byte took {} bytes", delta.len());
}

#[test]
fn periodic_target_copies_from_itself() {
    let target: Vec<u8> = b"abcdefgh12".iter().copied().cycle().take(10_000).collect();
    let delta = round_trip(b"", &target);
    assert!(
        delta.len() < 40,
        "periodic target took {} bytes",
        delta.len()
    );
}

#[test]
fn json_with_five_percent_changed_is_small() {
    let mut rng = StdRng::seed_from_u64(4);
    let mut total_delta = 0;
    let mut total_target = 0;
    for _ in 0..20 {
        let (source, target) = pairs::json_pair(&mut rng, 2048, 5);
        let delta = round_trip(&source, &target);
        assert!(
            delta.len() * 4 < target.len(),
            "2 KB JSON, 5% changed: delta {} of {} bytes",
            delta.len(),
            target.len()
        );
        total_delta += delta.len();
        total_target += target.len();
    }
    eprintln!("2 KB JSON, 5% of fields changed: 20 deltas {total_delta} bytes for {total_target} target bytes");
}

/// decode(encode(s, t)) == t over 25,000 seeded pairs: random, small alphabets, edited copies.
#[test]
fn property_round_trip_over_seeded_pairs() {
    let mut rng = StdRng::seed_from_u64(0x7663_6469_6666);
    for case in 0..25_000 {
        let (source, target) = pairs::pair(&mut rng);
        let delta = vcdiff::encode(&source, &target);
        match vcdiff::decode(&source, &delta) {
            Ok(decoded) if decoded == target => {}
            other => panic!(
                "case {case}: {} -> {} bytes decoded to {:?}",
                source.len(),
                target.len(),
                other.map(|d| d.len())
            ),
        }
    }
}
