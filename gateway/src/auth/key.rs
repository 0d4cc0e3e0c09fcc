use crate::config::ApiKey;

impl ApiKey {
    pub(crate) fn secret_matches(&self, offered: &str) -> bool {
        constant_time_eq(self.secret.as_bytes(), offered.as_bytes())
    }
}

/// Comparison whose time does not depend on where the first difference is.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
