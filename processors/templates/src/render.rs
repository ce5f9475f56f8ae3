//! Rendering one template with the request's data and the profile (`user.*`).
//!
//! Strict undefined: a placeholder without a value is an error that names the variable, never
//! an empty string in a message a user reads. Only the e-mail HTML part is auto-escaped; plain
//! text, SMS and push are sent as text, so escaping them would show `&amp;` to the user.

use std::collections::{BTreeMap, HashSet};

use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};
use notify_runtime::records::{Channel, Rendered, Template};

use crate::error::RenderError;

/// Template names; the HTML one is the only one escaped.
const HTML: &str = "html_body";

/// What a template is rendered with.
#[derive(Debug, Clone)]
pub struct Vars<'a> {
    pub data: &'a BTreeMap<String, String>,
    pub user: &'a BTreeMap<String, String>,
}

static NOTHING: BTreeMap<String, String> = BTreeMap::new();

impl Default for Vars<'_> {
    fn default() -> Self {
        Vars {
            data: &NOTHING,
            user: &NOTHING,
        }
    }
}

impl Vars<'_> {
    fn value(&self) -> Value {
        // Request data at the top level; the profile under `user` (it wins over a data key
        // of that name, so a producer cannot impersonate profile fields).
        let mut pairs: Vec<(String, Value)> = self
            .data
            .iter()
            .filter(|(k, _)| k.as_str() != "user")
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        pairs.push((
            "user".into(),
            Value::from_pairs(self.user.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        ));
        Value::from_pairs(pairs)
    }

    /// Whether a dotted name reported by the parser resolves.
    fn resolves(&self, name: &str, globals: &HashSet<String>) -> bool {
        match name.split_once('.') {
            None => name == "user" || self.data.contains_key(name) || globals.contains(name),
            Some(("user", field)) => !field.contains('.') && self.user.contains_key(field),
            // Data values are strings: they have no attributes.
            Some(_) => false,
        }
    }
}

/// Renders templates; one per processor, shared by every lane.
pub struct Renderer {
    env: Environment<'static>,
    globals: HashSet<String>,
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new()
    }
}

impl Renderer {
    pub fn new() -> Renderer {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|name| {
            if name == HTML {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        let globals = env.globals().map(|(k, _)| k.to_string()).collect();
        Renderer { env, globals }
    }

    /// Renders the parts of `template` that `channel` uses.
    pub fn render(&self, template: &Template, vars: &Vars<'_>) -> Result<Rendered, RenderError> {
        let ctx = vars.value();
        let field = |name: &'static str, source: &str| self.field(name, source, &ctx, vars);
        let channel = template.channel;
        let title = match (channel, &template.title) {
            (Channel::Push | Channel::Email, Some(t)) => Some(field("title", t)?),
            _ => None,
        };
        let body = field("body", &template.body)?;
        let html_body = match (channel, &template.html_body) {
            (Channel::Email, Some(h)) => Some(field(HTML, h)?),
            _ => None,
        };
        Ok(Rendered {
            channel,
            title,
            body,
            html_body,
        })
    }

    fn field(
        &self,
        name: &'static str,
        source: &str,
        ctx: &Value,
        vars: &Vars<'_>,
    ) -> Result<String, RenderError> {
        let template = self
            .env
            .template_from_named_str(name, source)
            .map_err(|e| RenderError::Syntax {
                field: name,
                message: e.to_string(),
            })?;
        template.render(ctx).map_err(|e| {
            if e.kind() == ErrorKind::UndefinedError {
                let mut missing: Vec<String> = template
                    .undeclared_variables(true)
                    .into_iter()
                    .filter(|n| !vars.resolves(n, &self.globals))
                    .collect();
                missing.sort();
                if !missing.is_empty() {
                    return RenderError::MissingVariable {
                        field: name,
                        names: missing,
                    };
                }
            }
            RenderError::Syntax {
                field: name,
                message: e.to_string(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(channel: Channel, title: Option<&str>, body: &str, html: Option<&str>) -> Template {
        Template {
            template_id: "t".into(),
            channel,
            locale: "en".into(),
            title: title.map(Into::into),
            body: body.into(),
            html_body: html.map(Into::into),
            truncate: false,
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn fills_data_and_profile_and_escapes_only_html() {
        let data = map(&[("name", "Tom & <Jerry>"), ("amount", "12.50")]);
        let user = map(&[("locale", "en")]);
        let t = template(
            Channel::Email,
            Some("Invoice for {{ name }}"),
            "Hi {{ name }}, {{ amount }} due ({{ user.locale }})",
            Some("<p>Hi {{ name }}</p>"),
        );
        let r = Renderer::new()
            .render(
                &t,
                &Vars {
                    data: &data,
                    user: &user,
                },
            )
            .unwrap();
        assert_eq!(r.title.as_deref(), Some("Invoice for Tom & <Jerry>"));
        assert_eq!(r.body, "Hi Tom & <Jerry>, 12.50 due (en)");
        assert_eq!(
            r.html_body.as_deref(),
            Some("<p>Hi Tom &amp; &lt;Jerry&gt;</p>")
        );
    }

    #[test]
    fn variables_with_script_or_template_syntax_stay_inert_in_html() {
        let data = map(&[
            ("name", "<script>alert(1)</script>"),
            ("link", "\" onmouseover=\"alert(1)"),
            ("amount", "{{ user.email }}{% raw %}"),
        ]);
        let user = map(&[("email", "ana@example.com")]);
        let t = template(
            Channel::Email,
            Some("Hi {{ name }}"),
            "{{ amount }}",
            Some("<a href=\"{{ link }}\">{{ name }}</a> {{ amount }}"),
        );
        let r = Renderer::new()
            .render(
                &t,
                &Vars {
                    data: &data,
                    user: &user,
                },
            )
            .unwrap();
        let html = r.html_body.unwrap();
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("\" onmouseover"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        // A value is text, never a template: nothing of the profile leaks through it.
        assert!(!html.contains("ana@example.com") && !r.body.contains("ana@example.com"));
        assert_eq!(r.body, "{{ user.email }}{% raw %}");
    }

    #[test]
    fn plain_text_is_not_double_escaped() {
        let data = map(&[("name", "Tom &amp; Jerry")]);
        let t = template(Channel::Push, Some("{{ name }}"), "{{ name }}", None);
        let r = Renderer::new()
            .render(
                &t,
                &Vars {
                    data: &data,
                    user: &BTreeMap::new(),
                },
            )
            .unwrap();
        assert_eq!(r.body, "Tom &amp; Jerry");
        assert_eq!(r.title.as_deref(), Some("Tom &amp; Jerry"));
    }

    #[test]
    fn a_missing_variable_is_named() {
        let t = template(
            Channel::Sms,
            None,
            "{{ amount }} by {{ due }} for {{ user.name }}",
            None,
        );
        let data = map(&[("amount", "1")]);
        let err = Renderer::new()
            .render(
                &t,
                &Vars {
                    data: &data,
                    user: &BTreeMap::new(),
                },
            )
            .unwrap_err();
        assert_eq!(
            err,
            RenderError::MissingVariable {
                field: "body",
                names: vec!["due".into(), "user.name".into()]
            }
        );
        assert!(err.to_string().contains("due"), "{err}");
    }

    #[test]
    fn a_syntax_error_is_an_error_not_a_panic() {
        let t = template(Channel::Sms, None, "{{ amount ", None);
        let err = Renderer::new().render(&t, &Vars::default()).unwrap_err();
        assert!(
            matches!(err, RenderError::Syntax { field: "body", .. }),
            "{err}"
        );
    }

    #[test]
    fn sms_ignores_title_and_push_ignores_html() {
        let t = template(Channel::Sms, Some("{{ nope }}"), "hi", Some("{{ nope }}"));
        let r = Renderer::new().render(&t, &Vars::default()).unwrap();
        assert_eq!(r.title, None);
        assert_eq!(r.html_body, None);
    }
}
