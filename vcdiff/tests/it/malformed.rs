//! Damaged deltas are refused or decode to something, never panic, never exceed the limit.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::pairs;

/// Small, so a damaged length field cannot make each case allocate much.
const LIMIT: usize = 1 << 20;

#[test]
fn every_truncation_is_an_error() {
    let mut rng = StdRng::seed_from_u64(5);
    for _ in 0..300 {
        let (source, target) = pairs::pair(&mut rng);
        let delta = vcdiff::encode(&source, &target);
        for cut in 0..delta.len() {
            let result = vcdiff::decode_with_limit(&source, &delta[..cut], LIMIT);
            // Five bytes are a header with no windows: a valid, empty target.
            if cut == 5 {
                assert_eq!(result, Ok(Vec::new()));
            } else {
                assert!(result.is_err(), "cut at {cut} of {} decoded", delta.len());
            }
        }
    }
}

#[test]
fn mutated_deltas_never_panic() {
    let mut rng = StdRng::seed_from_u64(6);
    let mut refused = 0;
    let mut cases = 0;
    for _ in 0..5_000 {
        let (source, target) = pairs::pair(&mut rng);
        let delta = vcdiff::encode(&source, &target);
        for _ in 0..5 {
            let mut damaged = delta.clone();
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..damaged.len());
                match rng.gen_range(0..4) {
                    0 => damaged[at] = rng.gen(),
                    1 => damaged[at] ^= 1 << rng.gen_range(0..8),
                    2 => damaged.insert(at, rng.gen()),
                    _ => {
                        damaged.remove(at);
                    }
                }
                if damaged.is_empty() {
                    break;
                }
            }
            cases += 1;
            match vcdiff::decode_with_limit(&source, &damaged, LIMIT) {
                Ok(decoded) => assert!(decoded.len() <= LIMIT),
                Err(_) => refused += 1,
            }
        }
    }
    // Most damage must be noticed (a changed ADD byte is not, and need not be).
    assert!(
        refused * 2 > cases,
        "only {refused} of {cases} damaged deltas refused"
    );
}

#[test]
fn random_bytes_after_a_valid_header_never_panic() {
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..20_000 {
        let len = rng.gen_range(0..64);
        let mut delta = vec![0xD6, 0xC3, 0xC4, if rng.gen() { 0 } else { b'S' }, 0];
        delta.extend((0..len).map(|_| rng.gen::<u8>()));
        let source: Vec<u8> = (0..rng.gen_range(0..32)).map(|_| rng.gen()).collect();
        if let Ok(decoded) = vcdiff::decode_with_limit(&source, &delta, LIMIT) {
            assert!(decoded.len() <= LIMIT);
        }
    }
}
