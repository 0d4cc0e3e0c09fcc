//! Tables that grew with a flood of connections give their memory back once it has gone.
//!
//! A `Vec`, `HashMap` or `DashMap` never shrinks by itself: after 15,000 connections close, the
//! maps that held them (live keys, the client registry, a busy channel's subscribers and
//! presence members, the hub's channels, the per-address socket counts) keep room for 15,000 and
//! the allocator cannot return those pages. Each is shrunk where entries leave (or, for the
//! `DashMap`s, by the gateway's sweep every 30 s) once it holds less than a quarter of its
//! capacity, to twice what it holds, so a table that empties and refills a little does not
//! rehash back and forth. Small tables are left alone: their slack costs less than the churn.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hash};

use dashmap::DashMap;

/// Tables with room for fewer entries than this are never shrunk.
pub const MIN_CAPACITY: usize = 64;

/// Holding `len` with room for `capacity`: worth shrinking.
pub fn is_sparse(len: usize, capacity: usize) -> bool {
    capacity > MIN_CAPACITY && len < capacity / 4
}

pub fn vec<T>(items: &mut Vec<T>) {
    if is_sparse(items.len(), items.capacity()) {
        items.shrink_to(items.len() * 2);
    }
}

pub fn vec_deque<T>(items: &mut VecDeque<T>) {
    if is_sparse(items.len(), items.capacity()) {
        items.shrink_to(items.len() * 2);
    }
}

pub fn hash_map<K: Hash + Eq, V, S: BuildHasher>(map: &mut HashMap<K, V, S>) {
    if is_sparse(map.len(), map.capacity()) {
        map.shrink_to(map.len() * 2);
    }
}

pub fn hash_set<T: Hash + Eq, S: BuildHasher>(set: &mut HashSet<T, S>) {
    if is_sparse(set.len(), set.capacity()) {
        set.shrink_to(set.len() * 2);
    }
}

/// Shrinks every shard to fit (a `DashMap` has no `shrink_to`): for the sweep, not per removal.
pub fn dash_map<K: Hash + Eq, V>(map: &DashMap<K, V>) {
    if is_sparse(map.len(), map.capacity()) {
        map.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests;
