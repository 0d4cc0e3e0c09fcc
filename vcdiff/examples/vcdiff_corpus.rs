//! Writes seeded (source, target, delta) triples for checking our deltas with other decoders:
//! `vcdiff_corpus DIR [N] [SEED]` writes `DIR/NNNNN.source`, `.target` and `.delta`, N of each
//! (default 500). tests/sdk/vcdiff.test.mjs decodes them with `@ably/vcdiff-decoder`.

use std::path::PathBuf;
use std::process::ExitCode;

use rand::rngs::StdRng;
use rand::SeedableRng;

#[path = "../tests/it/pairs.rs"]
mod pairs;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: vcdiff_corpus DIR [N] [SEED]");
        return ExitCode::FAILURE;
    };
    let parse = |arg: Option<String>, default: u64| match arg {
        None => Some(default),
        Some(text) => text.parse().ok(),
    };
    let (Some(count), Some(seed)) = (parse(args.next(), 500), parse(args.next(), 1)) else {
        eprintln!("N and SEED must be integers");
        return ExitCode::FAILURE;
    };
    let mut rng = StdRng::seed_from_u64(seed);
    for case in 0..count {
        // One in four is the realistic case: a JSON message and its successor.
        let (source, target) = if case % 4 == 0 {
            pairs::json_pair(&mut rng, 2048, 5)
        } else {
            pairs::pair(&mut rng)
        };
        let delta = vcdiff::encode(&source, &target);
        for (extension, bytes) in [("source", &source), ("target", &target), ("delta", &delta)] {
            let path = dir.join(format!("{case:05}.{extension}"));
            if let Err(error) = std::fs::write(&path, bytes) {
                eprintln!("{}: {error}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
