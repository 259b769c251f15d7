//! HMAC-SHA256 signatures (gate open commands out, command-centre commands
//! in), hex, and random nonces. The exact byte strings signed are written
//! down in `docs/mqtt.md`; change them only with a new scheme tag.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::config::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Tag at the start of a gate open command's signed string.
pub const GATE_OPEN_SCHEME: &str = "facegate-gate-open/v1";

/// `hex(HMAC-SHA256(secret, msg))`, lower case.
pub fn sign_hex(secret: &Secret, msg: &[u8]) -> String {
    let mut mac =
        HmacSha256::new_from_slice(secret.expose()).expect("HMAC-SHA256 takes keys of any length");
    mac.update(msg);
    to_hex(&mac.finalize().into_bytes())
}

/// Checks a hex signature in constant time.
pub fn verify_hex(secret: &Secret, msg: &[u8], sig_hex: &str) -> bool {
    let Some(sig) = from_hex(sig_hex) else {
        return false;
    };
    let mut mac =
        HmacSha256::new_from_slice(secret.expose()).expect("HMAC-SHA256 takes keys of any length");
    mac.update(msg);
    mac.verify_slice(&sig).is_ok()
}

/// The string a gate open command's `sig` covers: the scheme tag, then
/// site, gate, ts, expires_at and nonce exactly as they appear in the
/// payload, joined by `\n`.
pub fn gate_open_string(site: &str, gate: &str, ts: &str, expires_at: &str, nonce: &str) -> String {
    format!("{GATE_OPEN_SCHEME}\n{site}\n{gate}\n{ts}\n{expires_at}\n{nonce}")
}

pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// 16 random bytes as 32 hex digits, from the system's CSPRNG (through
/// ring, which rustls already links).
pub fn nonce() -> String {
    let mut b = [0u8; 16];
    if rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut b)
        .is_err()
    {
        // Never expected on Linux; a unique (not secret) value still works
        // as a nonce, which only has to be unique.
        let t = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        b[..8].copy_from_slice(&(t as u64).to_le_bytes());
        b[8..].copy_from_slice(&(n ^ u64::from(std::process::id()) << 40).to_le_bytes());
    }
    to_hex(&b)
}

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let s = Secret::new(b"Jefe".to_vec());
        assert_eq!(
            sign_hex(&s, b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify_hex(
            &s,
            b"what do ya want for nothing?",
            "5BDCC146BF60754E6A042426089575C75A003F089D2739839DEC58B964EC3843"
        ));
        assert!(!verify_hex(&s, b"what do ya want for nothing!", "5bdc"));
        assert!(!verify_hex(&s, b"x", "zz"));
    }

    #[test]
    fn hex_round_trips_and_nonces_differ() {
        assert_eq!(
            from_hex(&to_hex(&[0, 1, 254, 255])).unwrap(),
            vec![0, 1, 254, 255]
        );
        assert!(from_hex("abc").is_none());
        let (a, b) = (nonce(), nonce());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
