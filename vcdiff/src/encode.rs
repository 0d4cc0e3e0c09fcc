//! The encoder: one window over the whole source, greedy matching against source and target.
//!
//! Every 4-byte position of the source, and of the target as the encoder passes it, goes into a
//! hash table of chains (Lempel-Ziv style, as zlib does). At each target position the encoder
//! walks at most [`MAX_CHAIN`] candidates, takes the longest match, extends it backwards over
//! bytes it had set aside for an ADD, and jumps past it. Repeated bytes become RUNs. The chain cap
//! keeps the work linear on repetitive input; memory is one `u32` per input byte plus a table of
//! at most 2^[`MAX_HASH_BITS`] heads.

use crate::address_cache::{AddressCache, Encoded};
use crate::code_table::{tables, Tables};
use crate::{varint, MAGIC, VCD_SOURCE, VERSION_RFC};

/// Shortest match worth a COPY: the default code table has no COPY opcode below 4 bytes.
const MIN_MATCH: usize = 4;
/// Candidates examined per position: enough to find the right spot in small JSON messages, few
/// enough that a megabyte of one repeated byte still encodes in linear time.
const MAX_CHAIN: usize = 32;
/// Shortest run of one byte sent as a RUN (opcode, size, byte) rather than left to ADD or COPY.
const MIN_RUN: usize = 8;
/// Bounds the head table at 1 MiB whatever the input size.
const MAX_HASH_BITS: u32 = 18;
const MIN_HASH_BITS: u32 = 8;

/// A VCDIFF delta turning `source` into `target`: header `D6 C3 C4 00`, Hdr_Indicator 0 (no
/// secondary compressor, default code table) and one window, with `VCD_SOURCE` over the whole
/// source unless the source is empty. Decodable by any RFC 3284 decoder, including
/// `@ably/vcdiff-decoder`.
pub fn encode(source: &[u8], target: &[u8]) -> Vec<u8> {
    let sections = Sections::build(source, target);

    let mut encoding = Vec::with_capacity(
        16 + sections.data.len() + sections.instructions.len() + sections.addresses.len(),
    );
    varint::write(&mut encoding, target.len() as u64);
    encoding.push(0); // Delta_Indicator: no secondary compression
    varint::write(&mut encoding, sections.data.len() as u64);
    varint::write(&mut encoding, sections.instructions.len() as u64);
    varint::write(&mut encoding, sections.addresses.len() as u64);
    encoding.extend_from_slice(&sections.data);
    encoding.extend_from_slice(&sections.instructions);
    encoding.extend_from_slice(&sections.addresses);

    let mut delta = Vec::with_capacity(encoding.len() + 24);
    delta.extend_from_slice(&MAGIC);
    delta.push(VERSION_RFC);
    delta.push(0); // Hdr_Indicator
    if source.is_empty() {
        delta.push(0);
    } else {
        delta.push(VCD_SOURCE);
        varint::write(&mut delta, source.len() as u64);
        varint::write(&mut delta, 0);
    }
    varint::write(&mut delta, encoding.len() as u64);
    delta.extend_from_slice(&encoding);
    delta
}

/// A window's three sections, filled instruction by instruction.
struct Sections {
    data: Vec<u8>,
    instructions: Vec<u8>,
    addresses: Vec<u8>,
    cache: AddressCache,
    tables: &'static Tables,
    /// The last opcode written, if it carried no size, so the next may merge with it.
    last_lone: Option<(usize, u8)>,
}

impl Sections {
    fn build(source: &[u8], target: &[u8]) -> Self {
        let mut sections = Sections {
            data: Vec::new(),
            instructions: Vec::new(),
            addresses: Vec::new(),
            cache: AddressCache::new(),
            tables: tables(),
            last_lone: None,
        };
        let mut matcher = Matcher::new(source, target);
        let n_source = source.len();
        let mut position = 0;
        let mut unmatched_from = 0;
        while position + MIN_MATCH <= target.len() {
            matcher.index_target_before(position);
            let run = run_length(&target[position..]);
            let found = matcher.longest_match(position);
            if run >= MIN_RUN && found.is_none_or(|(_, len)| run >= len) {
                sections.add(&target[unmatched_from..position]);
                sections.run(target[position], run);
                position += run;
                unmatched_from = position;
                continue;
            }
            let Some((mut address, mut len)) = found else {
                position += 1;
                continue;
            };
            // Bytes just before the match may match too (their hash was never looked up there).
            let floor = if address < n_source { 0 } else { n_source };
            let mut start = position;
            while start > unmatched_from
                && address > floor
                && matcher.byte_at(address - 1) == target[start - 1]
            {
                address -= 1;
                start -= 1;
                len += 1;
            }
            let here = (n_source + start) as u64;
            if !sections.copy_pays(address as u64, here, len) {
                position += 1;
                continue;
            }
            sections.add(&target[unmatched_from..start]);
            sections.copy(address as u64, here, len);
            position = start + len;
            unmatched_from = position;
        }
        sections.add(&target[unmatched_from..]);
        sections
    }

    fn add(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.data.extend_from_slice(bytes);
        let (opcode, size_follows) = self.tables.add_opcode(bytes.len());
        self.instruction(opcode, size_follows.then_some(bytes.len()));
    }

    fn run(&mut self, byte: u8, len: usize) {
        self.data.push(byte);
        // Opcode 0 is the default table's only RUN, size always explicit.
        self.instruction(0, Some(len));
    }

    /// Whether a COPY costs fewer bytes than the ADD it replaces.
    fn copy_pays(&self, address: u64, here: u64, len: usize) -> bool {
        let address_bytes = match self.cache.encode(address, here) {
            Encoded::Byte(..) => 1,
            Encoded::Integer(_, operand) => varint::len(operand),
        };
        let size_bytes = if len > 18 { varint::len(len as u64) } else { 0 };
        1 + address_bytes + size_bytes < len
    }

    fn copy(&mut self, address: u64, here: u64, len: usize) {
        let mode = match self.cache.encode(address, here) {
            Encoded::Byte(mode, byte) => {
                self.addresses.push(byte);
                mode
            }
            Encoded::Integer(mode, operand) => {
                varint::write(&mut self.addresses, operand);
                mode
            }
        };
        self.cache.update(address);
        let (opcode, size_follows) = self.tables.copy_opcode(len, mode);
        self.instruction(opcode, size_follows.then_some(len));
    }

    /// Writes an opcode, merged into the previous one when the code table has the pair.
    fn instruction(&mut self, opcode: u8, explicit_size: Option<usize>) {
        if explicit_size.is_none() {
            if let Some((at, previous)) = self.last_lone {
                if let Some(pair) = self.tables.pair_opcode(previous, opcode) {
                    self.instructions[at] = pair;
                    self.last_lone = None;
                    return;
                }
            }
        }
        let at = self.instructions.len();
        self.instructions.push(opcode);
        match explicit_size {
            Some(size) => {
                varint::write(&mut self.instructions, size as u64);
                self.last_lone = None;
            }
            None => self.last_lone = Some((at, opcode)),
        }
    }
}

/// How many times `bytes[0]` repeats from the start.
fn run_length(bytes: &[u8]) -> usize {
    match bytes.first() {
        Some(&first) => bytes.iter().take_while(|&&b| b == first).count(),
        None => 0,
    }
}

/// Hash chains over U = source ++ target, positions stored plus one (0 ends a chain).
struct Matcher<'a> {
    source: &'a [u8],
    target: &'a [u8],
    heads: Vec<u32>,
    previous: Vec<u32>,
    shift: u32,
    /// Next target position to index.
    indexed: usize,
}

impl<'a> Matcher<'a> {
    fn new(source: &'a [u8], target: &'a [u8]) -> Self {
        let total = source.len() + target.len();
        // Positions are u32s; past that the encoder still works, as plain ADDs.
        let enabled = total < u32::MAX as usize;
        let bits = if enabled {
            (usize::BITS - total.leading_zeros()).clamp(MIN_HASH_BITS, MAX_HASH_BITS)
        } else {
            MIN_HASH_BITS
        };
        let mut matcher = Matcher {
            source,
            target,
            heads: vec![0; if enabled { 1 << bits } else { 0 }],
            previous: vec![0; if enabled { total } else { 0 }],
            shift: 32 - bits,
            indexed: if enabled { 0 } else { usize::MAX },
        };
        if enabled {
            for position in 0..(source.len() + 1).saturating_sub(MIN_MATCH) {
                matcher.insert(position, &source[position..position + MIN_MATCH]);
            }
        }
        matcher
    }

    fn hash(&self, four: &[u8]) -> usize {
        let word = u32::from_le_bytes([four[0], four[1], four[2], four[3]]);
        (word.wrapping_mul(0x9E37_79B1) >> self.shift) as usize
    }

    fn insert(&mut self, u_position: usize, four: &[u8]) {
        let slot = self.hash(four);
        self.previous[u_position] = self.heads[slot];
        self.heads[slot] = u_position as u32 + 1;
    }

    /// Makes target positions below `position` candidates for later matches.
    fn index_target_before(&mut self, position: usize) {
        while self.indexed < position && self.indexed + MIN_MATCH <= self.target.len() {
            let at = self.indexed;
            self.insert(self.source.len() + at, &self.target[at..at + MIN_MATCH]);
            self.indexed += 1;
        }
    }

    fn byte_at(&self, u_position: usize) -> u8 {
        match u_position.checked_sub(self.source.len()) {
            None => self.source[u_position],
            Some(in_target) => self.target[in_target],
        }
    }

    /// The longest match for the target at `position`: (address in U, length >= MIN_MATCH).
    /// Source matches stop at the source's end; target matches may run into `position` and past
    /// it, which the decoder reproduces byte by byte.
    fn longest_match(&self, position: usize) -> Option<(usize, usize)> {
        if self.heads.is_empty() {
            return None;
        }
        let wanted = &self.target[position..];
        let mut best: Option<(usize, usize)> = None;
        let mut link = self.heads[self.hash(&wanted[..MIN_MATCH])];
        for _ in 0..MAX_CHAIN {
            let Some(candidate) = (link as usize).checked_sub(1) else {
                break;
            };
            let from = match candidate.checked_sub(self.source.len()) {
                None => &self.source[candidate..],
                Some(in_target) => &self.target[in_target..],
            };
            let len = common_prefix(from, wanted);
            if len >= MIN_MATCH && best.is_none_or(|(_, best_len)| len > best_len) {
                best = Some((candidate, len));
                if len == wanted.len() {
                    break;
                }
            }
            link = self.previous[candidate];
        }
        best
    }
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    const WORD: usize = 8;
    let limit = a.len().min(b.len());
    let mut n = 0;
    while n + WORD <= limit && a[n..n + WORD] == b[n..n + WORD] {
        n += WORD;
    }
    while n < limit && a[n] == b[n] {
        n += 1;
    }
    n
}
