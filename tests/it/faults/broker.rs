//! The broker killed with SIGKILL three times under load, then restarted cleanly once: a
//! processor run as the chart runs it (`notify run`, its own process) resumes by itself after
//! every restart and loses nothing (a rolling upgrade of Kafka must not stall the pipeline).

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use notify_tests::private_kafka::PrivateKafka;
use notify_tests::{TestEnv, notify_bin, patient};
use rdkafka::Message;

const RECORDS: usize = 6_000;

/// `notify run passthrough` from `input` to `output`, raw, on `env`'s broker and registry,
/// with its HTTP endpoints on `port`; output and log discarded.
pub(super) fn passthrough(
    env: &TestEnv,
    input: &str,
    output: &str,
    dlq: &str,
    port: u16,
) -> Command {
    let mut cmd = Command::new(notify_bin());
    cmd.args(["run", "passthrough"])
        .env(
            "NOTIFY_KAFKA__BOOTSTRAP_SERVERS",
            &env.config.kafka.bootstrap_servers,
        )
        .env("NOTIFY_KAFKA__GROUP_PREFIX", &env.config.kafka.group_prefix)
        .env("NOTIFY_REGISTRY__URL", &env.config.registry.url)
        .env("NOTIFY_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("NOTIFY_RUNTIME__DLQ_TOPIC", dlq)
        .env("NOTIFY_PROCESSORS__PASSTHROUGH__INPUT", input)
        .env("NOTIFY_PROCESSORS__PASSTHROUGH__OUTPUT", output)
        .env("NOTIFY_PROCESSORS__PASSTHROUGH__MODE", "raw")
        .env("NOTIFY_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

async fn healthz(port: u16) -> Option<u16> {
    reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_processor_resumes_after_the_broker_is_killed_three_times() {
    let kafka = PrivateKafka::start("broker_restarts");
    let env = TestEnv::on_broker("faults_broker", &kafka.bootstrap()).await;
    let [input, output, dlq] = env
        .create_topics(&[("in", 4), ("out", 4), ("dlq", 1)])
        .await
        .try_into()
        .expect("three topics");
    let port = notify_runtime::http::unused_loopback_port().expect("port");
    let log_path = std::env::temp_dir().join(format!("notify-{}-passthrough.log", env.id));
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut processor = passthrough(&env, &input, &output, &dlq, port)
        .stderr(Stdio::from(log))
        .spawn()
        .expect("notify starts");

    // A steady stream throughout; the producer waits out the outages (idempotent, retried).
    let producing = {
        let env = &env;
        let input = input.clone();
        async move {
            for i in 0..RECORDS {
                let id = format!("r-{i}");
                env.produce_bytes(
                    &input,
                    Some(&format!("k-{}", i % 50)),
                    Some(id.as_bytes()),
                    None,
                    &[],
                )
                .await;
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
        }
    };
    let faults = async {
        for round in 0..3 {
            tokio::time::sleep(Duration::from_secs(4)).await;
            kafka.kill();
            // Longer than the consumer's session timeout: the group rebalances on return.
            tokio::time::sleep(Duration::from_secs(12)).await;
            kafka.up();
            eprintln!("broker back after SIGKILL {}", round + 1);
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
        kafka.stop();
        kafka.up();
        eprintln!("broker back after a clean restart");
    };
    tokio::join!(producing, faults);

    // Everything produced arrives; the processor never exited and says it is alive.
    let reader = env.reader(&output);
    let mut seen = HashSet::new();
    let deadline = Instant::now() + patient(Duration::from_secs(120));
    while seen.len() < RECORDS && Instant::now() < deadline {
        for m in reader.raw(1000, Duration::from_secs(1)) {
            if let Some(p) = m.payload() {
                seen.insert(String::from_utf8_lossy(p).into_owned());
            }
        }
    }
    let exited = processor.try_wait().expect("wait");
    let health = healthz(port).await;
    let _ = processor.kill();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
    assert_eq!(
        exited, None,
        "the processor exited during the broker restarts; the end of its log:\n{tail}"
    );
    assert_eq!(
        seen.len(),
        RECORDS,
        "{} of {RECORDS} records came through after the broker restarts (the processor stopped consuming)",
        seen.len()
    );
    assert_eq!(health, Some(200), "healthz after recovery");
}

/// The whole default deployment on a private broker, under load, while the broker is
/// SIGKILLed three times and restarted cleanly once: every processor resumes by itself,
/// nothing is lost, nothing sent twice, no status event written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pipeline_survives_three_broker_kills_and_a_clean_restart() {
    use super::chaos::{Run, assert_clean, scaled};
    let kafka = PrivateKafka::start("pipeline_broker");
    let env = TestEnv::on_broker("chaos_broker", &kafka.bootstrap()).await;
    let stack = crate::delivery::Stack::in_env(env, crate::delivery::Mail::SendGrid).await;
    let run = Run::start_on(stack, 4, scaled(30), |_| {}).await;
    let requests = scaled(400);
    let start = notify_runtime::now_ms();
    let faults = async {
        for round in 0..3 {
            tokio::time::sleep(Duration::from_secs(4)).await;
            kafka.kill();
            tokio::time::sleep(Duration::from_secs(12)).await;
            kafka.up();
            eprintln!("broker back after SIGKILL {}", round + 1);
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
        kafka.stop();
        kafka.up();
        eprintln!("broker back after a clean restart");
    };
    let (produced, ()) = tokio::join!(run.load(0, requests, 8.0), faults);
    let window = Some((start, notify_runtime::now_ms()));
    let report = run.settle(produced, window, Duration::from_secs(300)).await;
    // A transactional processor whose commit times out while the broker is away exits and is
    // restarted (by Kubernetes; here by the harness): counted in the report, not a failure.
    assert_clean("broker kills", &report);
}
