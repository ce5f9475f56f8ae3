//! `make dev`'s demo on a secured broker of the test's own: the `notify` binary for every step
//! and processor, each signing in as its own principal of topics/acls.toml, the password
//! from the environment. The schema registry is reached over TLS (the platform's private CA)
//! with basic credentials, through a front that refuses requests without them; the database is
//! a Cassandra of the test's own with `PasswordAuthenticator` and TLS only, signed in to with
//! the password from a file, its certificate checked against the platform's CA. Processor logs
//! are kept for the scan.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use notify_runtime::Config;
use notify_tests::private_kafka::PrivateKafka;
use notify_tests::registry_proxy::RegistryProxy;
use notify_tests::{notify_bin, repo_root};

use crate::dedup::private_cql::PrivateCassandra;

/// The processors of the default deployment and the principal each runs as.
pub const PROCESSORS: [&str; 6] = [
    "chain",
    "deliver-apns",
    "deliver-fcm",
    "deliver-sms",
    "deliver-email",
    "retry",
];

/// The registry user every process signs in as (its password from the environment).
const REGISTRY_USER: &str = "notify-registry";

pub struct SecuredDemo {
    pub kafka: PrivateKafka,
    /// The TLS front of the shared registry, requiring `REGISTRY_USER`.
    pub registry: RegistryProxy,
    registry_password: String,
    /// Cassandra with password authentication (superuser `cassandra`), stopped when the demo
    /// is dropped.
    _cassandra: PrivateCassandra,
    pub dir: PathBuf,
    config_file: PathBuf,
    pub sandbox: String,
    sandbox_child: Child,
    children: Vec<(String, Child)>,
}

impl SecuredDemo {
    /// Broker, ACLs (as admin), topics (as the setup principal), schemas, keyspace, sandbox.
    pub async fn start() -> SecuredDemo {
        let kafka = PrivateKafka::start_secure("secure");
        let cql = PrivateCassandra::start_secure("secure");
        wait_for_cql_sign_in(&cql).await;
        let dir = std::env::temp_dir().join(format!(
            "notify-secure-{}",
            rand::random::<u32>() % 1_000_000
        ));
        std::fs::create_dir_all(dir.join("logs")).expect("temp dir");
        let sandbox_port = notify_runtime::http::unused_loopback_port().expect("port");
        let registry_password = format!("{:032x}", rand::random::<u128>());
        let upstream = format!(
            "http://127.0.0.1:{}/apis/ccompat/v7",
            std::env::var("NOTIFY_REGISTRY_PORT").unwrap_or_else(|_| "18081".into())
        );
        let registry = RegistryProxy::start_secured(
            &upstream,
            &kafka.tls_identity(),
            REGISTRY_USER,
            &registry_password,
        )
        .await;
        let config_file = dir.join("notify.toml");
        std::fs::write(
            &config_file,
            config_text(&kafka, &registry, &cql, &dir, sandbox_port),
        )
        .expect("config");
        let demo = SecuredDemo {
            kafka,
            registry,
            registry_password,
            _cassandra: cql,
            sandbox: format!("http://127.0.0.1:{sandbox_port}"),
            sandbox_child: Command::new(notify_bin())
                .args(["sandbox", "--listen", &format!("127.0.0.1:{sandbox_port}")])
                .arg("--creds-dir")
                .arg(dir.join("creds"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("sandbox starts"),
            dir,
            config_file,
            children: Vec::new(),
        };
        demo.ok("admin", &["acls", "apply"]);
        demo.ok(
            "notify-setup",
            &["topics", "apply", "--replication-factor", "1"],
        );
        demo.ok("notify-setup", &["schemas", "register"]);
        demo.ok("notify-setup", &["db", "migrate"]);
        demo.wait_for_sandbox().await;
        demo
    }

    /// This demo's configuration as a process sees it (tests read topics with it).
    pub fn config(&self, user: &str) -> Config {
        let env = self.env(user);
        Config::load_with_env(Some(&self.config_file), env).expect("demo config loads")
    }

    /// `notify` with this demo's configuration, signed in as `user`.
    pub fn command(&self, user: &str, args: &[&str]) -> Command {
        let mut c = Command::new(notify_bin());
        c.args(args)
            .current_dir(repo_root())
            .env("NOTIFY_CONFIG", &self.config_file)
            .envs(self.env(user));
        c
    }

    fn env(&self, user: &str) -> Vec<(String, String)> {
        vec![
            (
                "NOTIFY_KAFKA__PROPERTIES__SASL_USERNAME".into(),
                user.to_string(),
            ),
            (
                "NOTIFY_KAFKA__PROPERTIES__SASL_PASSWORD".into(),
                self.kafka.password(user),
            ),
            (
                "NOTIFY_REGISTRY__PASSWORD".into(),
                self.registry_password.clone(),
            ),
        ]
    }

    /// Runs a `notify` tool as `user`; panics with its output unless it succeeds.
    pub fn ok(&self, user: &str, args: &[&str]) -> Output {
        eprintln!("[secure] notify {} as {user}", args.join(" "));
        // A tool that cannot deliver says so within the test's time, not after 5 minutes.
        let out = self
            .command(user, args)
            .env("NOTIFY_KAFKA__PRODUCER__message.timeout.ms", "30000")
            .output()
            .expect("notify runs");
        assert!(
            out.status.success(),
            "notify {args:?} as {user} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.keep_log(&format!("tool-{}", args.join("-").replace('/', "_")), &out);
        out
    }

    fn keep_log(&self, name: &str, out: &Output) {
        let mut text = out.stdout.clone();
        text.extend_from_slice(&out.stderr);
        let _ = std::fs::write(self.dir.join("logs").join(format!("{name}.log")), text);
    }

    /// Starts every processor of the default deployment as its own principal.
    pub fn start_processors(&mut self) {
        for p in PROCESSORS {
            let log = std::fs::File::create(self.dir.join("logs").join(format!("{p}.log")))
                .expect("log file");
            let child = self
                .command(&format!("notify-{p}"), &["run", p])
                .env("NOTIFY_HTTP__LISTEN", "127.0.0.1:0")
                .stdout(log.try_clone().expect("log file"))
                .stderr(log)
                .spawn()
                .expect("processor starts");
            self.children.push((p.to_string(), child));
        }
    }

    /// Whether every processor still runs (one refused by an ACL exits).
    pub fn exited(&mut self) -> Vec<String> {
        self.children
            .iter_mut()
            .filter_map(|(p, c)| (!matches!(c.try_wait(), Ok(None))).then(|| p.clone()))
            .collect()
    }

    pub fn log_of(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join("logs").join(format!("{name}.log")))
            .unwrap_or_default()
    }

    /// SIGTERM to every processor (they drain and commit), then every log by name.
    pub fn stop(&mut self) -> BTreeMap<String, String> {
        for (_, child) in &self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for (_, child) in &mut self.children {
            let _ = child.wait();
        }
        self.children.clear();
        std::fs::read_dir(self.dir.join("logs"))
            .map(|d| {
                d.flatten()
                    .map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        (name, std::fs::read_to_string(e.path()).unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Messages the provider sandbox has received.
    pub async fn sandbox_messages(&self) -> Vec<serde_json::Value> {
        let url = format!("{}/sandbox/messages", self.sandbox);
        match reqwest::get(&url).await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    async fn wait_for_sandbox(&self) {
        let url = format!("{}/sandbox/messages", self.sandbox);
        for _ in 0..100 {
            if reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("the provider sandbox did not start");
    }

    /// Every secret this run was made with: Kafka passwords and provider credentials.
    pub fn secrets(&self) -> Vec<String> {
        let mut out = self.kafka.secrets();
        out.push(self.registry_password.clone());
        let long_runs = regex_lite::Regex::new(r"[A-Za-z0-9+/=_-]{16,}").expect("regex");
        for file in std::fs::read_dir(self.dir.join("creds"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(text) = std::fs::read_to_string(file.path()) {
                out.extend(long_runs.find_iter(&text).map(|m| m.as_str().to_string()));
            }
        }
        out.retain(|s| s.len() >= 16);
        out.sort();
        out.dedup();
        out
    }
}

impl Drop for SecuredDemo {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.sandbox_child.kill();
        let _ = self.sandbox_child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// dev/notify.toml pointed at the secured broker, this run's sandbox and credentials and a
/// keyspace of its own, with the TLS and SASL properties every client shares. No secret in it:
/// the user and password come from the environment of each process.
fn config_text(
    kafka: &PrivateKafka,
    registry: &RegistryProxy,
    cql: &PrivateCassandra,
    dir: &Path,
    sandbox_port: u16,
) -> String {
    let base = std::fs::read_to_string(repo_root().join("dev/notify.toml")).expect("dev config");
    let keyspace = format!("t_secure_{}", rand::random::<u32>() % 1_000_000);
    let smtp = std::env::var("NOTIFY_SMTP_PORT").unwrap_or_else(|_| "12525".into());
    let text = base
        .replace("127.0.0.1:19092", &kafka.bootstrap())
        .replace("127.0.0.1:18443", &format!("127.0.0.1:{sandbox_port}"))
        .replace(
            "url = \"http://127.0.0.1:18081/apis/ccompat/v7\"",
            &format!(
                "url = \"{}\"\nusername = \"{REGISTRY_USER}\"\nca_file = \"{}\"",
                registry.url,
                kafka.ca_file().display()
            ),
        )
        .replace("127.0.0.1:19042", &format!("127.0.0.1:{}", cql.port))
        .replace("smtp_port = 12525", &format!("smtp_port = {smtp}"))
        .replace(".run/creds", &dir.join("creds").display().to_string())
        .replace(
            "keyspace = \"notify\"",
            &format!(
                "keyspace = \"{keyspace}\"\nusername = \"cassandra\"\npassword_file = \"{}\"\n\
                 tls = true\nca_file = \"{}\"",
                cql.password_file().display(),
                cql.ca_file().display()
            ),
        );
    format!(
        "{text}\n[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\
         \"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\"ssl.ca.location\" = \"{}\"\n",
        kafka.ca_file().display()
    )
}

/// The superuser of a fresh `PasswordAuthenticator` node exists a moment after CQL answers
/// (over TLS: the node takes no plaintext session).
async fn wait_for_cql_sign_in(cql: &PrivateCassandra) {
    let password = std::fs::read_to_string(cql.password_file()).expect("CQL password file");
    let config = notify_runtime::config::CqlConfig {
        nodes: vec![format!("127.0.0.1:{}", cql.port)],
        username: Some("cassandra".into()),
        password: Some(password.trim().to_string()),
        tls: true,
        ca_file: Some(cql.ca_file().display().to_string()),
        ..Default::default()
    };
    let signed_in = notify_tests::eventually(Duration::from_secs(90), async || {
        notify_runtime::cql::connect(&config).await.ok().map(|_| ())
    })
    .await;
    assert!(
        signed_in.is_some(),
        "could not sign in to the secured Cassandra"
    );
}
