//! vcdiff's tests: round trips through our encoder, hand-built deltas for what the decoder reads
//! but the encoder never writes, and malformed input.

mod decoder;
mod malformed;
mod pairs;
mod round_trip;
