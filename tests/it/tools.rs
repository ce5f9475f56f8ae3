//! The operator commands against the real stack: topics, schemas, migrations, produce, HTTP.

use std::time::Duration;

use notify_cli::produce::{Kind, produce};
use notify_cli::schemas::{RegisterError, register};
use notify_cli::topics::{Change, TopicsFile, apply};
use notify_passthrough::AvroPassThrough;
use notify_runtime::records::NotificationRequest;
use notify_tests::{TestEnv, eventually, repo_root};

/// The real topics file with every name made private to this test.
fn private_topics(env: &TestEnv) -> TopicsFile {
    let mut file =
        TopicsFile::load(&repo_root().join("topics/topics.toml")).expect("topics file parses");
    for t in &mut file.topics {
        t.name = env.topic(&t.name);
    }
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topics_apply_twice_gives_the_same_state() {
    let env = TestEnv::new("topics").await;
    let file = private_topics(&env);
    let plan = apply(&env.config, &file, Some(1), true)
        .await
        .expect("dry run");
    assert_eq!(
        plan.len(),
        file.topics.len(),
        "dry run plans one create per topic"
    );
    assert!(plan.iter().all(|c| matches!(c, Change::Create { .. })));
    let first = apply(&env.config, &file, Some(1), false)
        .await
        .expect("first apply");
    assert_eq!(first.len(), file.topics.len());
    let second = apply(&env.config, &file, Some(1), false)
        .await
        .expect("second apply");
    assert!(second.is_empty(), "second apply changed {second:?}");

    // A changed file is applied as a difference: more partitions and a new retention.
    let mut grown = file.clone();
    grown.topics[0].partitions = Some(12);
    grown.topics[0]
        .config
        .insert("retention.ms".into(), "3600000".into());
    let third = apply(&env.config, &grown, Some(1), false)
        .await
        .expect("third apply");
    assert!(
        third
            .iter()
            .any(|c| matches!(c, Change::AddPartitions { to: 12, .. })),
        "{third:?}"
    );
    assert!(
        third
            .iter()
            .any(|c| matches!(c, Change::AlterConfig { key, .. } if key == "retention.ms")),
        "{third:?}"
    );
    let fourth = apply(&env.config, &grown, Some(1), false)
        .await
        .expect("fourth apply");
    assert!(fourth.is_empty(), "fourth apply changed {fourth:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn db_migrate_twice_gives_the_same_state() {
    let env = TestEnv::new("migrate").await;
    let session = notify_runtime::cql::connect(&env.config.cql)
        .await
        .expect("CQL reachable");
    let first = notify_runtime::cql::migrate(&session, &env.config.cql)
        .await
        .expect("first migrate");
    assert!(first.keyspace_created);
    assert_eq!(first.applied.len(), notify_runtime::cql::MIGRATIONS.len());
    let ks = env.config.cql.keyspace.clone();
    let tables = async |s: &scylla::client::session::Session| {
        let ks = ks.clone();
        {
            let rows = s
                .query_unpaged(
                    "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?",
                    (ks,),
                )
                .await
                .unwrap()
                .into_rows_result()
                .unwrap();
            let mut names: Vec<String> = rows
                .rows::<(String,)>()
                .unwrap()
                .map(|r| r.unwrap().0)
                .collect();
            names.sort();
            names
        }
    };
    let after_first = tables(&session).await;
    let second = notify_runtime::cql::migrate(&session, &env.config.cql)
        .await
        .expect("second migrate");
    assert!(!second.keyspace_created);
    assert!(
        second.applied.is_empty(),
        "second run applied {:?}",
        second.applied
    );
    assert_eq!(tables(&session).await, after_first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schemas_register_and_refuse_an_incompatible_change() {
    let env = TestEnv::new("schemas").await;
    let mut file = private_topics(&env);
    file.topics.truncate(3);
    let first = register(&env.config, &file, "BACKWARD")
        .await
        .expect("register");
    assert_eq!(first.len(), 3);
    let again = register(&env.config, &file, "BACKWARD")
        .await
        .expect("register again");
    assert_eq!(first, again, "registering the same schemas is idempotent");

    // Put the profile schema on the requests topic: not backward compatible.
    file.topics[0].value = Some("notify.v1.UserProfile".into());
    let err = register(&env.config, &file, "BACKWARD")
        .await
        .expect_err("must refuse");
    assert!(matches!(err, RegisterError::Incompatible { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn produce_reports_bad_lines_and_produces_the_rest() {
    let env = TestEnv::new("produce").await;
    let [topic] = env
        .create_topics(&[("requests", 2)])
        .await
        .try_into()
        .unwrap();
    let lines = [
        r#"{"event_id":"e1","user_id":"u1","category":"billing","template_id":"t","channels":["PUSH"]}"#,
        r#"not json"#,
        r#"{"event_id":"e2","user_id":"u2","category":"billing","template_id":"t","priority":"URGENT"}"#,
        "",
        r#"{"event_id":"e3","user_id":"u3","category":"billing","template_id":"t","data":{"a":"b"},"expires_at":null}"#,
    ]
    .join("\n");
    let report = produce(&env.config, Kind::Request, &topic, lines.as_bytes(), |_| {})
        .await
        .expect("produce");
    assert_eq!(report.produced, 2);
    let bad: Vec<usize> = report.bad.iter().map(|b| b.line).collect();
    assert_eq!(bad, vec![2, 3]);
    let got = env
        .reader(&topic)
        .records::<NotificationRequest>(&env.codec, 2, Duration::from_secs(20))
        .await;
    let mut ids: Vec<String> = got.into_iter().map(|r| r.value.event_id).collect();
    ids.sort();
    assert_eq!(ids, vec!["e1", "e3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processors_serve_metrics_health_and_readiness() {
    let env = TestEnv::new("http").await;
    let [input, output] = env
        .create_topics(&[("in", 2), ("out", 2)])
        .await
        .try_into()
        .unwrap();
    let running = env
        .start(AvroPassThrough { output }, "passthrough", &[&input])
        .await;
    let request = crate::foundation::request("evt-http", "user-http");
    env.produce(&input, "user-http", &request).await;
    let addr = running.running.http_addr.expect("http server bound");
    let client = reqwest::Client::new();
    let health = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let ready = eventually(Duration::from_secs(30), async || {
        let r = client
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .ok()?;
        (r.status().as_u16() == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "never became ready");
    let metrics = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for family in [
        "notify_records_consumed_total",
        "notify_dead_letters_total",
        "notify_process_duration_seconds_count",
        "notify_in_flight_records",
        "notify_build_info",
    ] {
        assert!(
            notify_tests::metric(&metrics, family, &[("processor", "passthrough")]).is_some(),
            "{family} not served"
        );
    }
    // Lag appears with the first statistics (every 5 s).
    let lag = eventually(Duration::from_secs(20), async || {
        running
            .running
            .metrics
            .missing_required()
            .is_empty()
            .then_some(())
    })
    .await;
    let missing = running.running.metrics.missing_required();
    assert!(lag.is_some(), "required metrics missing: {missing:?}");
    running.stop().await.expect("clean stop");
}
