//! Payment data, found in strict mode only: card numbers that pass the Luhn check and fit a
//! card network's prefix and length, IBANs that pass their mod-97 check and their country's
//! format (written as one word; an IBAN grouped by spaces is not looked for), Bitcoin addresses
//! (base58check and bech32) and private keys (WIF). Every candidate
//! must pass its checksum, which keeps order ids, timestamps and random words out.
//!
//! Luhn is the one check written here (ten lines, no crate earns its place for it); base58check
//! is `bs58`'s, bech32 the `bech32` crate's, IBAN validation `iban_validate`'s.

use std::sync::LazyLock;

use regex::bytes::Regex;

use super::prescan::Prescan;
use super::{Confidence, Finding, redact};

pub const CARD_ID: &str = "payment-card-number";
pub const IBAN_ID: &str = "iban";
pub const BITCOIN_ADDRESS_ID: &str = "bitcoin-address";
pub const BITCOIN_KEY_ID: &str = "bitcoin-private-key";

/// Digits in groups parted by single spaces or dashes, 13 digits or more (a card's fewest),
/// where card numbers are looked for: each match is a longest such stretch. (Shorter stretches,
/// every number in a text, are passed over inside the regex's automaton, not stopped at.)
static DIGIT_GROUPS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?-u)[0-9](?:[ -]?[0-9]){12,}").unwrap_or_else(|e| panic!("digit groups pattern: {e}"))
});

/// Appends the payment data in `data` (strict mode's own findings: [`Confidence::Low`]). IBANs,
/// Bitcoin addresses and keys are letters and digits without a break, so they lie inside the
/// prescan's runs; only runs with a digit are looked at.
pub(crate) fn scan_into(data: &[u8], pre: &Prescan, out: &mut Vec<Finding>) {
    let mut push = |id: &str, start: usize, end: usize| {
        out.push(Finding {
            rule_id: id.to_string(),
            start,
            end,
            line: 0,
            secret_redacted: redact(&data[start..end]),
            confidence: Confidence::Low,
        });
    };
    for (s, e) in card_regions(data, &pre.digits) {
        for m in DIGIT_GROUPS.find_iter(&data[s..e]) {
            for (start, end) in cards_in(data, s + m.start(), s + m.end()) {
                push(CARD_ID, start, end);
            }
        }
    }
    for &(rs, re) in &pre.runs {
        let run = &data[rs..re];
        if run.len() < 14 || !run.iter().any(u8::is_ascii_digit) {
            continue;
        }
        let mut at = 0;
        for piece in run.split(|b| !b.is_ascii_alphanumeric()) {
            let (s, e) = (rs + at, rs + at + piece.len());
            at += piece.len() + 1;
            if piece.len() < 14 || !piece.iter().any(u8::is_ascii_digit) {
                continue;
            }
            let Ok(text) = std::str::from_utf8(piece) else { continue };
            let id = if piece[..2].iter().all(u8::is_ascii_uppercase) && piece[2..4].iter().all(u8::is_ascii_digit) {
                text.parse::<iban::Iban>().ok().map(|_| IBAN_ID)
            } else if matches!(&piece[..3], b"bc1" | b"tb1" | b"BC1" | b"TB1") {
                bech32::segwit::decode(text).ok().map(|_| BITCOIN_ADDRESS_ID)
            } else if (26..=52).contains(&piece.len()) {
                bitcoin_base58(piece)
            } else {
                None
            };
            if let Some(id) = id {
                push(id, s, e);
            }
        }
    }
}

/// The longest card number: 19 digits and 18 separators.
const CARD_SPAN: usize = 37;

/// The card numbers among the digit groups `data[start..end]`: from each group, the longest run
/// of whole groups that is one (so a number before or after a card, `1 4111… 12`, hides none).
fn cards_in(data: &[u8], start: usize, end: usize) -> Vec<(usize, usize)> {
    let mut groups = Vec::new();
    let mut at = start;
    for g in data[start..end].split(|&b| b == b' ' || b == b'-') {
        groups.push((at, at + g.len()));
        at += g.len() + 1;
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < groups.len() {
        let (first, mut digits, mut card) = (groups[i].0, 0, None);
        for (j, &(s, e)) in groups.iter().enumerate().skip(i) {
            digits += e - s;
            if digits > 19 {
                break;
            }
            if digits >= 13 && whole_token(data, first, e) && is_card(&data[first..e]) {
                card = Some(j);
            }
        }
        match card {
            Some(j) => {
                out.push((first, groups[j].1));
                i = j + 1;
            }
            None => i += 1,
        }
    }
    out
}

/// Where in `data` a card number can be: around each two consecutive 64-byte blocks that hold
/// 13 digits or more between them (a card spans at most [`CARD_SPAN`] bytes, so it lies in two),
/// widened by a card's span on each side, merged where they meet. The prescan counted each
/// block's digits; text with few digits (prose, most JSON) has no such place, and the regex
/// reads none of it.
fn card_regions(data: &[u8], digits: &[u8]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (i, &n) in digits.iter().enumerate() {
        if usize::from(n) + usize::from(digits.get(i + 1).copied().unwrap_or(0)) < 13 {
            continue;
        }
        let (s, e) = ((64 * i).saturating_sub(CARD_SPAN), (64 * (i + 2) + CARD_SPAN).min(data.len()));
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = e,
            _ => out.push((s, e)),
        }
    }
    out
}

/// Whether `data[start..end]` is a whole token: not the middle of a longer word or number.
fn whole_token(data: &[u8], start: usize, end: usize) -> bool {
    let part = |b: Option<&u8>| b.is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_');
    !part(start.checked_sub(1).and_then(|i| data.get(i))) && !part(data.get(end))
}

/// The Luhn check over ASCII digits.
fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(d - b'0');
            if i % 2 == 1 { if d > 4 { d * 2 - 9 } else { d * 2 } } else { d }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// A card number: grouped like one (when it has separators), a network's prefix and length,
/// and the Luhn check.
fn is_card(s: &[u8]) -> bool {
    let groups: Vec<usize> = s.split(|&b| b == b' ' || b == b'-').map(<[u8]>::len).collect();
    let grouped = match groups.as_slice() {
        [_] => true,
        [4, 6, 5] | [4, 6, 4] => true,
        [rest @ .., last] => rest.iter().all(|&g| g == 4) && (1..=4).contains(last),
        [] => false,
    };
    let digits: Vec<u8> = s.iter().copied().filter(u8::is_ascii_digit).collect();
    let n = digits.len();
    let prefix = |k: usize| std::str::from_utf8(&digits[..k.min(n)]).ok().and_then(|p| p.parse::<u32>().ok());
    let (p1, p2, p3, p4, p6) = (prefix(1), prefix(2), prefix(3), prefix(4), prefix(6));
    let network = match (p1, p2, p3, p4) {
        (Some(4), ..) => matches!(n, 13 | 16 | 19),
        (_, Some(34 | 37), ..) => n == 15,
        (_, Some(51..=55), ..) | (.., Some(2221..=2720)) => n == 16,
        (.., Some(6011)) | (_, Some(65), ..) | (_, _, Some(644..=649), _) => (16..=19).contains(&n),
        (_, Some(62), ..) => (16..=19).contains(&n) || p6.is_some_and(|p| (622126..=622925).contains(&p)),
        (.., Some(3528..=3589)) => (16..=19).contains(&n),
        (_, _, Some(300..=305), _) | (_, Some(36 | 38 | 39), ..) => (14..=19).contains(&n),
        _ => false,
    };
    grouped && network && luhn(&digits)
}

/// A Bitcoin base58check string: an address (P2PKH, P2SH; mainnet or testnet) or a private key
/// in wallet import format.
fn bitcoin_base58(s: &[u8]) -> Option<&'static str> {
    let payload = bs58::decode(s).with_check(None).into_vec().ok()?;
    match (payload.first()?, payload.len()) {
        (0x00 | 0x05 | 0x6f | 0xc4, 21) => Some(BITCOIN_ADDRESS_ID),
        (0x80 | 0xef, 33) => Some(BITCOIN_KEY_ID),
        (0x80 | 0xef, 34) if payload[33] == 0x01 => Some(BITCOIN_KEY_ID),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        scan_into(text.as_bytes(), &super::super::prescan::prescan(text.as_bytes(), None), &mut out);
        out.into_iter().map(|f| f.rule_id).collect()
    }

    /// Well-known test values of each kind, built at run time (the repository holds none).
    fn visa() -> String {
        ["4111", "1111", "1111", "1111"].concat()
    }

    #[test]
    fn card_numbers_that_pass_luhn_and_fit_a_network() {
        let amex = ["3782", "822463", "10005"].concat();
        let mc = ["5500", "0000", "0000", "0004"].concat();
        for text in [
            format!("card={}", visa()),
            format!("{{\"card_number\":\"{}\"}}", visa()),
            format!("Alice,{amex},12/28"),
            format!("pan {mc}."),
            "4111 1111 1111 1111".to_string(),
            "4111-1111-1111-1111".to_string(),
            format!("{} {} {}", &amex[..4], &amex[4..10], &amex[10..]),
            // A number right before or after does not hide it.
            format!("qty 2 {} 12", visa()),
            "3 4111-1111-1111-1111-7".to_string(),
        ] {
            assert_eq!(ids(&text), [CARD_ID], "{text}");
        }
        for clean in [
            "4111111111111112",                   // Luhn fails
            "1700000000000000",                   // passes Luhn, no network
            "41111111111111111111",               // too long
            "order 4111111111111111000 shipped",  // part of a longer number
            "41111 11111 11111 1",                // grouped unlike a card
            "ts=1700000000123 id=99999999999999", // timestamps and ids
            "version 1.2.3, build 20260329 at 12:00",
        ] {
            assert!(ids(clean).is_empty(), "{clean}: {:?}", ids(clean));
        }
    }

    #[test]
    fn a_card_is_found_at_any_place_among_other_numbers() {
        let grouped = "4111 1111 1111 1111";
        for card in [visa().as_str(), grouped] {
            for at in 0..200 {
                // Prose with a number now and then, the card at every offset across blocks.
                let filler: String = "word 12 and 7 more ".chars().cycle().take(300).collect();
                let text = format!("{} {card} {}", &filler[..at], &filler[at..]);
                assert_eq!(ids(&text), [CARD_ID], "{card} at {at}: {text}");
            }
        }
    }

    #[test]
    fn ibans_that_pass_their_check() {
        let iban = ["GB82", "WEST", "1234", "5698", "7654", "32"].concat();
        assert_eq!(ids(&format!("?iban={iban}")), [IBAN_ID]);
        let bad = ["GB83", "WEST", "1234", "5698", "7654", "32"].concat();
        assert!(ids(&bad).is_empty(), "checksum fails");
        assert!(ids("ISO8601 FORMATS AB12CDEFGHIJKLMNOP").is_empty());
    }

    #[test]
    fn bitcoin_addresses_and_keys_that_pass_their_checksum() {
        let p2pkh = ["1A1zP1eP5QGefi2", "DMPTfTL5SLmv7DivfNa"].concat();
        let bech = ["bc1qw508d6qejxtdg4y5", "r3zarvary0c5xw7kv8f3t4"].concat();
        let wif = ["5HueCGU8rMjxEXxiPuD5BDku4MkFqe", "Zyd4dZ1jvhTVqvbTLvyTJ"].concat();
        assert_eq!(ids(&format!("wallet={p2pkh}")), [BITCOIN_ADDRESS_ID]);
        assert_eq!(ids(&format!("addr={bech}")), [BITCOIN_ADDRESS_ID]);
        assert_eq!(ids(&format!("key={wif}")), [BITCOIN_KEY_ID]);
        let mut broken = p2pkh.clone();
        broken.replace_range(5..6, "Q");
        assert!(ids(&broken).is_empty(), "checksum fails");
        assert!(ids("bc1qthisisnotabech32addressatall0").is_empty());
    }

    #[test]
    fn prose_and_identifiers_are_clean() {
        let text = "The 3 workers read 1024 records; see RFC 9110 and ISO 3166-1. \
                    Build 1A2B3C, commit 5d41402abc4b2a76b9719d911017c592, uuid 550e8400-e29b-41d4-a716-446655440000.";
        assert!(ids(text).is_empty(), "{:?}", ids(text));
    }
}
