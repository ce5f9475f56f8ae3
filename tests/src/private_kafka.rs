//! A Kafka broker of the test's own (dev/stack.sh on free ports in a temporary directory), so a
//! test can kill and restart the broker without touching the shared one on 19092. A secured
//! one ([`PrivateKafka::start_secure`]) is the stack's `NOTIFY_SECURE=1` broker: SASL_SSL with
//! SCRAM users and the StandardAuthorizer.

use std::path::PathBuf;
use std::process::Command;

use crate::repo_root;

pub struct PrivateKafka {
    dir: PathBuf,
    pub port: u16,
    controller_port: u16,
    secure: bool,
}

fn free_port() -> u16 {
    notify_runtime::http::unused_loopback_port().expect("a free port")
}

impl PrivateKafka {
    /// Starts a single KRaft broker and waits until it accepts connections (a few seconds).
    pub fn start(name: &str) -> PrivateKafka {
        Self::start_as(name, false)
    }

    /// A broker that lets in only SCRAM users over TLS, and them only as far as ACLs allow.
    pub fn start_secure(name: &str) -> PrivateKafka {
        Self::start_as(name, true)
    }

    fn start_as(name: &str, secure: bool) -> PrivateKafka {
        let dir = std::env::temp_dir().join(format!(
            "notify-kafka-{name}-{}",
            rand::random::<u32>() % 1_000_000
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let kafka = PrivateKafka {
            dir,
            port: free_port(),
            controller_port: free_port(),
            secure,
        };
        kafka.up();
        kafka
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker again on the same log directory (after [`kill`](Self::kill)).
    pub fn up(&self) {
        let ok = Command::new(repo_root().join("dev/stack.sh"))
            .args(["up", "kafka"])
            .env("NOTIFY_RUN_DIR", &self.dir)
            .env("NOTIFY_SECURE", if self.secure { "1" } else { "0" })
            .env("NOTIFY_KAFKA_PORT", self.port.to_string())
            .env(
                "NOTIFY_KAFKA_CONTROLLER_PORT",
                self.controller_port.to_string(),
            )
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "private Kafka did not start (see {:?})", self.dir);
    }

    /// The password of SCRAM user `user` (secured broker).
    pub fn password(&self, user: &str) -> String {
        let path = self.dir.join("kafka/users").join(user);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_string()
    }

    /// Every secret the secured broker was made with: user passwords, key store password.
    pub fn secrets(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.dir.join("kafka/users"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .map(|s| s.trim().to_string())
                    .collect()
            })
            .unwrap_or_default();
        if let Ok(s) = std::fs::read_to_string(self.dir.join("kafka/tls/keystore.password")) {
            out.push(s.trim().to_string());
        }
        out
    }

    /// The secured broker's certificate and key (names `localhost` and 127.0.0.1), for another
    /// TLS server of the same secured platform.
    pub fn tls_identity(&self) -> crate::registry_proxy::TlsIdentity {
        let tls = self.dir.join("kafka/tls");
        crate::registry_proxy::TlsIdentity {
            pkcs12: tls.join("broker.p12"),
            password: std::fs::read_to_string(tls.join("keystore.password"))
                .expect("key store password")
                .trim()
                .to_string(),
        }
    }

    /// The CA that signed the secured broker's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("kafka/tls/ca.crt")
    }

    /// librdkafka properties of a client signing in as `user` (secured broker).
    pub fn client_properties(&self, user: &str) -> Vec<(String, String)> {
        [
            ("security.protocol", "SASL_SSL".to_string()),
            ("sasl.mechanism", "SCRAM-SHA-512".to_string()),
            ("ssl.ca.location", self.ca_file().display().to_string()),
            ("sasl.username", user.to_string()),
            ("sasl.password", self.password(user)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn pid(&self) -> String {
        std::fs::read_to_string(self.dir.join("kafka.pid"))
            .expect("pid file")
            .trim()
            .to_string()
    }

    /// SIGKILL: no clean shutdown, no flush of what the broker had not written.
    pub fn kill(&self) {
        let pid = self.pid();
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        for _ in 0..100 {
            let alive = Command::new("kill")
                .args(["-0", &pid])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !alive {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = std::fs::remove_file(self.dir.join("kafka.pid"));
    }

    /// SIGTERM and wait: a clean restart's first half.
    pub fn stop(&self) {
        let _ = Command::new(repo_root().join("dev/stack.sh"))
            .arg("down")
            .env("NOTIFY_RUN_DIR", &self.dir)
            .status();
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
