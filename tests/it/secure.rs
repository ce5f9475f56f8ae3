//! The secured stack (issue 16), on a broker of the test's own started as `NOTIFY_SECURE=1
//! dev/stack.sh` starts it: TLS + SASL/SCRAM-SHA-512, the StandardAuthorizer, and the ACLs of
//! topics/acls.toml written by `notify acls apply`; the registry over TLS with credentials and
//! Cassandra with password authentication over TLS. One run, in order: the demo of `make dev`
//! delivers with every processor signed in as its own principal; outsiders and a processor
//! writing where it has no business are refused, and nothing of theirs reaches a topic; then
//! every log and the status topic are scanned for the run's secrets and the demo's contact
//! points.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

use notify_runtime::Config;
use notify_runtime::codec::AvroCodec;
use notify_tests::{eventually, patient, repo_root};

mod cql;
mod demo;
mod limits;
use demo::SecuredDemo;

const REQUESTS: &str = "notify.requests.v1";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secured_stack_least_privilege_and_nothing_leaks() {
    let mut demo = SecuredDemo::start().await;
    let mails_before = mail_files();
    demo.start_processors();
    demo.ok("svc-profiles", &["templates", "push", "dev/templates"]);
    demo.ok("svc-profiles", &["produce", "user", "dev/demo/users.jsonl"]);
    demo.ok(
        "svc-requests",
        &["produce", "request", "dev/demo/requests.jsonl"],
    );

    // The demo's outcome (dev/demo.sh): 5 provider calls, an e-mail each to ana and ben.
    let delivered = eventually(Duration::from_secs(90), async || {
        let n = demo.sandbox_messages().await.len();
        let mails = new_mails(&mails_before);
        (n >= 5 && mails.len() >= 2).then_some((n, mails))
    })
    .await;
    let exited = demo.exited();
    let Some((calls, mails)) = delivered else {
        let logs: Vec<String> = demo::PROCESSORS
            .iter()
            .map(|p| format!("--- {p}\n{}", tail(&demo.log_of(p))))
            .collect();
        panic!(
            "the secured demo did not deliver ({} provider calls, {} new e-mails; exited: {exited:?})\n{}",
            demo.sandbox_messages().await.len(),
            new_mails(&mails_before).len(),
            logs.join("\n")
        );
    };
    assert_eq!(calls, 5, "{:?}", demo.sandbox_messages().await);
    assert!(
        ["To: ana@example.com", "To: ben@example.com"]
            .iter()
            .all(|to| mails.iter().any(|m| m.lines().any(|l| l == *to))),
        "e-mails: {mails:?}"
    );
    assert!(exited.is_empty(), "processors exited: {exited:?}");
    // The demo's sessions signed in to the database over TLS; one without the password, with a
    // wrong one, or in plaintext is refused.
    let mut outsider = demo.config("admin").cql;
    let password = outsider.password.take();
    outsider.username = None;
    outsider.password = None;
    let anonymous = notify_runtime::cql::connect(&outsider).await;
    assert!(anonymous.is_err(), "a CQL session without credentials");
    outsider.username = Some("cassandra".into());
    outsider.password = Some("not-the-password".into());
    let wrong = notify_runtime::cql::connect(&outsider).await;
    assert!(wrong.is_err(), "a CQL session with a wrong password");
    outsider.password = password;
    outsider.tls = false;
    outsider.ca_file = None;
    let plaintext = notify_runtime::cql::connect(&outsider).await;
    assert!(
        plaintext.is_err(),
        "a plaintext CQL session to the TLS-only node"
    );
    // Every registry request came over TLS with the credentials; a wrong password is refused.
    let (authorized, unauthorized) = demo.registry.requests_by_authorization();
    assert!(authorized > 0, "no registry request reached the TLS front");
    assert_eq!(unauthorized, 0, "registry requests without the credentials");
    let refused = demo
        .command("notify-setup", &["schemas", "register"])
        .env("NOTIFY_REGISTRY__PASSWORD", "not-the-password")
        .output()
        .expect("notify runs");
    assert!(
        !refused.status.success(),
        "schemas register with a wrong registry password succeeded"
    );
    assert!(
        demo.registry.requests_by_authorization().1 >= 1,
        "the refused request was not counted"
    );

    eprintln!("[secure] delivered; refusals");
    refusals(&demo).await;

    eprintln!("[secure] refusals done; status");
    // `notify status` reads the secured cluster like every other client.
    let status = demo.ok("admin", &["status", "--json"]);
    let status_text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status_text.contains("demo-invoice-ana-1"), "{status_text}");

    eprintln!("[secure] scanning");
    let logs = demo.stop();
    let mut haystacks: BTreeMap<String, String> = logs;
    haystacks.insert("notify status output".into(), status_text);
    let raw_status = read_topics(&demo.config("admin"), |t| t == "notify.status.v1");
    assert!(raw_status.len() >= 5, "status events: {}", raw_status.len());
    haystacks.insert(
        "notify.status.v1".into(),
        raw_status
            .iter()
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let secrets = demo.secrets();
    assert!(secrets.len() >= 20, "the run's secrets: {}", secrets.len());
    let mut needles: Vec<(String, &str)> = secrets.into_iter().map(|s| (s, "secret")).collect();
    needles.extend(contact_points().into_iter().map(|s| (s, "contact point")));
    let mut found = Vec::new();
    for (name, text) in &haystacks {
        for (needle, what) in &needles {
            if text.contains(needle.as_str()) {
                found.push(format!("{what} {needle:?} in {name}"));
            }
        }
    }
    assert!(found.is_empty(), "leaked:\n  {}", found.join("\n  "));
}

/// Outsiders, a profile producer and a delivery processor try to write where they may not;
/// each is refused, and no record of theirs is on any topic of the cluster.
async fn refusals(demo: &SecuredDemo) {
    let base = demo.config("admin");
    let codec = AvroCodec::new(&base.registry).expect("codec");
    let mut attempts = Vec::new();
    let mut props = |name: &str, pairs: Vec<(String, String)>, topic: &'static str| {
        let mut c = base.clone();
        c.kafka.properties = pairs.into_iter().collect();
        attempts.push((name.to_string(), c, topic));
    };
    let plain = vec![("security.protocol".to_string(), "PLAINTEXT".to_string())];
    props("no TLS, no SASL", plain, REQUESTS);
    let tls_only = vec![
        ("security.protocol".to_string(), "SSL".to_string()),
        (
            "ssl.ca.location".to_string(),
            demo.kafka.ca_file().display().to_string(),
        ),
    ];
    props("TLS without SASL", tls_only, REQUESTS);
    let mut wrong = demo.kafka.client_properties("svc-requests");
    wrong.retain(|(k, _)| k != "sasl.password");
    wrong.push(("sasl.password".into(), "not-the-password".into()));
    props("svc-requests, wrong password", wrong, REQUESTS);
    for (user, topic) in [
        ("svc-intruder", REQUESTS),
        ("svc-profiles", REQUESTS),
        ("notify-deliver-email", REQUESTS),
        ("notify-deliver-email", "notify.channel.sms.v1"),
    ] {
        props(user, demo.kafka.client_properties(user), topic);
    }
    let mut tries = Vec::new();
    for (i, (name, config, topic)) in attempts.into_iter().enumerate() {
        let mut r = crate::foundation::request(&format!("intruder-{i}"), "ana");
        r.template_id = "invoice_due".into();
        let bytes = codec.encode(REQUESTS, &r).await.expect("encode");
        tries.push(async move {
            let result = try_produce(&config, topic, &bytes).await;
            (name, topic, result)
        });
    }
    let results = futures::future::join_all(tries).await;
    eprintln!("[secure] refused attempts answered");
    for (name, topic, result) in results {
        assert!(result.is_err(), "{name} could write {topic}");
        let e = result.unwrap_err();
        if !name.contains("TLS") && !name.contains("password") {
            assert!(
                e.to_lowercase().contains("authoriz"),
                "{name} on {topic}: {e}"
            );
        }
    }
    // Whatever was refused could still have been half-written: nothing of it on any topic.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let everything = read_topics(&base, |t| t.starts_with("notify."));
    assert!(!everything.is_empty());
    let intruding = everything
        .iter()
        .filter(|(_, v)| String::from_utf8_lossy(v).contains("intruder-"))
        .count();
    assert_eq!(intruding, 0, "records of refused producers on the cluster");
}

async fn try_produce(config: &Config, topic: &str, payload: &[u8]) -> Result<(), String> {
    let mut c = notify_runtime::kafka::producer_config(config);
    c.set("message.timeout.ms", "8000");
    let producer: FutureProducer = c.create().map_err(|e| e.to_string())?;
    let record = FutureRecord::to(topic).key("ana").payload(payload);
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map(|_| ())
        .map_err(|(e, _)| e.to_string())
}

/// Every record (topic, value) of the topics `wanted` picks, read from the start to the end.
fn read_topics(config: &Config, wanted: impl Fn(&str) -> bool) -> Vec<(String, Vec<u8>)> {
    let consumer: BaseConsumer = notify_runtime::kafka::reader_config(config, "t-secure-scan")
        .create()
        .expect("reader");
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for t in md.topics().iter().filter(|t| wanted(t.name())) {
        for p in t.partitions() {
            tpl.add_partition_offset(t.name(), p.id(), Offset::Beginning)
                .expect("partition");
        }
    }
    let mut open = tpl.count();
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + patient(Duration::from_secs(30));
    while open > 0 && std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => out.push((
                m.topic().to_string(),
                m.payload().unwrap_or_default().to_vec(),
            )),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => open -= 1,
            _ => {}
        }
    }
    assert_eq!(open, 0, "topics not read to their end");
    out
}

/// Device tokens, phone numbers and e-mail addresses of the demo's users.
fn contact_points() -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join("dev/demo/users.jsonl")).expect("users");
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let u: serde_json::Value = serde_json::from_str(line).expect("user line");
        for key in ["email", "phone"] {
            if let Some(s) = u[key].as_str() {
                out.push(s.to_string());
            }
        }
        for d in u["devices"].as_array().into_iter().flatten() {
            if let Some(t) = d["token"].as_str() {
                out.push(t.to_string());
            }
        }
    }
    assert!(out.len() >= 6, "{out:?}");
    out
}

fn mail_files() -> Vec<String> {
    std::fs::read_dir(crate::delivery::maildir())
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn new_mails(before: &[String]) -> Vec<String> {
    let dir = crate::delivery::maildir();
    mail_files()
        .into_iter()
        .filter(|f| !before.contains(f))
        .filter_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .collect()
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
