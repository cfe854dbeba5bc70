//! Identifiers the edge mints — Via branches, tags, Call-IDs — carry the index of the worker that
//! owns the call, so a message the kernel hands to another worker can be passed to its owner.

use rand::RngCore;

/// RFC 3261 §8.1.1.7: branches start with the magic cookie.
const COOKIE: &str = "z9hG4bK";
/// Marks our identifiers: `tg` + two hex digits of the owning worker.
const MARK: &str = "tg";

/// Whether a datagram may carry a tag or branch the edge minted (`...;tag=tg..`,
/// `branch=z9hG4bKtg..`): a scan, not a parse, to drop what cannot be ours before parsing it.
pub fn may_carry_ours(datagram: &[u8]) -> bool {
    memchr::memmem::find(datagram, b"=tg").is_some()
        || memchr::memmem::find(datagram, b"z9hG4bKtg").is_some()
}

/// Mints identifiers for one worker.
pub struct IdMint {
    worker: u8,
    counter: u64,
    salt: u64,
}

impl IdMint {
    pub fn new(worker: usize) -> Self {
        Self {
            worker: worker as u8,
            counter: 0,
            salt: rand::rng().next_u64(),
        }
    }

    fn next(&mut self) -> u64 {
        self.counter = self.counter.wrapping_add(1);
        // Unique per worker and unguessable across restarts: counter mixed with a random salt.
        (self.counter ^ self.salt).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.counter
    }

    /// A dialog tag.
    pub fn tag(&mut self) -> String {
        let n = self.next();
        format!("{MARK}{:02x}{n:016x}", self.worker)
    }

    /// A Via branch.
    pub fn branch(&mut self) -> String {
        let n = self.next();
        format!("{COOKIE}{MARK}{:02x}{n:016x}", self.worker)
    }

    /// A Call-ID for a leg we originate.
    pub fn call_id(&mut self) -> String {
        let n = self.next();
        format!(
            "{MARK}{:02x}{n:016x}{:08x}",
            self.worker,
            rand::rng().next_u32()
        )
    }
}

/// The worker that minted a tag, branch or Call-ID, if it is one of ours.
pub fn owner(id: &str) -> Option<usize> {
    let rest = id.strip_prefix(COOKIE).unwrap_or(id);
    let hex = rest.strip_prefix(MARK)?.get(..2)?;
    usize::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_ids_name_their_worker_and_differ() {
        let mut m = IdMint::new(5);
        let (t1, t2, b, c) = (m.tag(), m.tag(), m.branch(), m.call_id());
        assert_ne!(t1, t2);
        assert!(b.starts_with("z9hG4bK"));
        for id in [&t1, &b, &c] {
            assert_eq!(owner(id), Some(5), "{id}");
        }
        assert_eq!(owner("z9hG4bK776asdhds"), None);
        assert_eq!(owner("1928301774"), None);
        assert_eq!(owner("tg"), None);
    }
}
