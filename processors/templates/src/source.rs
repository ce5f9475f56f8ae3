//! Where templates come from (the compacted topic's local table, or a map in tests), and the
//! locale fallback `pt-BR` → `pt` → default locale.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use notify_runtime::records::{Channel, Template};
use notify_runtime::table::Table;

use crate::error::RenderError;

/// A keyed view of templates (`template_id/CHANNEL/locale`).
pub trait TemplateSource: Send + Sync + 'static {
    fn get(&self, key: &str) -> Option<Arc<Template>>;

    /// Waits until the view includes every template written before `since`; false when it
    /// could not catch up within `timeout`.
    fn caught_up(&self, since: Instant, timeout: Duration) -> impl Future<Output = bool> + Send;
}

impl TemplateSource for Table<Template> {
    fn get(&self, key: &str) -> Option<Arc<Template>> {
        Table::get(self, key)
    }

    async fn caught_up(&self, since: Instant, timeout: Duration) -> bool {
        self.sync(since, timeout).await
    }
}

/// Templates held in memory (unit tests, tools).
#[derive(Default, Clone)]
pub struct MemoryTemplates {
    rows: Arc<RwLock<HashMap<String, Arc<Template>>>>,
}

impl MemoryTemplates {
    pub fn new(templates: impl IntoIterator<Item = Template>) -> MemoryTemplates {
        let m = MemoryTemplates::default();
        for t in templates {
            m.put(t);
        }
        m
    }

    pub fn put(&self, template: Template) {
        let mut rows = self.rows.write().unwrap_or_else(|e| e.into_inner());
        rows.insert(template.key(), Arc::new(template));
    }
}

impl TemplateSource for MemoryTemplates {
    fn get(&self, key: &str) -> Option<Arc<Template>> {
        let rows = self.rows.read().unwrap_or_else(|e| e.into_inner());
        rows.get(key).cloned()
    }

    async fn caught_up(&self, _: Instant, _: Duration) -> bool {
        true
    }
}

/// The locales tried, in order: the exact one, its language, the default (no repeats).
/// `pt_BR` is read as `pt-BR`.
pub fn locale_chain(locale: &str, default: &str) -> Vec<String> {
    let mut chain: Vec<String> = Vec::with_capacity(3);
    let mut push = |l: &str| {
        let l = l.trim().replace('_', "-");
        if !l.is_empty() && !chain.iter().any(|c| c.eq_ignore_ascii_case(&l)) {
            chain.push(l);
        }
    };
    push(locale);
    let normalised = locale.replace('_', "-");
    if let Some((language, _)) = normalised.split_once('-') {
        push(language);
    }
    push(default);
    chain
}

/// The template for `channel` in the first locale of the chain that has one.
pub fn find<S: TemplateSource>(
    source: &S,
    template_id: &str,
    channel: Channel,
    locale: &str,
    default_locale: &str,
) -> Result<Arc<Template>, RenderError> {
    let tried = locale_chain(locale, default_locale);
    for l in &tried {
        if let Some(t) = source.get(&format!("{template_id}/{}/{l}", channel.as_str())) {
            return Ok(t);
        }
    }
    Err(RenderError::MissingTemplate {
        template_id: template_id.into(),
        channel: channel.as_str(),
        locale: locale.into(),
        tried,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(locale: &str, body: &str) -> Template {
        Template {
            template_id: "welcome".into(),
            channel: Channel::Sms,
            locale: locale.into(),
            title: None,
            body: body.into(),
            html_body: None,
            truncate: false,
        }
    }

    #[test]
    fn chain_goes_from_region_to_language_to_default() {
        assert_eq!(locale_chain("pt-BR", "en"), ["pt-BR", "pt", "en"]);
        assert_eq!(locale_chain("pt_BR", "en"), ["pt-BR", "pt", "en"]);
        assert_eq!(locale_chain("en", "en"), ["en"]);
        assert_eq!(locale_chain("en-US", "en"), ["en-US", "en"]);
        assert_eq!(locale_chain("", "en"), ["en"]);
    }

    #[test]
    fn finds_the_most_specific_locale() {
        let src = MemoryTemplates::new([template("pt", "olá"), template("en", "hi")]);
        let f = |l: &str| find(&src, "welcome", Channel::Sms, l, "en").map(|t| t.body.clone());
        assert_eq!(f("pt-BR").unwrap(), "olá");
        assert_eq!(f("de-DE").unwrap(), "hi");
        src.put(template("pt-BR", "oi"));
        assert_eq!(f("pt-BR").unwrap(), "oi");
        let err = find(&src, "welcome", Channel::Push, "pt-BR", "en").unwrap_err();
        assert_eq!(
            err.to_string(),
            "no template welcome/PUSH for locale pt-BR (tried pt-BR, pt, en)"
        );
    }
}
