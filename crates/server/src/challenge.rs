//! Head-turn challenges for unattended gates: the server issues a random turn (left or right)
//! under a random nonce, bound to the API key that asked and to a deadline; a gate session
//! presenting the nonce must show the traveller turning that way, and the nonce is spent either
//! way. A replayed recording of an earlier session turns the wrong way half the time and cannot
//! reuse a nonce. Outstanding challenges are bounded in number; expired ones are dropped.

use app::liveness::Turn;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most challenges outstanding at once (a gate holds one at a time; a flood of requests for
/// challenges costs a bounded amount of memory and then gets 503).
pub const MAX_OUTSTANDING: usize = 10_000;

struct Issued {
    turn: Turn,
    key_id: String,
    expires: Instant,
}

#[derive(Default)]
pub struct Challenges {
    issued: Mutex<HashMap<String, Issued>>,
}

/// Why a nonce was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    Expired,
    OtherKey,
}

impl Challenges {
    /// A new challenge for `key_id`, valid for `ttl`: (nonce, turn); `None` when too many are
    /// outstanding or no randomness is available.
    pub fn issue(&self, key_id: &str, ttl: Duration, now: Instant) -> Option<(String, Turn)> {
        let mut bytes = [0u8; 17];
        getrandom::getrandom(&mut bytes).ok()?;
        let nonce = hex::encode(&bytes[..16]);
        let turn = if bytes[16] & 1 == 0 {
            Turn::Left
        } else {
            Turn::Right
        };
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        if issued.len() >= MAX_OUTSTANDING {
            issued.retain(|_, c| c.expires > now);
            if issued.len() >= MAX_OUTSTANDING {
                return None;
            }
        }
        issued.insert(
            nonce.clone(),
            Issued {
                turn,
                key_id: key_id.to_string(),
                expires: now + ttl,
            },
        );
        Some((nonce, turn))
    }

    /// Spends `nonce` (it cannot be used again, whatever the answer) and returns its turn when it
    /// was issued to `key_id` and has not expired.
    pub fn redeem(&self, nonce: &str, key_id: &str, now: Instant) -> Result<Turn, Refusal> {
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        let c = issued.remove(nonce).ok_or(Refusal::Unknown)?;
        if c.expires <= now {
            return Err(Refusal::Expired);
        }
        if c.key_id != key_id {
            return Err(Refusal::OtherKey);
        }
        Ok(c.turn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_single_use_bound_to_a_key_and_a_deadline() {
        let c = Challenges::default();
        let now = Instant::now();
        let ttl = Duration::from_secs(10);
        let (n, turn) = c.issue("k1", ttl, now).unwrap();
        assert_eq!(n.len(), 32);
        assert_eq!(c.redeem(&n, "k1", now), Ok(turn));
        assert_eq!(c.redeem(&n, "k1", now), Err(Refusal::Unknown));
        let (n, _) = c.issue("k1", ttl, now).unwrap();
        assert_eq!(c.redeem(&n, "k2", now), Err(Refusal::OtherKey));
        // Spent even though refused.
        assert_eq!(c.redeem(&n, "k1", now), Err(Refusal::Unknown));
        let (n, _) = c.issue("k1", ttl, now).unwrap();
        assert_eq!(c.redeem(&n, "k1", now + ttl), Err(Refusal::Expired));
        // Both turns come up.
        let turns: Vec<Turn> = (0..64).map(|_| c.issue("k", ttl, now).unwrap().1).collect();
        assert!(turns.contains(&Turn::Left) && turns.contains(&Turn::Right));
    }

    #[test]
    fn outstanding_challenges_are_bounded() {
        let c = Challenges::default();
        let now = Instant::now();
        let short = Duration::from_secs(1);
        for _ in 0..MAX_OUTSTANDING {
            c.issue("k", short, now).unwrap();
        }
        assert!(c.issue("k", short, now).is_none());
        // Once they expire, room is made.
        assert!(c.issue("k", short, now + short).is_some());
    }
}
