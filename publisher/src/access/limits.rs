//! Per-identity rate limits on the requests that change things (the endpoint table marks them:
//! `change`, `rollback`, `schema-push`): a token bucket per caller identity (the `governor` crate), per validator
//! instance. A refused request gets [`ErrorKind::RateLimited`] and writes nothing.

use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use mycosynth_subscriber::wire::{ApiError, ErrorKind};

use super::envelope::Requester;

/// Above this many tracked identities, the ones with full buckets are forgotten.
const MAX_TRACKED_IDENTITIES: usize = 10_000;

/// A rate: `N/s`, `N/m` (or `N`, per second). Parsed from `--rate-limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per `per`.
    pub requests: NonZeroU32,
    /// The period.
    pub per: Duration,
}

impl FromStr for RateLimit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (count, unit) = text.split_once('/').unwrap_or((text, "s"));
        let per = match unit {
            "s" | "sec" => Duration::from_secs(1),
            "m" | "min" => Duration::from_secs(60),
            other => return Err(format!("unknown rate unit {other:?} (use N/s or N/m)")),
        };
        let requests = count
            .trim()
            .parse::<NonZeroU32>()
            .map_err(|_| format!("rate {text:?}: the count must be a whole number above 0"))?;
        Ok(RateLimit { requests, per })
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = if self.per >= Duration::from_secs(60) {
            "m"
        } else {
            "s"
        };
        write!(f, "{}/{unit}", self.requests)
    }
}

/// The limiter of one validator instance (no limit when not configured).
pub struct RateLimits {
    limiter: Option<(DefaultKeyedRateLimiter<String>, RateLimit, NonZeroU32)>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("limit", &self.limiter.as_ref().map(|(_, l, b)| (l, b)))
            .finish()
    }
}

impl RateLimits {
    /// `limit` per identity with bursts of `burst` (default: the count of `limit`).
    pub fn new(limit: Option<RateLimit>, burst: Option<NonZeroU32>) -> RateLimits {
        let limiter = limit.and_then(|limit| {
            let burst = burst.unwrap_or(limit.requests);
            let quota = Quota::with_period(limit.per / limit.requests.get())?.allow_burst(burst);
            Some((RateLimiter::keyed(quota), limit, burst))
        });
        RateLimits { limiter }
    }

    /// Whether `action` by `caller` is over the limit right now (which uses up one token if not).
    /// Which actions are limited is the endpoint table's to say (`validator::endpoints`): reads
    /// never are.
    pub fn refusal(&self, action: &str, caller: &Requester) -> Option<ApiError> {
        let (limiter, limit, burst) = self.limiter.as_ref()?;
        if limiter.len() > MAX_TRACKED_IDENTITIES {
            limiter.retain_recent();
        }
        let not_until = limiter.check_key(&caller.identity).err()?;
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        metrics::counter!("mycosynth_validator_rate_limited_total").increment(1);
        tracing::info!(identity = %caller.identity, action, "rate limited");
        Some(ApiError {
            kind: ErrorKind::RateLimited,
            message: format!(
                "identity {:?} exceeded the rate limit of {limit} {action} requests (burst {burst}); retry in {} ms; nothing was written",
                caller.identity,
                wait.as_millis().max(1)
            ),
            violations: Vec::new(),
            current_version: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycosynth_subscriber::wire::endpoint;

    fn caller(identity: &str) -> Requester {
        Requester {
            identity: identity.into(),
            verified: false,
            via: None,
        }
    }

    #[test]
    fn rates_parse() {
        assert_eq!("5/s".parse::<RateLimit>().unwrap().requests.get(), 5);
        assert_eq!(
            "2/m".parse::<RateLimit>().unwrap().per,
            Duration::from_secs(60)
        );
        assert_eq!(
            "7".parse::<RateLimit>().unwrap().per,
            Duration::from_secs(1)
        );
        assert!("0/s".parse::<RateLimit>().is_err());
        assert!("5/h".parse::<RateLimit>().is_err());
        assert!("x/s".parse::<RateLimit>().is_err());
    }

    #[test]
    fn each_identity_has_its_own_bucket_and_reads_are_free() {
        let limits = RateLimits::new(Some("1/m".parse().unwrap()), NonZeroU32::new(2));
        assert!(limits.refusal(endpoint::CHANGE, &caller("alice")).is_none());
        assert!(limits.refusal(endpoint::CHANGE, &caller("alice")).is_none());
        let refused = limits.refusal(endpoint::CHANGE, &caller("alice")).unwrap();
        assert_eq!(refused.kind, ErrorKind::RateLimited);
        assert!(refused.message.contains("alice"), "{}", refused.message);
        assert!(limits.refusal(endpoint::CHANGE, &caller("bob")).is_none());
    }

    #[test]
    fn no_limit_refuses_nothing() {
        let limits = RateLimits::new(None, None);
        for _ in 0..100 {
            assert!(limits.refusal(endpoint::CHANGE, &caller("alice")).is_none());
        }
    }
}
