//! Templating, rate limiting and fan-out against the real stack (issue 4).

use std::collections::BTreeMap;
use std::time::Duration;

use notify_runtime::records::{
    Channel, DeliveryChannel, DeliveryStatus, NotificationRequest, Outcome, Priority,
    RoutedNotification, Target, Template,
};
use notify_runtime::table::Table;
use notify_runtime::{Config, now_ms};
use notify_tests::{Received, RunningProcessor, TestEnv, eventually};

mod fanout;
mod limits;
mod table;

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
    let table: Table<Template> = Table::global(config, templates_topic).await.expect("table");
    let metrics = notify_runtime::Metrics::new(notify_templates::NAME);
    let p = notify_templates::processor(table, &settings, config, &metrics);
    env.start_stage(p, notify_templates::NAME, &[input], config.clone(), metrics)
        .await
}

pub fn statuses(got: &[Received<DeliveryStatus>], outcome: Outcome) -> Vec<&DeliveryStatus> {
    got.iter()
        .map(|r| &r.value)
        .filter(|s| s.outcome == outcome)
        .collect()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn templates_push_produces_the_demo_templates_keyed_by_id_channel_locale() {
    let env = TestEnv::new("templates_push").await;
    let [topic] = env
        .create_topics(&[("templates", 1)])
        .await
        .try_into()
        .unwrap();
    let dir = notify_tests::repo_root().join("dev/templates");
    let loaded = notify_cli::templates::load_dir(&dir).expect("demo templates load");
    assert_eq!(loaded.len(), 18, "3 templates x 3 channels x 2 locales");
    let pushed = notify_cli::templates::push(&env.config, &topic, &loaded)
        .await
        .expect("pushed");
    assert_eq!(pushed, 18);
    let got = env
        .reader(&topic)
        .records::<Template>(&env.codec, 18, Duration::from_secs(30))
        .await;
    assert_eq!(got.len(), 18);
    for r in &got {
        assert_eq!(r.key.as_deref(), Some(r.value.key().as_str()));
    }
    let pt = got
        .iter()
        .find(|r| r.key.as_deref() == Some("new_login/EMAIL/pt-BR"))
        .expect("pt-BR e-mail");
    assert!(
        pt.value
            .html_body
            .as_deref()
            .unwrap_or("")
            .contains("{{ device }}")
    );
}
