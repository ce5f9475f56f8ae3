//! Templating, rate limiting and fan-out against the real stack (issue 4).

use std::collections::BTreeMap;
use std::time::Duration;

use notify_runtime::dlq;
use notify_runtime::records::{
    Channel, DeliveryChannel, DeliveryStatus, NotificationRequest, Outcome, Priority,
    RoutedNotification, Target, Template,
};
use notify_runtime::table::Table;
use notify_runtime::{Config, now_ms};
use notify_tests::{Received, RunningProcessor, TestEnv, eventually, headers_of};

#[path = "stages_render_limits.rs"]
mod limits;

pub fn template(
    id: &str,
    channel: Channel,
    locale: &str,
    title: Option<&str>,
    body: &str,
) -> Template {
    Template {
        template_id: id.into(),
        channel,
        locale: locale.into(),
        title: title.map(Into::into),
        body: body.into(),
        html_body: None,
        truncate: false,
    }
}

pub fn routed(
    event_id: &str,
    user_id: &str,
    template_id: &str,
    locale: &str,
    data: &[(&str, &str)],
    targets: &[(DeliveryChannel, &str)],
) -> RoutedNotification {
    RoutedNotification {
        request: NotificationRequest {
            event_id: event_id.into(),
            user_id: user_id.into(),
            category: "billing".into(),
            template_id: template_id.into(),
            data: data
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            channels: vec![],
            priority: Priority::Normal,
            created_at: now_ms(),
            expires_at: None,
            source: "test".into(),
            email: None,
            phone: None,
        },
        locale: locale.into(),
        timezone: "UTC".into(),
        user: BTreeMap::from([("name".to_string(), "Ana".to_string())]),
        targets: targets
            .iter()
            .map(|(channel, address)| Target {
                channel: *channel,
                address: address.to_string(),
            })
            .collect(),
        rendered: vec![],
    }
}

/// Starts the templates stage over a table of `templates_topic`.
pub async fn start_templates(
    env: &TestEnv,
    config: &Config,
    templates_topic: &str,
    input: &str,
    output: &str,
) -> RunningProcessor {
    let settings = notify_templates::Settings {
        input: input.into(),
        output: output.into(),
        templates_topic: templates_topic.into(),
        ..Default::default()
    };
    let table: Table<Template> = Table::new(config, templates_topic).await.expect("table");
    table.assign_all();
    let p = notify_templates::processor(table, &settings, config);
    env.start_with(p, notify_templates::NAME, &[input], config.clone())
        .await
}

fn statuses(got: &[Received<DeliveryStatus>], outcome: Outcome) -> Vec<&DeliveryStatus> {
    got.iter()
        .map(|r| &r.value)
        .filter(|s| s.outcome == outcome)
        .collect()
}

/// Expected output of one row of the rendering table.
enum Expect<'a> {
    Rendered {
        title: Option<&'a str>,
        body: &'a str,
        html: Option<&'a str>,
    },
    Failed(&'a str),
}

/// One row: event id (also the case's name), template, locale, data, target, expectation.
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Vec<(&'a str, &'a str)>,
    DeliveryChannel,
    Expect<'a>,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rendering_table() {
    let env = TestEnv::new("render_table").await;
    let [templates, input, output, status, dlq_topic] = env
        .create_topics(&[
            ("templates", 1),
            ("in", 2),
            ("out", 2),
            ("status", 1),
            ("dlq", 1),
        ])
        .await
        .try_into()
        .unwrap();
    let mut email = template(
        "invoice_due",
        Channel::Email,
        "en",
        Some("Invoice for {{ name }}"),
        "Hi {{ name }}, {{ amount }} is due.",
    );
    email.html_body = Some("<p>Hi {{ name }}, <b>{{ amount }}</b> is due.</p>".into());
    let mut truncated = template("long_sms", Channel::Sms, "en", None, "{{ text }}");
    truncated.truncate = true;
    for t in [
        email,
        template(
            "invoice_due",
            Channel::Push,
            "en",
            Some("Invoice"),
            "{{ amount }} due",
        ),
        template(
            "invoice_due",
            Channel::Push,
            "pt",
            Some("Fatura"),
            "{{ amount }} a pagar, {{ user.name }}",
        ),
        template(
            "invoice_due",
            Channel::Sms,
            "pt-BR",
            None,
            "Fatura de {{ amount }} vence {{ due }}",
        ),
        template(
            "invoice_due",
            Channel::Sms,
            "en",
            None,
            "Invoice {{ amount }}",
        ),
        template("strict_sms", Channel::Sms, "en", None, "{{ text }}"),
        truncated,
    ] {
        env.produce(&templates, &t.key(), &t).await;
    }
    let mut config = env.config.clone();
    config.runtime.status_topic = status.clone();
    config.runtime.dlq_topic = dlq_topic.clone();
    let running = start_templates(&env, &config, &templates, &input, &output).await;

    let long = "x".repeat(600); // 4 GSM-7 segments: over the default maximum of 3
    let three_segments = "x".repeat(459);
    use DeliveryChannel::*;
    let cases: Vec<Case> = vec![
        (
            "escape",
            "invoice_due",
            "en",
            vec![("name", "Tom & <Jerry>"), ("amount", "€5")],
            Email,
            Expect::Rendered {
                title: Some("Invoice for Tom & <Jerry>"),
                body: "Hi Tom & <Jerry>, €5 is due.",
                html: Some("<p>Hi Tom &amp; &lt;Jerry&gt;, <b>€5</b> is due.</p>"),
            },
        ),
        (
            "no-double-escape",
            "invoice_due",
            "en",
            vec![("amount", "5 &amp; more")],
            Apns,
            Expect::Rendered {
                title: Some("Invoice"),
                body: "5 &amp; more due",
                html: None,
            },
        ),
        (
            "pt-BR-to-pt",
            "invoice_due",
            "pt-BR",
            vec![("amount", "R$ 10")],
            Fcm,
            Expect::Rendered {
                title: Some("Fatura"),
                body: "R$ 10 a pagar, Ana",
                html: None,
            },
        ),
        (
            "pt-BR-exact",
            "invoice_due",
            "pt-BR",
            vec![("amount", "R$ 10"), ("due", "amanhã")],
            Sms,
            Expect::Rendered {
                title: None,
                body: "Fatura de R$ 10 vence amanhã",
                html: None,
            },
        ),
        (
            "de-to-default",
            "invoice_due",
            "de-DE",
            vec![("amount", "7")],
            Sms,
            Expect::Rendered {
                title: None,
                body: "Invoice 7",
                html: None,
            },
        ),
        (
            "truncated",
            "long_sms",
            "en",
            vec![("text", long.as_str())],
            Sms,
            Expect::Rendered {
                title: None,
                body: &three_segments,
                html: None,
            },
        ),
        (
            "missing-variable",
            "invoice_due",
            "pt-BR",
            vec![("amount", "1")],
            Sms,
            Expect::Failed("body: missing variable(s) due"),
        ),
        (
            "missing-template",
            "nope",
            "en",
            vec![],
            Sms,
            Expect::Failed("no template nope/SMS for locale en (tried en)"),
        ),
        (
            "oversize-sms",
            "strict_sms",
            "en",
            vec![("text", long.as_str())],
            Sms,
            Expect::Failed("SMS over limit: 4 segments (Gsm7, 600 units) > 3 allowed"),
        ),
    ];
    for (name, template_id, locale, data, channel, _) in &cases {
        let r = routed(
            name,
            &format!("user-{name}"),
            template_id,
            locale,
            data,
            &[(*channel, "addr")],
        );
        env.produce(&input, &r.request.user_id, &r).await;
    }
    let ok = cases
        .iter()
        .filter(|c| matches!(c.5, Expect::Rendered { .. }))
        .count();
    let failed = cases.len() - ok;
    let out = env
        .reader(&output)
        .records::<RoutedNotification>(&env.codec, ok, Duration::from_secs(60))
        .await;
    let st = env
        .reader(&status)
        .records::<DeliveryStatus>(&env.codec, failed, Duration::from_secs(60))
        .await;
    let dead = env.reader(&dlq_topic).raw(failed, Duration::from_secs(60));
    assert_eq!(out.len(), ok);
    assert_eq!(dead.len(), failed);
    for (name, _, _, _, channel, expect) in &cases {
        match expect {
            Expect::Rendered { title, body, html } => {
                let r = out
                    .iter()
                    .find(|r| r.value.request.event_id == *name)
                    .unwrap_or_else(|| panic!("{name}: no output"));
                assert_eq!(r.key.as_deref(), Some(format!("user-{name}").as_str()));
                assert_eq!(r.value.rendered.len(), 1, "{name}");
                let got = &r.value.rendered[0];
                assert_eq!(got.channel, channel.requested_as(), "{name}");
                assert_eq!(got.title.as_deref(), *title, "{name}: title");
                assert_eq!(got.body, *body, "{name}: body");
                assert_eq!(got.html_body.as_deref(), *html, "{name}: html");
            }
            Expect::Failed(reason) => {
                let s = st
                    .iter()
                    .find(|s| s.value.event_id == *name)
                    .unwrap_or_else(|| panic!("{name}: no status in {st:?}"));
                assert_eq!(s.value.outcome, Outcome::RenderFailed, "{name}");
                assert_eq!(s.key.as_deref(), Some(*name), "status keyed by event id");
                assert!(
                    s.value.reason.as_deref().unwrap_or("").contains(reason),
                    "{name}: {:?}",
                    s.value.reason
                );
                let d = dead
                    .iter()
                    .find(|m| {
                        headers_of(m)
                            .get(dlq::REASON)
                            .is_some_and(|r| r.contains(reason))
                    })
                    .unwrap_or_else(|| panic!("{name}: no dead letter"));
                assert_eq!(headers_of(d)[dlq::CLASS], "render");
                assert_eq!(headers_of(d)[dlq::STAGE], "templates");
            }
        }
    }
    running.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_template_updated_in_the_topic_changes_the_next_request() {
    let env = TestEnv::new("render_update").await;
    let [templates, input, output] = env
        .create_topics(&[("templates", 1), ("in", 1), ("out", 1)])
        .await
        .try_into()
        .unwrap();
    let v1 = template(
        "promo",
        Channel::Push,
        "en",
        Some("Hi"),
        "version 1 for {{ name }}",
    );
    env.produce(&templates, &v1.key(), &v1).await;
    let running = start_templates(&env, &env.config, &templates, &input, &output).await;
    let reader = env.reader(&output);
    let target = [(DeliveryChannel::Apns, "tok")];
    for round in 1..=3 {
        if round > 1 {
            // Written right before the request: no restart, no wait.
            let v = template(
                "promo",
                Channel::Push,
                "en",
                Some("Hi"),
                &format!("version {round} for {{{{ name }}}}"),
            );
            env.produce(&templates, &v.key(), &v).await;
        }
        let r = routed(
            &format!("e{round}"),
            "u1",
            "promo",
            "en",
            &[("name", "Bo")],
            &target,
        );
        env.produce(&input, "u1", &r).await;
        let got = reader
            .records::<RoutedNotification>(&env.codec, 1, Duration::from_secs(30))
            .await;
        assert_eq!(got.len(), 1, "round {round}");
        assert_eq!(
            got[0].value.rendered[0].body,
            format!("version {round} for Bo")
        );
    }
    running.stop().await.expect("clean stop");
}

/// Polls `check` until it holds (60 s at most).
pub async fn wait_for<T>(what: &str, check: impl AsyncFnMut() -> Option<T>) -> T {
    eventually(Duration::from_secs(60), check)
        .await
        .unwrap_or_else(|| panic!("timed out waiting for {what}"))
}
