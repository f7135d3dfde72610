//! Interned names: the journeys, events, segments, messages and profile
//! attributes a customer's state is keyed by, as [`Name`]s compared by identity, not by text.
//!
//! **Design.** A [`Name`] is a reference to the one copy of its text this
//! process keeps (interned once, never freed: the names a state can hold
//! are those workspaces declare, since intake refuses undeclared events and
//! attributes, so they are few and bounded by the workspace versions
//! loaded). Two names are
//! equal when they are the same copy, so a look-up compares a pointer, not
//! the bytes. A [`NameMap`] keeps its entries in a vector sorted by the
//! names' text, so it iterates in name order as the `BTreeMap<String, _>`s it
//! replaces did (trace lines follow that order), and a look-up scans the few
//! entries by identity.
//!
//! **At the edges** a name is its text: serde writes it as a string (JSON
//! export, HTTP, postcard outside the store), so those formats are what they
//! were. The store writes it as a small integer instead, the name's id in
//! the store's [`Dictionary`] (`daemon/store.rs`, prefix `n`): while a
//! [`Dictionary`] is [`encoding`](Dictionary::encode) or
//! [`decoding`](Dictionary::decode) on a thread, names serialize as their ids.
//! Ids are given in order of first use and never reused, so they stay
//! stable across workspace versions and restarts.
//!
//! **Version hashes** are names too: the 64-hex-digit content hash of a
//! journey version that an enrollment, an ended enrollment's attribution
//! and a remembered send run on or came from (`state.rs`), interned once
//! per loaded program (the engine's `Loaded::hashes`), so the engine's
//! look-up of a step's version hashes a pointer and `enrollment.version ==
//! current` compares one. They are bounded as the other names are: one
//! per journey of each workspace version loaded (or read from a record or
//! an export, which hold the versions the store ran). They are written as
//! their text everywhere, the store included ([`text`]), so the records'
//! bytes are what the `String`s gave.

use rustc_hash::FxHashMap;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

/// An interned name: equal to another exactly when the texts are equal,
/// compared by identity; ordered by text.
#[derive(Clone, Copy)]
pub struct Name(&'static str);

/// Every name interned by this process.
fn interned() -> &'static Mutex<FxHashMap<&'static str, Name>> {
    static NAMES: OnceLock<Mutex<FxHashMap<&'static str, Name>>> = OnceLock::new();
    NAMES.get_or_init(Default::default)
}

impl Name {
    /// The name with this text (interned on first use).
    pub fn intern(text: &str) -> Name {
        let mut names = interned().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(name) = names.get(text) {
            return *name;
        }
        let text: &'static str = Box::leak(text.to_string().into_boxed_str());
        let name = Name(text);
        names.insert(text, name);
        name
    }

    /// The name with this text, if any state or workspace used it (no
    /// name is interned: for look-ups at the edges).
    pub fn find(text: &str) -> Option<Name> {
        interned().lock().unwrap_or_else(|e| e.into_inner()).get(text).copied()
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for Name {}

impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.0.as_ptr() as usize).hash(state)
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> std::cmp::Ordering {
        if self == other {
            return std::cmp::Ordering::Equal;
        }
        self.0.cmp(other.0)
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.0, f)
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl From<&str> for Name {
    fn from(text: &str) -> Name {
        Name::intern(text)
    }
}

/// The profile attributes the interpreter itself reads, interned once per
/// process.
pub struct Attributes {
    pub timezone: Name,
    pub email: Name,
    pub locale: Name,
}

pub fn attributes() -> &'static Attributes {
    static ATTRIBUTES: OnceLock<Attributes> = OnceLock::new();
    ATTRIBUTES.get_or_init(|| Attributes {
        timezone: Name::intern("timezone"),
        email: Name::intern("email"),
        locale: Name::intern("locale"),
    })
}

/// The interned names of `texts`, in order (a bundle's name table).
pub fn intern_all(texts: &[String]) -> Box<[Name]> {
    texts.iter().map(|text| Name::intern(text)).collect()
}

// ------------------------------------------------------------ serde

/// What serde writes a name as on this thread: its text unless a
/// [`Dictionary`] is encoding or decoding.
enum Codec {
    Encoding {
        dictionary: Arc<Dictionary>,
        /// Ids used that the store may not hold yet ([`Dictionary::encode`]).
        pending: Vec<(u32, Name)>,
    },
    Decoding(Arc<Dictionary>),
}

thread_local! {
    static CODEC: RefCell<Option<Codec>> = const { RefCell::new(None) };
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let id = CODEC.with(|codec| match &mut *codec.borrow_mut() {
            Some(Codec::Encoding { dictionary, pending }) => Some(dictionary.id(*self, pending)),
            _ => None,
        });
        match id {
            Some(id) => serializer.serialize_u32(id),
            None => serializer.serialize_str(self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Name, D::Error> {
        let dictionary = CODEC.with(|codec| match &*codec.borrow() {
            Some(Codec::Decoding(dictionary)) => Some(dictionary.clone()),
            _ => None,
        });
        match dictionary {
            Some(dictionary) => {
                let id = u32::deserialize(deserializer)?;
                dictionary
                    .name(id)
                    .ok_or_else(|| serde::de::Error::custom(format!("name id {id} is not in the store's dictionary")))
            }
            None => deserializer.deserialize_str(NameVisitor),
        }
    }
}

struct NameVisitor;

impl Visitor<'_> for NameVisitor {
    type Value = Name;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a name")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Name, E> {
        Ok(Name::intern(text))
    }
}

// ------------------------------------------------------------ dictionary

/// A store's names by id: id `i` is the `i`-th name the store ever gave an
/// id, never reused. The store keeps one per open store and persists each
/// name in (or before) the batch of the first record that uses its id.
#[derive(Default)]
pub struct Dictionary {
    inner: RwLock<Ids>,
}

#[derive(Default)]
struct Ids {
    /// By id; `None`: an id given to a name whose batch never committed
    /// before a restart (no record uses it).
    names: Vec<Option<Name>>,
    ids: FxHashMap<Name, u32>,
    /// Ids given since the store was read that no committed batch holds
    /// yet ([`Dictionary::confirm`]).
    unwritten: Vec<u32>,
}

impl Dictionary {
    /// A dictionary of the names a store holds, as `(id, name)`.
    pub fn with(names: impl IntoIterator<Item = (u32, Name)>) -> Dictionary {
        let dictionary = Dictionary::default();
        dictionary.extend_from(names);
        dictionary
    }

    /// How many ids are given.
    pub fn len(&self) -> usize {
        self.read().names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name of id `id`.
    pub fn name(&self, id: u32) -> Option<Name> {
        self.read().names.get(id as usize).copied().flatten()
    }

    /// Adds names the store holds that this dictionary does not know yet
    /// (written by another node, read again after a miss). An id this
    /// dictionary gave another name keeps it (it cannot happen while one
    /// node writes; the store's record wins after a restart).
    pub fn extend_from(&self, names: impl IntoIterator<Item = (u32, Name)>) {
        let mut ids = self.write();
        for (id, name) in names {
            let index = id as usize;
            if ids.names.len() <= index {
                ids.names.resize(index + 1, None);
            }
            if ids.names[index].is_none() && !ids.ids.contains_key(&name) {
                ids.names[index] = Some(name);
                ids.ids.insert(name, id);
            }
        }
    }

    /// The id of `name`, given now if it has none; notes in `pending` an id
    /// the store may not hold yet.
    fn id(&self, name: Name, pending: &mut Vec<(u32, Name)>) -> u32 {
        let found = {
            let ids = self.read();
            ids.ids.get(&name).map(|id| (*id, ids.unwritten.contains(id)))
        };
        let (id, unwritten) = found.unwrap_or_else(|| {
            let mut ids = self.write();
            match ids.ids.get(&name) {
                Some(id) => (*id, ids.unwritten.contains(id)),
                None => {
                    let id = ids.names.len() as u32;
                    ids.names.push(Some(name));
                    ids.ids.insert(name, id);
                    ids.unwritten.push(id);
                    (id, true)
                }
            }
        });
        if unwritten && !pending.iter().any(|(known, _)| *known == id) {
            pending.push((id, name));
        }
        id
    }

    /// Gives ids to those of `names` that have none; answers the ids the
    /// store may not hold yet, for the caller to write (then
    /// [`Dictionary::confirm`]).
    pub fn register(&self, names: impl IntoIterator<Item = Name>) -> Vec<(u32, Name)> {
        let mut pending = Vec::new();
        for name in names {
            self.id(name, &mut pending);
        }
        pending
    }

    /// Notes that a batch holding the records of these ids committed.
    pub fn confirm(&self, written: &[(u32, Name)]) {
        if written.is_empty() {
            return;
        }
        let mut ids = self.write();
        ids.unwritten.retain(|id| !written.iter().any(|(done, _)| done == id));
    }

    /// Runs `write` (a serde serialization) with names written as ids;
    /// returns its result and the ids it used that the store may not hold
    /// yet: the caller writes their names in the same batch as the record.
    pub fn encode<T>(self: &Arc<Self>, write: impl FnOnce() -> T) -> (T, Vec<(u32, Name)>) {
        let outer = CODEC.with(|codec| {
            codec.borrow_mut().replace(Codec::Encoding {
                dictionary: self.clone(),
                pending: Vec::new(),
            })
        });
        let result = write();
        let pending = CODEC.with(|codec| match std::mem::replace(&mut *codec.borrow_mut(), outer) {
            Some(Codec::Encoding { pending, .. }) => pending,
            _ => Vec::new(),
        });
        (result, pending)
    }

    /// Runs `read` (a serde deserialization) with names read as ids.
    pub fn decode<T>(self: &Arc<Self>, read: impl FnOnce() -> T) -> T {
        let outer = CODEC.with(|codec| codec.borrow_mut().replace(Codec::Decoding(self.clone())));
        let result = read();
        CODEC.with(|codec| *codec.borrow_mut() = outer);
        result
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Ids> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Ids> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

// ------------------------------------------------------------ maps

/// What a [`NameMap`] is looked up by: a [`Name`], or at the edges (tests,
/// HTTP) a name's text, which finds nothing when no one interned it.
pub trait Key: Copy {
    fn name(self) -> Option<Name>;
}

impl Key for Name {
    fn name(self) -> Option<Name> {
        Some(self)
    }
}

impl Key for &str {
    fn name(self) -> Option<Name> {
        Name::find(self)
    }
}

impl Key for &String {
    fn name(self) -> Option<Name> {
        Name::find(self)
    }
}

/// A small map keyed by [`Name`]s, iterated in the names' text order: a
/// vector sorted by text, looked up by identity.
#[derive(Clone, PartialEq)]
pub struct NameMap<V> {
    entries: Vec<(Name, V)>,
}

/// Above this many entries a look-up bisects by text instead of scanning.
const SCAN_MAX: usize = 16;

impl<V> Default for NameMap<V> {
    fn default() -> Self {
        NameMap { entries: Vec::new() }
    }
}

impl<V: std::fmt::Debug> std::fmt::Debug for NameMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.entries.iter().map(|(k, v)| (k, v))).finish()
    }
}

impl<V> NameMap<V> {
    pub fn new() -> NameMap<V> {
        NameMap::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `Ok(index)` of `key`, or `Err(index)` where it would go.
    fn position(&self, key: Name) -> Result<usize, usize> {
        if self.entries.len() <= SCAN_MAX {
            if let Some(index) = self.entries.iter().position(|(k, _)| *k == key) {
                return Ok(index);
            }
            return Err(self.entries.partition_point(|(k, _)| k.0 < key.0));
        }
        self.entries.binary_search_by(|(k, _)| k.cmp(&key))
    }

    /// The index of `key`: a miss among few entries is a scan by
    /// identity, with no comparison of texts (only an insertion needs to
    /// know where a missing name would go).
    fn find(&self, key: impl Key) -> Option<usize> {
        let key = key.name()?;
        if self.entries.len() <= SCAN_MAX {
            return self.entries.iter().position(|(k, _)| *k == key);
        }
        self.entries.binary_search_by(|(k, _)| k.cmp(&key)).ok()
    }

    pub fn get(&self, key: impl Key) -> Option<&V> {
        self.find(key).map(|index| &self.entries[index].1)
    }

    pub fn get_mut(&mut self, key: impl Key) -> Option<&mut V> {
        self.find(key).map(|index| &mut self.entries[index].1)
    }

    /// The value of the name with this text (at the edges: no interning).
    pub fn get_str(&self, key: &str) -> Option<&V> {
        (self.entries.binary_search_by(|(k, _)| k.0.cmp(key)).ok()).map(|index| &self.entries[index].1)
    }

    pub fn contains_key(&self, key: impl Key) -> bool {
        self.find(key).is_some()
    }

    /// Sets `key` to `value`; returns the value it had.
    pub fn insert(&mut self, key: Name, value: V) -> Option<V> {
        match self.position(key) {
            Ok(index) => Some(std::mem::replace(&mut self.entries[index].1, value)),
            Err(index) => {
                self.entries.insert(index, (key, value));
                None
            }
        }
    }

    pub fn remove(&mut self, key: impl Key) -> Option<V> {
        self.find(key).map(|index| self.entries.remove(index).1)
    }

    /// The value of `key`, the default inserted first if it has none.
    pub fn get_or_default(&mut self, key: Name) -> &mut V
    where
        V: Default,
    {
        self.get_or_insert_with(key, V::default)
    }

    /// The value of `key`, `make()` inserted first if it has none.
    pub fn get_or_insert_with(&mut self, key: Name, make: impl FnOnce() -> V) -> &mut V {
        let index = match self.position(key) {
            Ok(index) => index,
            Err(index) => {
                self.entries.insert(index, (key, make()));
                index
            }
        };
        &mut self.entries[index].1
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&Name, &V)> + ExactSizeIterator {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn iter_mut(&mut self) -> impl DoubleEndedIterator<Item = (&Name, &mut V)> + ExactSizeIterator {
        self.entries.iter_mut().map(|(k, v)| (&*k, v))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = Name> + ExactSizeIterator + '_ {
        self.entries.iter().map(|(k, _)| *k)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator {
        self.entries.iter().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut V> + ExactSizeIterator {
        self.entries.iter_mut().map(|(_, v)| v)
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&Name, &mut V) -> bool) {
        self.entries.retain_mut(|(k, v)| keep(k, v));
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The first entry (in name order) and the last.
    pub fn first_key_value(&self) -> Option<(&Name, &V)> {
        self.entries.first().map(|(k, v)| (k, v))
    }
}

impl<V> std::ops::Index<&str> for NameMap<V> {
    type Output = V;

    /// The value of the name with this text; panics without one, as a
    /// `BTreeMap` does.
    fn index(&self, key: &str) -> &V {
        self.get_str(key).expect("no entry of that name")
    }
}

impl<V> FromIterator<(Name, V)> for NameMap<V> {
    /// Later entries of the same name replace earlier ones.
    fn from_iter<I: IntoIterator<Item = (Name, V)>>(items: I) -> NameMap<V> {
        let mut entries: Vec<(Name, V)> = items.into_iter().collect();
        // Stable: of equal names, the last one given stays last.
        entries.sort_by_key(|entry| entry.0);
        let mut kept: Vec<(Name, V)> = Vec::with_capacity(entries.len());
        for entry in entries {
            match kept.last_mut() {
                Some(last) if last.0 == entry.0 => *last = entry,
                _ => kept.push(entry),
            }
        }
        NameMap { entries: kept }
    }
}

impl<V> IntoIterator for NameMap<V> {
    type Item = (Name, V);
    type IntoIter = std::vec::IntoIter<(Name, V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<'a, V> IntoIterator for &'a NameMap<V> {
    type Item = (&'a Name, &'a V);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (Name, V)>, fn(&'a (Name, V)) -> (&'a Name, &'a V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

impl<V: Serialize> Serialize for NameMap<V> {
    /// As a map, as a `BTreeMap<String, V>` serializes.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.entries.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for NameMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<NameMap<V>, D::Error> {
        deserializer.deserialize_map(MapVisitor::<Name, V>(std::marker::PhantomData))
    }
}

/// Reads a map keyed by `K` (a [`Name`], or a [`TextName`]) into a
/// [`NameMap`].
struct MapVisitor<K, V>(std::marker::PhantomData<(K, V)>);

impl<'de, K: Deserialize<'de> + Into<Name>, V: Deserialize<'de>> Visitor<'de> for MapVisitor<K, V> {
    type Value = NameMap<V>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a map keyed by names")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<NameMap<V>, A::Error> {
        let mut entries = Vec::with_capacity(access.size_hint().unwrap_or(0).min(256));
        while let Some((key, value)) = access.next_entry::<K, V>()? {
            entries.push((key.into(), value));
        }
        // Already in order when the store wrote it: no sort then.
        if entries.windows(2).all(|pair| pair[0].0 .0 < pair[1].0 .0) {
            return Ok(NameMap { entries });
        }
        Ok(entries.into_iter().collect())
    }
}

/// A name read from its text whatever the thread's [`Dictionary`] does.
struct TextName(Name);

impl<'de> Deserialize<'de> for TextName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<TextName, D::Error> {
        deserializer.deserialize_str(NameVisitor).map(TextName)
    }
}

impl From<TextName> for Name {
    fn from(name: TextName) -> Name {
        name.0
    }
}

/// serde of a [`NameMap`] whose keys are written as their text everywhere,
/// the store included (`#[serde(with = "text_keys")]`): the bytes are those
/// of a `BTreeMap<String, V>`, so a record holding one reads and writes as
/// it did before its keys were interned. The profile's attributes are kept
/// so: the store's format did not change when they became names, and a
/// name read from a record is interned by its text.
pub mod text_keys {
    use super::{MapVisitor, NameMap, TextName};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<V: Serialize, S: Serializer>(map: &NameMap<V>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(map.entries.iter().map(|(k, v)| (k.0, v)))
    }

    pub fn deserialize<'de, V: Deserialize<'de>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<NameMap<V>, D::Error> {
        deserializer.deserialize_map(MapVisitor::<TextName, V>(std::marker::PhantomData))
    }
}

/// serde of one [`Name`] written as its text everywhere, the store
/// included (`#[serde(with = "text")]`): the bytes are those of a
/// `String`, so a record holding one reads and writes as it did while the
/// field was a `String`. The version hashes are kept so.
pub mod text {
    use super::{Name, NameVisitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(name: &Name, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(name.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Name, D::Error> {
        deserializer.deserialize_str(NameVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_by_identity_and_order_by_text() {
        let a = Name::intern("alpha");
        assert_eq!(a, Name::intern(&String::from("alpha")));
        assert!(std::ptr::eq(a.as_str(), Name::intern("alpha").as_str()));
        assert!(Name::intern("beta") > a);
        assert_eq!(Name::find("alpha"), Some(a));
        assert_eq!(Name::find("never interned here"), None);
    }

    #[test]
    fn a_name_map_iterates_in_text_order_whatever_the_insertion_order() {
        let mut map = NameMap::new();
        for (index, name) in ["m", "b", "z", "a", "q"].iter().enumerate() {
            map.insert(Name::intern(name), index);
        }
        let keys: Vec<&str> = map.keys().map(Name::as_str).collect();
        assert_eq!(keys, ["a", "b", "m", "q", "z"]);
        assert_eq!(map.insert(Name::intern("b"), 9), Some(1));
        assert_eq!(map.remove(Name::intern("m")), Some(0));
        assert_eq!(map.get_str("b"), Some(&9));
        *map.get_or_default(Name::intern("c")) += 5;
        assert_eq!(map.get(Name::intern("c")), Some(&5));
        // Past the scanning size: bisection finds the same entries.
        for index in 0..40 {
            map.insert(Name::intern(&format!("n{index:02}")), 100 + index);
        }
        assert_eq!(map.get(Name::intern("n17")), Some(&117));
        assert_eq!(map.get(Name::intern("z")), Some(&2));
        let keys: Vec<&str> = map.keys().map(Name::as_str).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn serde_writes_text_outside_the_store_and_ids_inside() {
        let map: NameMap<u8> = [(Name::intern("two"), 2), (Name::intern("one"), 1)]
            .into_iter()
            .collect();
        let text = postcard::to_allocvec(&map).expect("encode");
        let as_btree: std::collections::BTreeMap<String, u8> = postcard::from_bytes(&text).expect("the same bytes");
        assert_eq!(as_btree.len(), 2);
        assert_eq!(serde_json::to_string(&map).expect("json"), r#"{"one":1,"two":2}"#);

        let dictionary = Arc::new(Dictionary::with([(0, Name::intern("zero"))]));
        let (bytes, pending) = dictionary.encode(|| postcard::to_allocvec(&map).expect("encode"));
        assert_eq!(
            bytes,
            [2, 1, 1, 2, 2],
            "new ids in order of first use, after the store's"
        );
        assert_eq!(pending, [(1, Name::intern("one")), (2, Name::intern("two"))]);
        dictionary.confirm(&pending[1..]);
        let (_, pending) = dictionary.encode(|| postcard::to_allocvec(&map).expect("encode"));
        assert_eq!(pending, [(1, Name::intern("one"))], "until its batch commits");
        dictionary.confirm(&pending);
        let (_, pending) = dictionary.encode(|| postcard::to_allocvec(&map).expect("encode"));
        assert!(pending.is_empty());
        let back: NameMap<u8> = dictionary.decode(|| postcard::from_bytes(&bytes).expect("decode"));
        assert_eq!(back, map);
        let unknown = dictionary.decode(|| postcard::from_bytes::<NameMap<u8>>(&[1, 7, 0]));
        assert!(unknown.is_err());
        // A gap (an id whose batch never committed) stays unused.
        let gapped = Dictionary::with([(0, Name::intern("zero")), (2, Name::intern("two"))]);
        assert_eq!(gapped.name(1), None);
        assert_eq!(gapped.name(2), Some(Name::intern("two")));
        let (_, pending) = Arc::new(gapped).encode(|| postcard::to_allocvec(&map).expect("encode"));
        assert_eq!(pending, [(3, Name::intern("one"))]);
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct TextKeyed {
        #[serde(with = "text_keys")]
        map: NameMap<u8>,
        names: NameMap<u8>,
    }

    /// The profile's keys stay text inside the store: the bytes are a
    /// `BTreeMap<String, _>`'s, read back under the store's dictionary.
    #[test]
    fn text_keys_are_written_as_text_inside_the_store_too() {
        let map: NameMap<u8> = [(Name::intern("tz"), 2), (Name::intern("locale"), 1)]
            .into_iter()
            .collect();
        let value = TextKeyed {
            map: map.clone(),
            names: map.clone(),
        };
        let dictionary = Arc::new(Dictionary::default());
        let (bytes, pending) = dictionary.encode(|| postcard::to_allocvec(&value).expect("encode"));
        let as_text: std::collections::BTreeMap<String, u8> = [("locale".into(), 1), ("tz".into(), 2)].into();
        let mut expected = postcard::to_allocvec(&as_text).expect("encode");
        expected.extend_from_slice(&[2, 0, 1, 1, 2]);
        assert_eq!(bytes, expected, "text keys, then ids of the other map");
        assert_eq!(pending.len(), 2, "only the other map's names get ids");
        let back: TextKeyed = dictionary.decode(|| postcard::from_bytes(&bytes).expect("decode"));
        assert_eq!(back, value);
    }
}
