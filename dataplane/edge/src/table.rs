//! The edge's hash tables: keys come from the network, so the hasher is seeded per process
//! (foldhash's RandomState), and faster than SipHash.

pub type Table<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
