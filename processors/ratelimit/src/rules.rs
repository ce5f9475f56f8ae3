//! Limits as configured: `[[processors.ratelimit.rules]] channel = "PUSH" max = 3
//! window_secs = 3600`, or with a `category` (and optionally a channel).

use std::collections::BTreeMap;

use notify_runtime::records::Channel;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawRule")]
pub struct Rule {
    /// The channel counted; absent counts every channel together.
    #[serde(default)]
    pub channel: Option<Channel>,
    /// The category counted; absent counts every category together.
    #[serde(default)]
    pub category: Option<String>,
    /// Sends allowed within any window of `window_secs`.
    pub max: u32,
    pub window_secs: u64,
}

/// A rule as written, checked on the way in so that `--check-config` reports a bad one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    channel: Option<Channel>,
    #[serde(default)]
    category: Option<String>,
    max: u32,
    window_secs: u64,
}

impl TryFrom<RawRule> for Rule {
    type Error = String;

    fn try_from(r: RawRule) -> Result<Rule, String> {
        let rule = Rule {
            channel: r.channel,
            category: r.category,
            max: r.max,
            window_secs: r.window_secs,
        };
        validate(std::slice::from_ref(&rule)).map_err(|e| e.join("; "))?;
        Ok(rule)
    }
}

impl Rule {
    /// The counter this rule reads: rules over the same channel and category share their
    /// sends (3 per hour and 10 per day count the same pushes).
    pub fn scope(&self) -> String {
        let channel = self.channel.map(Channel::as_str).unwrap_or("*");
        match &self.category {
            Some(c) => format!("category={c}/channel={channel}"),
            None => format!("channel={channel}"),
        }
    }

    pub fn applies(&self, channel: Channel, category: &str) -> bool {
        self.channel.is_none_or(|c| c == channel)
            && self.category.as_deref().is_none_or(|c| c == category)
    }

    pub fn window_ms(&self) -> i64 {
        i64::try_from(self.window_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    /// What a RATE_LIMITED status says.
    pub fn describe(&self) -> String {
        format!(
            "{} max {} per {}s",
            self.scope(),
            self.max,
            self.window_secs
        )
    }
}

/// Every problem with the rules at once.
pub fn validate(rules: &[Rule]) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        if r.window_secs == 0 {
            errors.push(format!(
                "rules[{i}] ({}): window_secs must be at least 1",
                r.scope()
            ));
        }
        if r.category.as_deref().is_some_and(|c| c.trim().is_empty()) {
            errors.push(format!("rules[{i}]: category is empty"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The rules that apply to one channel of one request, grouped by scope, with the TTL each
/// scope's entries need (its longest window).
pub fn scopes_for<'r>(
    rules: &'r [Rule],
    channel: Channel,
    category: &str,
) -> BTreeMap<String, (Vec<&'r Rule>, u64)> {
    let mut out: BTreeMap<String, (Vec<&Rule>, u64)> = BTreeMap::new();
    for rule in rules.iter().filter(|r| r.applies(channel, category)) {
        let entry = out.entry(rule.scope()).or_default();
        entry.0.push(rule);
        entry.1 = entry.1.max(rule.window_secs);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(channel: Option<Channel>, category: Option<&str>, max: u32, window_secs: u64) -> Rule {
        Rule {
            channel,
            category: category.map(Into::into),
            max,
            window_secs,
        }
    }

    #[test]
    fn rules_parse_from_toml() {
        let text = r#"
            [[rules]]
            channel = "PUSH"
            max = 3
            window_secs = 3600
            [[rules]]
            category = "marketing"
            channel = "SMS"
            max = 1
            window_secs = 86400
        "#;
        #[derive(Deserialize)]
        struct T {
            rules: Vec<Rule>,
        }
        let t: T = toml::from_str(text).unwrap();
        assert_eq!(t.rules[0], rule(Some(Channel::Push), None, 3, 3600));
        assert_eq!(t.rules[1].scope(), "category=marketing/channel=SMS");
        assert!(
            toml::from_str::<T>("[[rules]]\nmax = 1\nwindow_secs = 1\nchanel = \"SMS\"").is_err()
        );
        let zero = toml::from_str::<T>("[[rules]]\nmax = 1\nwindow_secs = 0").err();
        let zero = zero.map(|e| e.to_string()).unwrap_or_default();
        assert!(zero.contains("window_secs must be at least 1"), "{zero}");
    }

    #[test]
    fn scopes_group_rules_and_take_the_longest_window() {
        let rules = vec![
            rule(Some(Channel::Push), None, 3, 3600),
            rule(Some(Channel::Push), None, 10, 86400),
            rule(None, Some("marketing"), 5, 600),
            rule(Some(Channel::Sms), Some("marketing"), 1, 86400),
        ];
        let s = scopes_for(&rules, Channel::Push, "marketing");
        assert_eq!(
            s.keys().collect::<Vec<_>>(),
            ["category=marketing/channel=*", "channel=PUSH"]
        );
        assert_eq!(s["channel=PUSH"].1, 86400);
        assert_eq!(s["channel=PUSH"].0.len(), 2);
        assert!(scopes_for(&rules, Channel::Email, "billing").is_empty());
        assert_eq!(scopes_for(&rules, Channel::Sms, "marketing").len(), 2);
    }

    #[test]
    fn validation_reports_every_error() {
        let bad = vec![rule(None, Some(" "), 1, 0)];
        assert_eq!(validate(&bad).unwrap_err().len(), 2);
    }
}
