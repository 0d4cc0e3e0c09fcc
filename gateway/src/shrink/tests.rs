use super::*;

#[test]
fn a_vec_emptied_after_a_flood_shrinks_and_a_full_one_does_not() {
    let mut items: Vec<u64> = (0..10_000).collect();
    vec(&mut items);
    assert!(items.capacity() >= 10_000, "full: left alone");
    items.truncate(100);
    vec(&mut items);
    assert!(
        items.capacity() <= 400,
        "sparse: shrunk to about twice its length, got {}",
        items.capacity()
    );
    assert_eq!(items.len(), 100);
    let capacity = items.capacity();
    vec(&mut items);
    assert_eq!(items.capacity(), capacity, "no shrinking back and forth");
}

#[test]
fn small_tables_are_left_alone() {
    let mut items: Vec<u64> = Vec::with_capacity(MIN_CAPACITY);
    items.push(1);
    vec(&mut items);
    assert_eq!(items.capacity(), MIN_CAPACITY);
    assert!(!is_sparse(0, MIN_CAPACITY));
    assert!(is_sparse(0, MIN_CAPACITY + 1));
}

#[test]
fn hash_maps_sets_and_deques_shrink_once_sparse() {
    let mut map: HashMap<u64, String> = (0..10_000).map(|n| (n, n.to_string())).collect();
    let mut set: HashSet<u64> = (0..10_000).collect();
    let mut deque: VecDeque<u64> = (0..10_000).collect();
    map.retain(|n, _| *n < 10);
    set.retain(|n| *n < 10);
    deque.truncate(10);
    hash_map(&mut map);
    hash_set(&mut set);
    vec_deque(&mut deque);
    assert!(map.capacity() < 100, "map: {}", map.capacity());
    assert!(set.capacity() < 100, "set: {}", set.capacity());
    assert!(deque.capacity() < 100, "deque: {}", deque.capacity());
    assert_eq!((map.len(), set.len(), deque.len()), (10, 10, 10));
    assert_eq!(map.get(&3).map(String::as_str), Some("3"), "entries kept");
}

#[test]
fn a_dash_map_shrinks_on_the_sweep_once_sparse() {
    let map: DashMap<u64, u64> = DashMap::new();
    for n in 0..10_000 {
        map.insert(n, n);
    }
    dash_map(&map);
    let full = map.capacity();
    assert!(full >= 10_000, "full: left alone");
    map.retain(|n, _| *n < 10);
    dash_map(&map);
    assert!(map.capacity() < full / 10, "shrunk: {}", map.capacity());
    assert_eq!(map.len(), 10);
}
