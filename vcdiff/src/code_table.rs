//! RFC 3284 §5.6's default code table, and the reverse look-ups the encoder needs.

use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Noop,
    Add,
    Run,
    Copy,
}

/// One half of a code table entry. `size` 0 means the size follows as an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Half {
    pub(crate) kind: Kind,
    pub(crate) size: u8,
    pub(crate) mode: u8,
}

const NOOP: Half = Half {
    kind: Kind::Noop,
    size: 0,
    mode: 0,
};

const fn add(size: u8) -> Half {
    Half {
        kind: Kind::Add,
        size,
        mode: 0,
    }
}

const fn copy(size: u8, mode: u8) -> Half {
    Half {
        kind: Kind::Copy,
        size,
        mode,
    }
}

/// Number of COPY modes in the default table: SELF, HERE, 4 near, 3 same.
pub(crate) const N_MODES: u8 = 9;
/// Largest ADD size with its own opcode.
const MAX_FIXED_ADD: usize = 17;
/// COPY sizes with their own opcode.
const MIN_FIXED_COPY: usize = 4;
const MAX_FIXED_COPY: usize = 18;

pub(crate) struct Tables {
    /// opcode -> its two halves.
    pub(crate) entries: [[Half; 2]; 256],
    /// [size] -> opcode of a lone ADD of that size (0: size follows).
    add: [u8; MAX_FIXED_ADD + 1],
    /// [mode][size] -> opcode of a lone COPY (size 0: size follows).
    copy: [[u8; MAX_FIXED_COPY + 1]; N_MODES as usize],
    /// [first opcode][second opcode] -> the pair's combined opcode, 0 if none.
    pair: Vec<[u8; 256]>,
}

pub(crate) fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(build)
}

impl Tables {
    /// The opcode for a lone ADD and whether its size must follow.
    pub(crate) fn add_opcode(&self, size: usize) -> (u8, bool) {
        match self.add.get(size) {
            Some(&opcode) if size > 0 => (opcode, false),
            _ => (self.add[0], true),
        }
    }

    /// The opcode for a lone COPY and whether its size must follow.
    pub(crate) fn copy_opcode(&self, size: usize, mode: u8) -> (u8, bool) {
        let by_size = &self.copy[usize::from(mode)];
        if (MIN_FIXED_COPY..=MAX_FIXED_COPY).contains(&size) {
            (by_size[size], false)
        } else {
            (by_size[0], true)
        }
    }

    /// One opcode doing `first` then `second` (both fixed-size lone opcodes), if the table has it.
    pub(crate) fn pair_opcode(&self, first: u8, second: u8) -> Option<u8> {
        match self.pair[usize::from(first)][usize::from(second)] {
            0 => None,
            opcode => Some(opcode),
        }
    }
}

fn build() -> Tables {
    let mut entries = Vec::with_capacity(256);
    entries.push([
        Half {
            kind: Kind::Run,
            size: 0,
            mode: 0,
        },
        NOOP,
    ]);
    for size in 0..=MAX_FIXED_ADD as u8 {
        entries.push([add(size), NOOP]);
    }
    for mode in 0..N_MODES {
        entries.push([copy(0, mode), NOOP]);
        for size in MIN_FIXED_COPY as u8..=MAX_FIXED_COPY as u8 {
            entries.push([copy(size, mode), NOOP]);
        }
    }
    for mode in 0..6 {
        for add_size in 1..=4 {
            for copy_size in 4..=6 {
                entries.push([add(add_size), copy(copy_size, mode)]);
            }
        }
    }
    for mode in 6..N_MODES {
        for add_size in 1..=4 {
            entries.push([add(add_size), copy(4, mode)]);
        }
    }
    for mode in 0..N_MODES {
        entries.push([copy(4, mode), add(1)]);
    }
    let entries: [[Half; 2]; 256] = entries
        .try_into()
        .expect("RFC 3284 §5.6 lists exactly 256 entries");

    let mut tables = Tables {
        entries,
        add: [0; MAX_FIXED_ADD + 1],
        copy: [[0; MAX_FIXED_COPY + 1]; N_MODES as usize],
        pair: vec![[0; 256]; 256],
    };
    let mut lone = std::collections::HashMap::new();
    for (opcode, [first, second]) in entries.iter().enumerate() {
        if second.kind != Kind::Noop {
            continue;
        }
        let opcode = opcode as u8;
        lone.insert(*first, opcode);
        match first.kind {
            Kind::Add => tables.add[usize::from(first.size)] = opcode,
            Kind::Copy => {
                tables.copy[usize::from(first.mode)][usize::from(first.size)] = opcode;
            }
            Kind::Noop | Kind::Run => {}
        }
    }
    for (opcode, [first, second]) in entries.iter().enumerate() {
        if first.kind == Kind::Noop || second.kind == Kind::Noop {
            continue;
        }
        tables.pair[usize::from(lone[first])][usize::from(lone[second])] = opcode as u8;
    }
    tables
}
