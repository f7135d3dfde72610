//! Answers of pure functions remembered per thread: at most a bound of
//! them, all forgotten at once when full (what is kept changes no outcome,
//! only how often the function runs). Used for parsed zone names
//! (`local_time::zone_named`) and rendered templates (`rendered.rs`).

use rustc_hash::FxHashMap;
use std::borrow::Borrow;
use std::cell::RefCell;
use std::hash::Hash;
use std::thread::LocalKey;

/// One thread's remembered answers by key.
pub type Memo<K, V> = RefCell<FxHashMap<K, V>>;

/// The answer for `key` in `memo`: the one remembered, else `answer()`'s,
/// remembered (the memo emptied first when it holds `max`). A thread being
/// torn down, whose memo is gone, gets `answer()`'s.
pub fn remembered<K, Q, V>(memo: &'static LocalKey<Memo<K, V>>, max: usize, key: &Q, answer: impl FnOnce() -> V) -> V
where
    K: Borrow<Q> + Hash + Eq + for<'a> From<&'a Q>,
    Q: Hash + Eq + ?Sized,
    V: Clone,
{
    if let Some(known) = memo.try_with(|memo| memo.borrow().get(key).cloned()).ok().flatten() {
        return known;
    }
    let value = answer();
    let _ = memo.try_with(|memo| {
        let mut memo = memo.borrow_mut();
        if memo.len() >= max {
            memo.clear();
        }
        memo.insert(K::from(key), value.clone());
    });
    value
}
