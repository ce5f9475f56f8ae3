//! Processors as the chart runs them: each `notify run <name>` its own process, on one config
//! file, so a scenario can SIGKILL, SIGSTOP and restart them, add and remove instances, and
//! read their peak memory (`VmHWM`) before they go.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::notify_bin;

/// One running (or stopped) instance.
pub struct Instance {
    pub processor: String,
    pub id: String,
    pub port: u16,
    /// Environment of this instance only (a fault point), kept for its restarts.
    extra: Vec<(String, String)>,
    child: Option<Child>,
}

impl Instance {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
        }
    }

    /// The process's peak resident set so far, in KiB (`VmHWM` of /proc).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Whether the process is still there (not exited, not reaped).
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

/// The processes of one scenario; peak memory is kept per processor across restarts.
pub struct Fleet {
    config_file: PathBuf,
    /// Extra environment for every process (NOTIFY_FAULT, log level, ...).
    pub env: Vec<(String, String)>,
    pub instances: Vec<Instance>,
    peaks: BTreeMap<String, u64>,
    /// Instances that exited by themselves, per processor (restarted by [`Fleet::supervise`]).
    pub exits: BTreeMap<String, usize>,
    next: usize,
    log_dir: PathBuf,
}

impl Fleet {
    pub fn new(config_file: &Path, log_dir: &Path) -> Fleet {
        std::fs::create_dir_all(log_dir).expect("log dir");
        Fleet {
            config_file: config_file.to_path_buf(),
            env: vec![("NOTIFY_LOG".into(), "info".into())],
            instances: Vec::new(),
            peaks: BTreeMap::new(),
            exits: BTreeMap::new(),
            next: 0,
            log_dir: log_dir.to_path_buf(),
        }
    }

    /// Starts one more instance of `processor` (its own instance id, metrics port and log).
    pub fn spawn(&mut self, processor: &str, extra_env: &[(&str, &str)]) -> usize {
        self.next += 1;
        let id = format!("{processor}-{}", self.next);
        let port = notify_runtime::http::unused_loopback_port().expect("port");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_dir.join(format!("{id}.log")))
            .expect("log file");
        let mut cmd = Command::new(notify_bin());
        cmd.args(["run", processor, "--config"])
            .arg(&self.config_file)
            .env("NOTIFY_HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .env("NOTIFY_KAFKA__INSTANCE_ID", &id)
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("notify starts");
        self.instances.push(Instance {
            processor: processor.into(),
            id,
            port,
            extra: extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: Some(child),
        });
        self.instances.len() - 1
    }

    /// Records every live instance's peak memory under its processor's name.
    pub fn sample(&mut self) {
        for i in &self.instances {
            if let Some(kib) = i.peak_rss_kib() {
                let peak = self.peaks.entry(i.processor.clone()).or_default();
                *peak = (*peak).max(kib);
            }
        }
    }

    pub fn peaks(&self) -> BTreeMap<String, u64> {
        self.peaks.clone()
    }

    /// SIGKILL of instance `i`; returns its processor's name (to start another).
    pub fn kill(&mut self, i: usize) -> String {
        self.sample();
        let inst = &mut self.instances[i];
        inst.signal("-KILL");
        if let Some(mut c) = inst.child.take() {
            let _ = c.wait();
        }
        inst.processor.clone()
    }

    pub fn pause(&self, i: usize) {
        self.instances[i].signal("-STOP");
    }

    pub fn resume(&self, i: usize) {
        self.instances[i].signal("-CONT");
    }

    /// SIGTERM and wait: a clean stop (rolling restart, scale-in).
    pub fn stop(&mut self, i: usize) {
        self.sample();
        let inst = &mut self.instances[i];
        inst.signal("-TERM");
        if let Some(mut c) = inst.child.take() {
            let _ = c.wait();
        }
    }

    /// Live instances of `processor`, by index.
    pub fn of(&mut self, processor: &str) -> Vec<usize> {
        (0..self.instances.len())
            .filter(|i| self.instances[*i].processor == processor && self.instances[*i].alive())
            .collect()
    }

    /// Instances that exited by themselves (crashed, or stopped on an error they leave to a
    /// restart) since the last call, named; restarts them as Kubernetes would.
    pub fn supervise(&mut self) -> Vec<String> {
        let mut exited = Vec::new();
        for i in 0..self.instances.len() {
            let inst = &mut self.instances[i];
            if inst.child.is_some() && !inst.alive() {
                inst.child = None;
                exited.push((inst.processor.clone(), inst.extra.clone()));
            }
        }
        for (p, extra) in &exited {
            *self.exits.entry(p.clone()).or_default() += 1;
            let extra: Vec<(&str, &str)> = extra
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            self.spawn(p, &extra);
        }
        exited.into_iter().map(|(p, _)| p).collect()
    }

    /// The tail of an instance's log (for an assertion's message).
    pub fn log_tail(&self, i: usize) -> String {
        let text =
            std::fs::read_to_string(self.log_dir.join(format!("{}.log", self.instances[i].id)))
                .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for i in &mut self.instances {
            if let Some(mut c) = i.child.take() {
                let _ = Command::new("kill")
                    .args(["-CONT", &c.id().to_string()])
                    .status();
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
