use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{DecodeError, EncodeError};

/// How deep arrays and maps may nest, as in serde_json. rmp-serde allows 1,024 levels, which
/// is deeper than a 2 MiB thread stack (a test's, a tokio worker's) survives when a payload is
/// read into a `serde_json::Value`: a 3 KB frame would abort the process.
const MAX_DEPTH: usize = 128;

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let mut deserializer = rmp_serde::Deserializer::from_read_ref(bytes);
    deserializer.set_max_depth(MAX_DEPTH);
    Ok(T::deserialize(&mut deserializer)?)
}

/// Maps with field names, as the Ably SDKs expect (rmp's default is positional arrays).
pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    rmp_serde::to_vec_named(value).map_err(|e| EncodeError(e.to_string()))
}
