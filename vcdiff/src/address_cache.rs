//! RFC 3284 §5.1's address caches, shared by encoder and decoder so both update them alike.

use crate::varint;

const NEAR_SLOTS: usize = 4;
const SAME_SLOTS: usize = 3;
const SAME_SIZE: usize = SAME_SLOTS * 256;

pub(crate) const MODE_SELF: u8 = 0;
pub(crate) const MODE_HERE: u8 = 1;
const FIRST_NEAR: u8 = 2;
const FIRST_SAME: u8 = FIRST_NEAR + NEAR_SLOTS as u8;

/// How the encoder writes one address: its mode and the integer or byte in the address section.
pub(crate) enum Encoded {
    Integer(u8, u64),
    Byte(u8, u8),
}

pub(crate) struct AddressCache {
    near: [u64; NEAR_SLOTS],
    next_near: usize,
    same: [u64; SAME_SIZE],
}

impl AddressCache {
    pub(crate) fn new() -> Self {
        Self {
            near: [0; NEAR_SLOTS],
            next_near: 0,
            same: [0; SAME_SIZE],
        }
    }

    pub(crate) fn update(&mut self, address: u64) {
        self.near[self.next_near] = address;
        self.next_near = (self.next_near + 1) % NEAR_SLOTS;
        self.same[(address % SAME_SIZE as u64) as usize] = address;
    }

    /// Whether `mode` reads one byte (same cache) rather than an integer.
    pub(crate) fn reads_byte(mode: u8) -> bool {
        mode >= FIRST_SAME
    }

    /// The address a mode and its operand denote, `None` if the mode is out of range or the sum
    /// overflows. Does not update the cache.
    pub(crate) fn resolve(&self, mode: u8, operand: u64, here: u64) -> Option<u64> {
        match mode {
            MODE_SELF => Some(operand),
            MODE_HERE => here.checked_sub(operand),
            m if m < FIRST_SAME => self.near[usize::from(m - FIRST_NEAR)].checked_add(operand),
            m => {
                let slot = usize::from(m - FIRST_SAME) * 256 + usize::try_from(operand).ok()?;
                self.same.get(slot).copied()
            }
        }
    }

    /// The cheapest encoding of `address` at `here`. Does not update the cache.
    pub(crate) fn encode(&self, address: u64, here: u64) -> Encoded {
        let slot = (address % SAME_SIZE as u64) as usize;
        if self.same[slot] == address {
            return Encoded::Byte(FIRST_SAME + (slot / 256) as u8, (slot % 256) as u8);
        }
        let mut best = Encoded::Integer(MODE_SELF, address);
        let mut best_len = varint::len(address);
        let mut consider = |mode: u8, operand: u64| {
            let len = varint::len(operand);
            if len < best_len {
                best = Encoded::Integer(mode, operand);
                best_len = len;
            }
        };
        consider(MODE_HERE, here - address);
        for (i, &near) in self.near.iter().enumerate() {
            if let Some(offset) = address.checked_sub(near) {
                consider(FIRST_NEAR + i as u8, offset);
            }
        }
        best
    }
}
