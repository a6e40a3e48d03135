//! What a view keeps of its client (`--client-ip hash|truncate|full`), decided on the
//! request path, before the view leaves it.
//!
//! ```text
//!  GET /video/:id ─▶ ClientPrivacy::viewer(ip, time) ─▶ Viewer ─▶ ViewEvent ─▶ batch writer ─▶ store
//!                          ▲ today's salt (lock-free read)
//!  CatalogWatcher ─────────┘ agrees each day's salt with the store, forgets old ones
//! ```
//!
//! - `hash` (the default): a keyed hash (SipHash-1-3, 128 bits) of the address under a
//!   random salt of the view's UTC day. The salt is agreed through the store, so every
//!   server of a deployment hashes a client alike that day (unique viewers stay exact
//!   across servers), and deleted two days later: a stored value can then be neither
//!   reversed (not even by trying all 2³² IPv4 addresses) nor linked to the same client on
//!   another day. This is the scheme privacy-first web analytics use.
//! - `truncate`: the network only, IPv4 to /24 and IPv6 to /48.
//! - `full`: the address as it is (the old service's behaviour).
//!
//! The catalog watcher agrees the salts of today and tomorrow ahead of time (see
//! [`CatalogSource::agree_salt`](crate::store::CatalogSource::agree_salt)) and publishes
//! them here; a request reads them without a lock. Until a day's salt is agreed (a cluster
//! unreachable since start), views are hashed under a salt derived from a secret this
//! process never stores: private still, but the same client may count once per server
//! that day.

use std::fmt::Write;
use std::hash::Hasher;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use siphasher::sip128::{Hasher128, SipHasher13};

use crate::store::utc_day;

/// What a view stores of its client's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ClientIpMode {
    /// A keyed hash under a salt of the day, deleted two days later.
    #[default]
    Hash,
    /// The network: IPv4 /24, IPv6 /48.
    Truncate,
    /// The address as it is.
    Full,
}

/// A view's client as stored: an address (whole or truncated), or its daily hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Viewer {
    Address(IpAddr),
    Hashed([u8; 16]),
}

impl Viewer {
    /// The bytes this client is counted by in a day's unique-viewer sketch: an address's
    /// 4 or 16 octets, or the hash.
    pub fn key(&self) -> ViewerKey {
        let mut bytes = [0u8; 16];
        let len = match self {
            Viewer::Address(IpAddr::V4(v4)) => {
                bytes[..4].copy_from_slice(&v4.octets());
                4
            }
            Viewer::Address(IpAddr::V6(v6)) => {
                bytes = v6.octets();
                16
            }
            Viewer::Hashed(hash) => {
                bytes = *hash;
                16
            }
        };
        ViewerKey { bytes, len }
    }

    /// Appends the stored text form: the address, or the hash as 32 lowercase hex digits
    /// (never an address: an IPv6 address always has a colon).
    pub fn write_text(&self, out: &mut String) {
        match self {
            // Writing to a String cannot fail.
            Viewer::Address(ip) => {
                let _ = write!(out, "{ip}");
            }
            Viewer::Hashed(hash) => {
                // The batch writer writes one per view: filling an array and appending it
                // once costs about half of pushing 32 chars one at a time.
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let mut hex = [0u8; 32];
                for (pair, byte) in hex.chunks_exact_mut(2).zip(hash) {
                    pair[0] = HEX[usize::from(byte >> 4)];
                    pair[1] = HEX[usize::from(byte & 0x0f)];
                }
                // Hex digits are ASCII, so this always holds.
                if let Ok(text) = std::str::from_utf8(&hex) {
                    out.push_str(text);
                }
            }
        }
    }

    pub fn to_text(&self) -> String {
        let mut text = String::with_capacity(40);
        self.write_text(&mut text);
        text
    }

    /// Reads the text form back ([`Viewer::write_text`]).
    pub fn parse(text: &str) -> Option<Viewer> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Some(Viewer::Address(ip));
        }
        if text.len() != 32 {
            return None;
        }
        let mut hash = [0u8; 16];
        for (byte, pair) in hash.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(Viewer::Hashed(hash))
    }
}

/// A viewer's sketch key, without allocating.
pub struct ViewerKey {
    bytes: [u8; 16],
    len: usize,
}

impl ViewerKey {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// A day's salt: 16 random bytes, the key of the day's hash.
pub type Salt = [u8; 16];

/// A fresh salt from the operating system's secure random source (a salt guessed would
/// let every hash of its day be reversed).
pub fn random_salt() -> Salt {
    let mut salt = [0u8; 16];
    if let Err(error) = getrandom::fill(&mut salt) {
        // Only a kernel without getrandom(2) or /dev/urandom gets here; a weaker salt is
        // still better than none, and said.
        tracing::error!(%error, "no secure random source; salting from a weaker generator");
        salt[..8].copy_from_slice(&fastrand::u64(..).to_le_bytes());
        salt[8..].copy_from_slice(&fastrand::u64(..).to_le_bytes());
    }
    salt
}

/// The salts agreed so far (a few days at most), read by every request.
#[derive(Debug, Default)]
struct AgreedSalts {
    days: Vec<(i64, Salt)>,
}

/// The daily salts: published by the catalog watcher, read lock-free by requests.
pub struct DailySalts {
    agreed: ArcSwap<AgreedSalts>,
    /// Stands in for a day with no agreed salt: never stored, gone with the process.
    process_secret: Salt,
}

impl std::fmt::Debug for DailySalts {
    // The salts and the secret are not for logs.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let days: Vec<i64> = self
            .agreed
            .load()
            .days
            .iter()
            .map(|(day, _)| *day)
            .collect();
        formatter
            .debug_struct("DailySalts")
            .field("agreed_days", &days)
            .finish_non_exhaustive()
    }
}

impl Default for DailySalts {
    fn default() -> Self {
        DailySalts {
            agreed: ArcSwap::from_pointee(AgreedSalts::default()),
            process_secret: random_salt(),
        }
    }
}

impl DailySalts {
    /// The salt of `day`, if agreed.
    pub fn agreed(&self, day: i64) -> Option<Salt> {
        self.agreed
            .load()
            .days
            .iter()
            .find(|(known, _)| *known == day)
            .map(|(_, salt)| *salt)
    }

    /// Publishes the agreed salt of `day`, and forgets those of days before `keep_from`.
    pub fn publish(&self, day: i64, salt: Salt, keep_from: i64) {
        let current = self.agreed.load();
        let mut days: Vec<(i64, Salt)> = current
            .days
            .iter()
            .filter(|(known, _)| *known >= keep_from && *known != day)
            .copied()
            .collect();
        days.push((day, salt));
        self.agreed.store(Arc::new(AgreedSalts { days }));
    }

    /// The key a view of `day` is hashed with.
    fn key(&self, day: i64) -> Salt {
        self.agreed(day).unwrap_or_else(|| {
            let mut hasher = SipHasher13::new_with_key(&self.process_secret);
            hasher.write_i64(day);
            hasher.finish128().as_bytes()
        })
    }
}

/// Applies `--client-ip` to each view's address. The default hashes, under salts that
/// nothing agrees (a test's or a tool's).
#[derive(Debug, Clone, Default)]
pub struct ClientPrivacy {
    mode: ClientIpMode,
    salts: Arc<DailySalts>,
}

impl ClientPrivacy {
    pub fn new(mode: ClientIpMode, salts: Arc<DailySalts>) -> Self {
        ClientPrivacy { mode, salts }
    }

    pub fn mode(&self) -> ClientIpMode {
        self.mode
    }

    /// What a view at `timestamp_ms` (ms since the Unix epoch) stores of `ip`.
    pub fn viewer(&self, ip: IpAddr, timestamp_ms: i64) -> Viewer {
        match self.mode {
            ClientIpMode::Full => Viewer::Address(ip),
            ClientIpMode::Truncate => Viewer::Address(truncate(ip)),
            ClientIpMode::Hash => {
                let key = self.salts.key(utc_day(timestamp_ms));
                let mut hasher = SipHasher13::new_with_key(&key);
                match ip {
                    IpAddr::V4(v4) => hasher.write(&v4.octets()),
                    // An IPv4-mapped IPv6 address is the same client as its IPv4 form.
                    IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                        Some(v4) => hasher.write(&v4.octets()),
                        None => hasher.write(&v6.octets()),
                    },
                }
                Viewer::Hashed(hasher.finish128().as_bytes())
            }
        }
    }
}

/// The network of an address: IPv4 /24, IPv6 /48 (an IPv4-mapped address as IPv4).
pub fn truncate(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => truncate(IpAddr::V4(v4)),
            None => {
                let mut octets = v6.octets();
                octets[6..].fill(0);
                IpAddr::from(octets)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: i64 = 86_400_000;

    fn hashing() -> (ClientPrivacy, Arc<DailySalts>) {
        let salts = Arc::new(DailySalts::default());
        (
            ClientPrivacy::new(ClientIpMode::Hash, Arc::clone(&salts)),
            salts,
        )
    }

    #[test]
    fn truncation_keeps_the_network_only() {
        let cases = [
            ("192.0.2.77", "192.0.2.0"),
            ("2001:db8:abcd:12:1:2:3:4", "2001:db8:abcd::"),
            ("::ffff:198.51.100.9", "198.51.100.0"),
        ];
        for (address, network) in cases {
            let ip: IpAddr = address.parse().expect("ip");
            assert_eq!(truncate(ip).to_string(), network, "{address}");
        }
    }

    #[test]
    fn a_hash_is_stable_within_a_day_and_unlinkable_across_days() {
        let (privacy, salts) = hashing();
        let ip: IpAddr = "203.0.113.5".parse().expect("ip");
        let other: IpAddr = "203.0.113.6".parse().expect("ip");
        let noon = 20_000 * DAY_MS + DAY_MS / 2;
        let today = privacy.viewer(ip, noon);
        assert_eq!(today, privacy.viewer(ip, noon + 3_600_000));
        assert_ne!(today, privacy.viewer(other, noon));
        assert_ne!(today, privacy.viewer(ip, noon + DAY_MS));
        // The agreed salt replaces the stand-in, and is what the hash depends on.
        salts.publish(20_000, [7; 16], 19_999);
        let agreed = privacy.viewer(ip, noon);
        assert_ne!(agreed, today);
        let (other_server, other_salts) = hashing();
        other_salts.publish(20_000, [7; 16], 19_999);
        assert_eq!(other_server.viewer(ip, noon), agreed);
        // The mapped form of an IPv4 address is the same client.
        let mapped: IpAddr = "::ffff:203.0.113.5".parse().expect("ip");
        assert_eq!(privacy.viewer(mapped, noon), agreed);
    }

    #[test]
    fn hashed_text_contains_nothing_of_the_address() {
        let (privacy, _) = hashing();
        for address in ["203.0.113.5", "10.1.2.3", "2001:db8::1"] {
            let ip: IpAddr = address.parse().expect("ip");
            let text = privacy.viewer(ip, 0).to_text();
            assert_eq!(text.len(), 32);
            assert!(!text.contains(address), "{text} holds {address}");
            assert!(text.bytes().all(|byte| byte.is_ascii_hexdigit()), "{text}");
        }
    }

    #[test]
    fn text_form_round_trips() {
        let viewers = [
            Viewer::Address("192.0.2.1".parse().expect("ip")),
            Viewer::Address("2001:db8::1".parse().expect("ip")),
            Viewer::Hashed([0xab; 16]),
        ];
        for viewer in viewers {
            assert_eq!(Viewer::parse(&viewer.to_text()), Some(viewer));
        }
        assert_eq!(Viewer::parse("not a viewer"), None);
        assert_eq!(Viewer::parse(&"zz".repeat(16)), None);
    }

    #[test]
    fn publishing_forgets_old_days() {
        let salts = DailySalts::default();
        salts.publish(10, [1; 16], 10);
        salts.publish(11, [2; 16], 10);
        salts.publish(12, [3; 16], 11);
        assert_eq!(salts.agreed(10), None);
        assert_eq!(salts.agreed(11), Some([2; 16]));
        assert_eq!(salts.agreed(12), Some([3; 16]));
    }
}
