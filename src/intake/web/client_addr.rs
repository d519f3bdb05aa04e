//! The client's address, which the per-address signing limit counts: the TCP peer, unless the
//! peer is one of `http.trusted_proxies`. Then `X-Forwarded-For` (every line of it, in order,
//! as one comma-separated list) is read from the right: each proxy appends the address it got
//! the request from, so the entries right of the client were written by our proxies and those
//! left of it by the client, who can write anything there. The client is therefore the
//! rightmost entry that is not a trusted proxy; if every entry is one, the leftmost. Without
//! the header, or when an entry that is not an address is met before the client's, the peer.
//!
//! Depends on `config` (`TrustedProxies`) only.

use crate::config::TrustedProxies;
use axum::http::HeaderMap;
use std::net::{IpAddr, SocketAddr};

/// The address that requests from `peer` with `headers` count as, for rate limits.
pub(super) fn client_address(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .flat_map(|line| line.as_bytes().split(|b| *b == b',').rev())
        .map(<[u8]>::trim_ascii)
        // Empty list elements are allowed and mean nothing (RFC 9110, section 5.6.1).
        .filter(|hop| !hop.is_empty());
    let mut leftmost = None;
    for hop in hops {
        let Some(ip) = parse_hop(hop) else {
            return peer;
        };
        if !trusted.contains(ip) {
            return ip;
        }
        leftmost = Some(ip);
    }
    leftmost.unwrap_or(peer)
}

/// One entry: an address, or an address with a port as some proxies write it
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(hop).ok()?;
    let ip = text
        .parse::<IpAddr>()
        .or_else(|_| text.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()?;
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(entries.iter().copied()).unwrap()
    }

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for line in lines {
            h.append("x-forwarded-for", line.parse().unwrap());
        }
        h
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn client(peer: &str, lines: &[&str], proxies: &[&str]) -> IpAddr {
        client_address(ip(peer), &headers(lines), &trusted(proxies))
    }

    #[test]
    fn a_peer_that_is_not_a_trusted_proxy_is_the_client_whatever_the_header_says() {
        assert_eq!(client("192.0.2.9", &["198.51.100.1"], &[]), ip("192.0.2.9"));
        assert_eq!(
            client("192.0.2.9", &["198.51.100.1"], &["10.0.0.0/8"]),
            ip("192.0.2.9")
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_client_is_the_address_it_appended() {
        assert_eq!(
            client("10.0.0.2", &["203.0.113.7"], &["10.0.0.0/8"]),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn spoofed_entries_left_of_the_client_are_ignored() {
        for spoof in [
            "198.51.100.1",
            "10.0.0.5",
            "127.0.0.1",
            "unknown",
            "not an address",
        ] {
            assert_eq!(
                client(
                    "10.0.0.2",
                    &[&format!("{spoof}, 203.0.113.7")],
                    &["10.0.0.0/8", "127.0.0.1"]
                ),
                ip("203.0.113.7"),
                "{spoof}"
            );
        }
    }

    #[test]
    fn every_trusted_hop_from_the_right_is_skipped() {
        assert_eq!(
            client(
                "127.0.0.1",
                &["198.51.100.1, 203.0.113.7, 10.1.1.1, 10.2.2.2"],
                &["127.0.0.1", "10.0.0.0/8"]
            ),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn several_header_lines_read_as_one_list_in_order() {
        let proxies = ["10.0.0.0/8"];
        assert_eq!(
            client(
                "10.0.0.2",
                &["198.51.100.1", "203.0.113.7, 10.1.1.1"],
                &proxies
            ),
            ip("203.0.113.7")
        );
        assert_eq!(
            client(
                "10.0.0.2",
                &["198.51.100.1, 203.0.113.7", "10.1.1.1"],
                &proxies
            ),
            ip("203.0.113.7")
        );
        assert_eq!(
            client("10.0.0.2", &["203.0.113.7", ""], &proxies),
            ip("203.0.113.7"),
            "an empty line adds nothing"
        );
    }

    #[test]
    fn ipv6_peers_hops_and_ranges() {
        let proxies = ["::1", "fd00::/8"];
        assert_eq!(
            client("::1", &["2001:db8::7, fd00::2"], &proxies),
            ip("2001:db8::7")
        );
        assert_eq!(
            client("fd12::1", &["[2001:db8::7]:4711"], &proxies),
            ip("2001:db8::7")
        );
        assert_eq!(
            client("2001:db8::9", &["2001:db8::7"], &proxies),
            ip("2001:db8::9")
        );
    }

    #[test]
    fn an_ipv4_mapped_peer_counts_as_its_ipv4_address() {
        assert_eq!(
            client("::ffff:10.0.0.2", &["::ffff:203.0.113.7"], &["10.0.0.0/8"]),
            ip("203.0.113.7")
        );
        assert_eq!(
            client("::ffff:192.0.2.9", &["203.0.113.7"], &["10.0.0.0/8"]),
            ip("192.0.2.9")
        );
    }

    #[test]
    fn entries_with_ports_are_read_as_their_address() {
        assert_eq!(
            client("10.0.0.2", &["203.0.113.7:5123"], &["10.0.0.0/8"]),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn when_every_hop_is_trusted_the_leftmost_is_the_client() {
        assert_eq!(
            client("10.0.0.2", &["10.3.3.3, 10.1.1.1"], &["10.0.0.0/8"]),
            ip("10.3.3.3")
        );
    }

    #[test]
    fn without_a_usable_header_the_trusted_peer_is_the_client() {
        let proxies = ["10.0.0.0/8"];
        assert_eq!(client("10.0.0.2", &[], &proxies), ip("10.0.0.2"));
        assert_eq!(client("10.0.0.2", &[""], &proxies), ip("10.0.0.2"));
        assert_eq!(client("10.0.0.2", &[" , ,"], &proxies), ip("10.0.0.2"));
        // The entry where the client should be is not an address: nothing can be believed.
        assert_eq!(
            client("10.0.0.2", &["203.0.113.7, garbage"], &proxies),
            ip("10.0.0.2")
        );
        assert_eq!(client("10.0.0.2", &["unknown"], &proxies), ip("10.0.0.2"));
    }

    #[test]
    fn bytes_that_are_not_text_left_of_the_client_do_not_matter() {
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            axum::http::HeaderValue::from_bytes(b"\xff\xfe, 203.0.113.7").unwrap(),
        );
        assert_eq!(
            client_address(ip("10.0.0.2"), &h, &trusted(&["10.0.0.0/8"])),
            ip("203.0.113.7")
        );
    }
}
