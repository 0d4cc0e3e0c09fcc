//! The stamped payload every publication carries: who published it, its sequence number and when,
//! padded to the requested size. Plain ASCII so it travels as a string in JSON and msgpack alike
//! (and later through peers' protocols unchanged).

/// `<publisher>:<seq>:<sent_us>:` then `x` up to `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: u32,
    pub seq: u64,
    pub sent_us: u64,
}

impl Stamp {
    pub fn encode(&self, size: usize) -> String {
        let mut text = format!("{}:{}:{}:", self.publisher, self.seq, self.sent_us);
        if text.len() < size {
            text.extend(std::iter::repeat_n('x', size - text.len()));
        }
        text
    }

    pub fn parse(payload: &[u8]) -> Option<Stamp> {
        let mut fields = payload.splitn(4, |b| *b == b':');
        let mut number =
            || -> Option<u64> { std::str::from_utf8(fields.next()?).ok()?.parse().ok() };
        Some(Stamp {
            publisher: u32::try_from(number()?).ok()?,
            seq: number()?,
            sent_us: number()?,
        })
    }
}

#[cfg(test)]
mod tests;
