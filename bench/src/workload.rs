//! The synthetic intake: a realistic mix of users, categories, channels and priorities, with
//! exactly every tenth record a re-send of an earlier one (10% duplicate event ids).

use std::collections::BTreeMap;

use notify_runtime::records::{Channel, NotificationRequest, Priority};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Records re-sent are picked among this many most recent originals (a producer retrying).
const RECENT: usize = 10_000;

pub const CATEGORIES: &[(&str, &str)] = &[
    ("billing", "invoice_due"),
    ("shipping", "parcel_shipped"),
    ("security", "new_login"),
    ("marketing", "weekly_digest"),
    ("social", "new_follower"),
];

/// The id of user number `i` (profiles are written for 0..users).
pub fn user_id(i: u64) -> String {
    format!("user-{i:07}")
}

pub struct Workload {
    rng: StdRng,
    /// Every request to push and SMS of a user with two devices (three provider calls), no
    /// re-sends: the throughput workload of the whole pipeline.
    three_channels: bool,
    users: u64,
    issued: u64,
    recent: Vec<NotificationRequest>,
}

impl Workload {
    /// `users` distinct recipients; the same seed gives the same stream.
    pub fn new(seed: u64, users: u64) -> Workload {
        Workload {
            rng: StdRng::seed_from_u64(seed),
            three_channels: false,
            users: users.max(1),
            issued: 0,
            recent: Vec::with_capacity(RECENT),
        }
    }

    /// A user id skewed towards a few busy recipients, as real traffic is.
    /// The throughput workload (see `three_channels`).
    pub fn three_channels(seed: u64, users: u64) -> Workload {
        Workload {
            three_channels: true,
            ..Workload::new(seed, users)
        }
    }

    fn user(&mut self) -> String {
        let u: f64 = self.rng.random();
        user_id(((u * u) * self.users as f64) as u64)
    }

    fn channels(&mut self) -> Vec<Channel> {
        if self.three_channels {
            return vec![Channel::Push, Channel::Sms];
        }
        match self.rng.random_range(0..100) {
            0..40 => vec![Channel::Push],
            40..65 => vec![Channel::Email],
            65..75 => vec![Channel::Sms],
            75..90 => vec![Channel::Push, Channel::Email],
            // Empty: every channel the user allows.
            _ => Vec::new(),
        }
    }

    fn priority(&mut self) -> Priority {
        match self.rng.random_range(0..100) {
            0..10 => Priority::Low,
            10..85 => Priority::Normal,
            85..97 => Priority::High,
            _ => Priority::Critical,
        }
    }

    /// The next request, stamped `created_at`.
    pub fn next(&mut self, created_at: i64) -> NotificationRequest {
        self.issued += 1;
        if self.issued.is_multiple_of(10) && !self.recent.is_empty() && !self.three_channels {
            let pick = self.rng.random_range(0..self.recent.len());
            let mut again = self.recent[pick].clone();
            again.created_at = created_at;
            return again;
        }
        let (category, template) = CATEGORIES[self.rng.random_range(0..CATEGORIES.len())];
        let user_id = self.user();
        let amount = self.rng.random_range(1..100_000);
        let data: BTreeMap<String, String> = [
            (
                "amount".to_string(),
                format!("{}.{:02}", amount / 100, amount % 100),
            ),
            (
                "order".to_string(),
                format!("ORD-{:010}", self.rng.random::<u32>()),
            ),
            ("name".to_string(), "Alex".to_string()),
            (
                "link".to_string(),
                format!("https://example.com/a/{:016x}", self.rng.random::<u64>()),
            ),
        ]
        .into();
        let request = NotificationRequest {
            event_id: format!("evt-{:016x}-{}", self.rng.random::<u64>(), self.issued),
            user_id,
            category: category.into(),
            template_id: template.into(),
            data,
            channels: self.channels(),
            priority: self.priority(),
            created_at,
            expires_at: Some(created_at + 86_400_000),
            source: format!("{category}-service"),
            email: None,
            phone: None,
        };
        if self.recent.len() < RECENT {
            self.recent.push(request.clone());
        } else {
            let slot = (self.issued as usize) % RECENT;
            self.recent[slot] = request.clone();
        }
        request
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn one_record_in_ten_repeats_an_event_id() {
        let mut w = Workload::new(7, 1_000);
        let mut seen = HashSet::new();
        let mut repeats = 0;
        for i in 0..10_000 {
            let r = w.next(1_700_000_000_000 + i);
            assert!(r.validate().is_ok());
            if !seen.insert(r.event_id) {
                repeats += 1;
            }
        }
        assert_eq!(repeats, 1_000, "every 10th record is a re-send");
    }

    #[test]
    fn users_are_skewed_but_many() {
        let mut w = Workload::new(1, 1_000);
        let users: HashSet<String> = (0..5_000).map(|i| w.next(i + 1).user_id).collect();
        assert!(users.len() > 300 && users.len() <= 1_000, "{}", users.len());
    }
}
