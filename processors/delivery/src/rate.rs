//! A token bucket per provider. Waiting for a token holds the lane, so a throttled provider
//! slows consumption (the runtime pauses partitions) instead of queueing records in memory.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct TokenBucket {
    /// Tokens added per second; `None` means unlimited.
    rate: Option<f64>,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// `rate_per_sec <= 0` disables the limit; `burst` is at least one token.
    pub fn new(rate_per_sec: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        let rate = (rate_per_sec > 0.0 && rate_per_sec.is_finite()).then_some(rate_per_sec);
        Self {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes one token, or says how long until one is there.
    pub fn try_take(&self, now: Instant) -> Result<(), Duration> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        // Only arithmetic happens under the lock, so a poisoned one is still consistent.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = &mut *state;
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * rate).min(self.burst);
        *last = now.max(*last);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / rate))
        }
    }

    /// Waits until a token is available and takes it.
    pub async fn acquire(&self) {
        while let Err(wait) = self.try_take(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let bucket = TokenBucket::new(10.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(bucket.try_take(t0).is_ok());
        }
        let wait = bucket.try_take(t0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100));
        assert!(bucket.try_take(t0 + Duration::from_millis(100)).is_ok());
        assert!(bucket.try_take(t0 + Duration::from_millis(100)).is_err());
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(bucket.try_take(later).is_ok());
        }
        assert!(bucket.try_take(later).is_err());
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let bucket = TokenBucket::new(0.0, 1);
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert!(bucket.try_take(t0).is_ok());
        }
    }
}
