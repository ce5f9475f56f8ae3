//! The rendering table: templates, locales and data against the expected output, including
//! escaping, locale fallback, a missing variable or template and an oversize SMS.

use std::time::Duration;

use notify_runtime::dlq;
use notify_runtime::records::{
    Channel, DeliveryChannel, DeliveryStatus, Outcome, RoutedNotification,
};
use notify_tests::{TestEnv, headers_of};

use super::{routed, start_templates, template};

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
