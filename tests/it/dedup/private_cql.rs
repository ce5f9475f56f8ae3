//! A Cassandra of the test's own (dev/stack.sh on free ports in a temporary directory), so a
//! test can take the database away without touching the shared one on 19042.

use std::path::PathBuf;
use std::process::Command;

use notify_tests::repo_root;

pub struct PrivateCassandra {
    dir: PathBuf,
    pub port: u16,
    storage_port: u16,
    pid: String,
    /// Started as `NOTIFY_SECURE=1 dev/stack.sh` starts it: `PasswordAuthenticator`.
    secure: bool,
}

/// Not a port from binding port 0: Cassandra binds it 20-40 s later, and in between any
/// outgoing connection may take an ephemeral port as its own.
fn free_port() -> u16 {
    notify_runtime::http::unused_loopback_port().expect("a free port")
}

impl PrivateCassandra {
    /// Starts it and waits until CQL answers on its port (blocking: 20–40 s).
    pub fn start(name: &str) -> PrivateCassandra {
        Self::start_as(name, false)
    }

    /// As [`start`](Self::start), as the secured stack runs it: password authentication (the
    /// superuser `cassandra`, its password in [`password_file`](Self::password_file)) and TLS
    /// only (its CA in [`ca_file`](Self::ca_file)).
    pub fn start_secure(name: &str) -> PrivateCassandra {
        Self::start_as(name, true)
    }

    /// The CA of its certificate (secured: TLS only).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("kafka/tls/ca.crt")
    }

    /// The superuser's password (secured).
    pub fn password_file(&self) -> PathBuf {
        self.dir.join("cassandra/password")
    }

    fn start_as(name: &str, secure: bool) -> PrivateCassandra {
        let dir = std::env::temp_dir().join(format!(
            "notify-cql-{name}-{}",
            rand::random::<u32>() % 1_000_000
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut cql = PrivateCassandra {
            dir,
            port: free_port(),
            storage_port: free_port(),
            pid: String::new(),
            secure,
        };
        let status = cql.stack("up").expect("dev/stack.sh runs");
        assert!(
            status,
            "private Cassandra did not start (see {:?})",
            cql.dir
        );
        cql.pid = std::fs::read_to_string(cql.dir.join("cassandra.pid"))
            .expect("pid file")
            .trim()
            .to_string();
        cql
    }

    fn stack(&self, verb: &str) -> std::io::Result<bool> {
        let mut c = Command::new(repo_root().join("dev/stack.sh"));
        c.arg(verb);
        if verb == "up" {
            c.arg("cassandra");
        }
        if self.secure {
            c.env("NOTIFY_SECURE", "1");
        }
        c.env("NOTIFY_RUN_DIR", &self.dir)
            .env("NOTIFY_CQL_PORT", self.port.to_string())
            .env("NOTIFY_CQL_STORAGE_PORT", self.storage_port.to_string())
            .status()
            .map(|s| s.success())
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill {sig} {} failed", self.pid);
    }

    /// Freezes the database: connections stay open, nothing answers (a hung node).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }
}

impl Drop for PrivateCassandra {
    fn drop(&mut self) {
        if !self.pid.is_empty() {
            let _ = Command::new("kill").args(["-CONT", &self.pid]).status();
        }
        let _ = self.stack("down");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
