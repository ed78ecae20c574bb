//! Throttling password guesses on `SignIn`, per username and per client
//! address, apart from the second-factor lockout: nothing here reads or
//! writes a factor, so guessing passwords can never lock anyone out of
//! their second factor (docs/design.md "Lockout (separate from password
//! failures)").
//!
//! The counters live in the database (`store::throttle`), so replicas share
//! them. A bucket lets [`ThrottlePolicy::free`] attempts through; each
//! further one must wait, the wait doubling from `first_delay` to
//! `max_delay`; a bucket is forgotten `forget_after` once its wait is over.
//! A refused attempt costs a read or two, no hash and no write.
//!
//! The buckets of one attempt:
//! - `user:NAME`, whether or not the user exists, so being throttled says
//!   nothing about which usernames exist. Every attempt is counted here
//!   *before* argon2 runs, by one conditional statement, so parallel
//!   guesses at a username cannot get past its budget; a right password
//!   clears it.
//! - `known:HASH` instead of `user:NAME` when the user signed in from this
//!   address within [`KNOWN_ADDRESS_TTL`].
//! - `addr:IP` (IPv6 by /64, what one subscriber usually gets), a larger
//!   budget against spraying one password over many usernames. It counts
//!   wrong passwords only, after the check, so many people behind one
//!   address signing in at once are never slowed; guesses arriving together
//!   before the budget is spent are all checked (at most the server's
//!   concurrent request limit), and the waits then start from there.
//!
//! Why the legitimate user still gets in while someone guesses their
//! password: the username bucket delays, it never locks (at most
//! `max_delay` per attempt, with the exact wait in `RetryInfo`), and from
//! an address they signed in from before, their attempts count in a
//! `known:` bucket of their own that guesses from elsewhere cannot fill.
//! Only a first sign-in from a new address may have to wait while an
//! attack on that username is going on.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use padlock_runtime::metadata::CLIENT_IP;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;

use crate::error::{AuthError, Result};
use crate::store::{Reservation, Store, ThrottlePolicy};

/// Per username: 5 wrong passwords within 15 minutes, then each attempt
/// waits 1 s, 2 s, 4 s, ... up to 15 minutes. OWASP's Authentication Cheat
/// Sheet ("Login Throttling") and NIST SP 800-63B §5.2.2 ask for rate
/// limiting that slows guessing without locking the owner out: an attacker
/// with any number of addresses gets about a hundred guesses a day once the
/// waits reach 15 minutes.
pub const PER_USER: ThrottlePolicy = ThrottlePolicy {
    free: 5,
    first_delay: Duration::from_secs(1),
    max_delay: Duration::from_secs(15 * 60),
    forget_after: Duration::from_secs(15 * 60),
};

/// Per client address: ten times the username budget, so an office behind
/// one address is not slowed by a few people mistyping, while spraying one
/// password over many usernames from one address is.
pub const PER_ADDRESS: ThrottlePolicy = ThrottlePolicy {
    free: 50,
    first_delay: Duration::from_secs(1),
    max_delay: Duration::from_secs(15 * 60),
    forget_after: Duration::from_secs(15 * 60),
};

/// How long an address a user signed in from counts as theirs: a month
/// covers the places someone works from without keeping them forever.
pub(crate) const KNOWN_ADDRESS_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// The peers whose [`CLIENT_IP`] auth believes: the gateway's
/// addresses (`--trusted-proxies`; none by default). From anyone else the
/// metadata is ignored and the connection's own peer address counts:
/// otherwise a guesser could name a fresh address with every attempt, or
/// name their victim's address to slow the victim down. Auth is reachable
/// only by the gateway and deploy (deploy/k8s NetworkPolicies), and the
/// gateway always sets the metadata itself, from its own TCP peer, so a
/// browser cannot choose it either.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Comma-separated addresses and CIDR ranges, e.g. `10.0.0.0/8,::1`.
    pub fn parse(spec: &str) -> std::result::Result<Self, String> {
        spec.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(Cidr::parse)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    /// The address a sign-in comes from: the metadata when `peer` is a
    /// trusted proxy and names a valid address, otherwise `peer` itself
    /// (`None` only without a TCP connection, e.g. in-process calls).
    pub(crate) fn client_address(
        &self,
        peer: Option<SocketAddr>,
        metadata: &MetadataMap,
    ) -> Option<IpAddr> {
        let peer = peer.map(|p| p.ip().to_canonical());
        let trusted = peer.is_some_and(|ip| self.0.iter().any(|c| c.contains(ip)));
        let named = || {
            let value = metadata.get(CLIENT_IP)?.to_str().ok()?;
            value
                .trim()
                .parse::<IpAddr>()
                .ok()
                .map(|ip| ip.to_canonical())
        };
        if trusted { named().or(peer) } else { peer }
    }
}

/// An address range: an address and how many leading bits must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    net: IpAddr,
    prefix: u32,
}

impl Cidr {
    fn parse(text: &str) -> std::result::Result<Self, String> {
        let bad = || format!("{text:?} is not an IP address or CIDR range");
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let net = addr.parse::<IpAddr>().map_err(|_| bad())?.to_canonical();
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u32>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { net, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => u128::from(v4.to_bits()),
            IpAddr::V6(v6) => v6.to_bits(),
        };
        if ip.is_ipv4() != self.net.is_ipv4() {
            return false;
        }
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let shift = width - self.prefix;
        shift >= width || bits(ip) >> shift == bits(self.net) >> shift
    }
}

/// How an address is counted: IPv4 as it is, IPv6 by its /64.
fn address_group(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let prefix = Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX));
            format!("{prefix}/64")
        }
    }
}

/// One sign-in attempt, counted in its buckets until the password check
/// says how it went.
#[derive(Debug)]
pub(crate) struct SignInAttempt {
    /// `user:NAME`, or `known:HASH` from a known address.
    account: String,
    address: Option<String>,
    /// The key that remembers this username at this address.
    known_key: Option<String>,
}

impl SignInAttempt {
    /// Counts an attempt for `username` from `client` at `now`, before the
    /// password is looked at; `SignInThrottled` when a bucket makes it wait.
    pub(crate) async fn admit(
        store: &Store,
        username: &str,
        client: Option<IpAddr>,
        now: i64,
    ) -> Result<SignInAttempt> {
        let group = client.map(address_group);
        let known_key = group.as_deref().map(|group| {
            // Hashed: the table says which usernames signed in from where
            // only to someone who guesses both.
            hex::encode(Sha256::digest(format!("{username}\n{group}")))
        });
        let known = match &known_key {
            Some(key) => store.sign_in_address_known(key, now).await?,
            None => false,
        };
        let attempt = SignInAttempt {
            account: match (&known_key, known) {
                (Some(key), true) => format!("known:{key}"),
                _ => format!("user:{username}"),
            },
            address: group.map(|group| format!("addr:{group}")),
            known_key,
        };
        let reservation = store
            .reserve_sign_in(&attempt.account, attempt.address.as_deref(), PER_USER, now)
            .await?;
        match reservation {
            Reservation::Counted => Ok(attempt),
            Reservation::Throttled { bucket, until } => {
                let scope = if bucket.starts_with("addr:") {
                    "address"
                } else {
                    "username"
                };
                tracing::info!(scope, "sign-in throttled");
                Err(AuthError::SignInThrottled {
                    retry_after: Duration::from_secs(
                        u64::try_from(until - now).unwrap_or(0).max(1),
                    ),
                })
            }
        }
    }

    /// The password was right: the username's bucket starts over and the
    /// address is remembered for the user.
    pub(crate) async fn succeeded(self, store: &Store, now: i64) -> Result<()> {
        let ttl = i64::try_from(KNOWN_ADDRESS_TTL.as_secs()).unwrap_or(i64::MAX);
        let known_until = now.saturating_add(ttl);
        store
            .sign_in_succeeded(
                &self.account,
                self.known_key.as_deref().map(|k| (k, known_until)),
                now,
            )
            .await?;
        Ok(())
    }

    /// The password was wrong: it stays counted for the username, and now
    /// counts for the address too.
    pub async fn failed(self, store: &Store, now: i64) -> Result<()> {
        if let Some(address) = &self.address {
            store
                .count_sign_in_failure(address, PER_ADDRESS, now)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 40000))
    }

    fn naming(ip: &str) -> MetadataMap {
        let mut md = MetadataMap::new();
        md.insert(CLIENT_IP, ip.parse().unwrap());
        md
    }

    #[test]
    fn the_metadata_counts_only_from_a_trusted_proxy() {
        let trusted = TrustedProxies::parse("10.1.0.0/16, 127.0.0.1").unwrap();
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(
            trusted.client_address(peer("10.1.2.3"), &naming("203.0.113.9")),
            Some(client)
        );
        assert_eq!(
            trusted.client_address(peer("127.0.0.1"), &naming("203.0.113.9")),
            Some(client)
        );
        // Anyone else names whatever they like: ignored.
        assert_eq!(
            trusted.client_address(peer("10.2.0.1"), &naming("203.0.113.9")),
            Some("10.2.0.1".parse().unwrap())
        );
        assert_eq!(
            TrustedProxies::default().client_address(peer("127.0.0.1"), &naming("203.0.113.9")),
            Some("127.0.0.1".parse().unwrap())
        );
        // A trusted proxy that names nothing usable: its own address.
        assert_eq!(
            trusted.client_address(peer("10.1.2.3"), &naming("not an address")),
            Some("10.1.2.3".parse().unwrap())
        );
        assert_eq!(
            trusted.client_address(peer("10.1.2.3"), &MetadataMap::new()),
            Some("10.1.2.3".parse().unwrap())
        );
        assert_eq!(trusted.client_address(None, &naming("203.0.113.9")), None);
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_ranges() {
        let trusted = TrustedProxies::parse("127.0.0.0/8").unwrap();
        assert_eq!(
            trusted.client_address(peer("::ffff:127.0.0.1"), &naming("::ffff:198.51.100.4")),
            Some("198.51.100.4".parse().unwrap())
        );
    }

    #[test]
    fn ranges_parse_and_match_by_prefix() {
        let all = TrustedProxies::parse("0.0.0.0/0,::/0").unwrap();
        assert!(all.0[0].contains("198.51.100.1".parse().unwrap()));
        assert!(all.0[1].contains("2001:db8::1".parse().unwrap()));
        assert!(!all.0[0].contains("2001:db8::1".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8:1::/48").unwrap();
        assert!(v6.contains("2001:db8:1:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db8:2::1".parse().unwrap()));
        assert_eq!(
            TrustedProxies::parse(" ").unwrap(),
            TrustedProxies::default()
        );
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "gateway",
            "10.0.0.0/",
            "10.0.0.0/-1",
        ] {
            assert!(TrustedProxies::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        assert_eq!(
            address_group("198.51.100.7".parse().unwrap()),
            "198.51.100.7"
        );
        assert_eq!(
            address_group("2001:db8:1:2:aaaa:bbbb:cccc:dddd".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            address_group("2001:db8:1:2::1".parse().unwrap()),
            address_group("2001:db8:1:2:ffff::9".parse().unwrap())
        );
    }
}
