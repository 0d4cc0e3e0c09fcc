//! Seeded (source, target) pairs shared by the property tests and `examples/vcdiff_corpus.rs`.

use rand::rngs::StdRng;
use rand::Rng;

/// A random pair: unrelated bytes, small alphabets (runs and repeats), or a target made by
/// editing the source (replace, insert, delete, duplicate, long runs), with empty sides too.
pub(crate) fn pair(rng: &mut StdRng) -> (Vec<u8>, Vec<u8>) {
    let max_len = if rng.gen_ratio(1, 50) { 20_000 } else { 400 };
    let alphabet = match rng.gen_range(0..4) {
        0 => 1,
        1 => 4,
        2 => 26,
        _ => 256,
    };
    let bytes = |len: usize, rng: &mut StdRng| -> Vec<u8> {
        (0..len).map(|_| rng.gen_range(0..alphabet) as u8).collect()
    };
    let source_len = rng.gen_range(0..=max_len);
    let source = bytes(source_len, rng);
    if rng.gen_ratio(1, 5) {
        let target_len = rng.gen_range(0..=max_len);
        return (source, bytes(target_len, rng));
    }
    let mut target = source.clone();
    for _ in 0..rng.gen_range(0..8) {
        let at = rng.gen_range(0..=target.len());
        match rng.gen_range(0..5) {
            0 => {
                let len = rng.gen_range(0..=(target.len() - at).min(32));
                let fresh = bytes(len, rng);
                target.splice(at..at + len, fresh);
            }
            1 => {
                let len = rng.gen_range(0..32);
                let fresh = bytes(len, rng);
                target.splice(at..at, fresh);
            }
            2 => {
                let len = rng.gen_range(0..=(target.len() - at).min(64));
                target.drain(at..at + len);
            }
            3 => {
                let len = rng.gen_range(0..=(target.len() - at).min(64));
                let copy = target[at..at + len].to_vec();
                let to = rng.gen_range(0..=target.len());
                target.splice(to..to, copy);
            }
            _ => {
                let len = rng.gen_range(0..300);
                let byte = rng.gen();
                target.splice(at..at, std::iter::repeat_n(byte, len));
            }
        }
    }
    (source, target)
}

/// A JSON object of about `bytes` bytes, and the same object with `changed_percent` of its
/// fields given new values of the same shape.
pub(crate) fn json_pair(
    rng: &mut StdRng,
    bytes: usize,
    changed_percent: u32,
) -> (Vec<u8>, Vec<u8>) {
    let mut values = Vec::new();
    let mut len = 2;
    while len < bytes {
        let value = json_value(rng);
        len += format!("\"field_{:03}\":{value},", values.len()).len();
        values.push(value);
    }
    let source = json_object(&values);
    for value in values.iter_mut() {
        if rng.gen_ratio(changed_percent, 100) {
            *value = json_value(rng);
        }
    }
    (source, json_object(&values))
}

fn json_value(rng: &mut StdRng) -> String {
    match rng.gen_range(0..3) {
        0 => rng.gen_range(0..1_000_000).to_string(),
        1 => format!("\"user-{:08x}\"", rng.gen::<u32>()),
        _ => (rng.gen_ratio(1, 2)).to_string(),
    }
}

fn json_object(values: &[String]) -> Vec<u8> {
    let fields: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, value)| format!("\"field_{i:03}\":{value}"))
        .collect();
    format!("{{{}}}", fields.join(",")).into_bytes()
}
