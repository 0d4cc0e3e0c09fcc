use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{DecodeError, EncodeError};

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

/// Maps with field names, as the Ably SDKs expect (rmp's default is positional arrays).
pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    rmp_serde::to_vec_named(value).map_err(|e| EncodeError(e.to_string()))
}
