//! Which addresses count as one client for per-address limits. An IPv6 client is given a whole /64 (usually
//! far more), so counting each IPv6 address apart would let one party rotate through its own block and never
//! reach a limit; the /64 is the smallest block one site gets (RFC 6177), so it is the unit counted.

use std::net::IpAddr;

/// The counting key for `ip`: an IPv4 address itself (an IPv4-mapped IPv6 address reads as its IPv4 address),
/// or an IPv6 address's /64 prefix, as `2001:db8:1:2::/64`.
pub(crate) fn address_group(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn group(text: &str) -> String {
        address_group(text.parse().unwrap())
    }

    #[test]
    fn ipv6_addresses_in_one_64_count_as_one_client() {
        assert_eq!(group("2001:db8:1:2::1"), "2001:db8:1:2::/64");
        assert_eq!(
            group("2001:db8:1:2:ffff:aaaa:bbbb:cccc"),
            "2001:db8:1:2::/64"
        );
        assert_ne!(group("2001:db8:1:3::1"), group("2001:db8:1:2::1"));
        assert_eq!(group("::1"), "0:0:0:0::/64");
    }

    #[test]
    fn ipv4_addresses_count_apart_and_mapped_ones_as_their_ipv4() {
        assert_eq!(group("192.0.2.1"), "192.0.2.1");
        assert_ne!(group("192.0.2.1"), group("192.0.2.2"));
        assert_eq!(group("::ffff:192.0.2.1"), "192.0.2.1");
    }
}
