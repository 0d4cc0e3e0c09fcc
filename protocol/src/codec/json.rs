use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{DecodeError, EncodeError};

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    Ok(serde_json::from_slice(bytes)?)
}

pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    serde_json::to_vec(value).map_err(|e| EncodeError(e.to_string()))
}
