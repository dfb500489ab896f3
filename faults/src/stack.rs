//! The system under test as real processes: SecantusDB (a MongoDB-compatible server), `sms-api`
//! and `sms-dispatcher` binaries built with the `fault-injection` feature, and the machine's
//! RabbitMQ, which scenarios may stop and start with `rabbitmqctl`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

pub const JWT_SECRET: &str = "fault-scenarios-secret";

/// Where the binaries are.
#[derive(Clone, Debug)]
pub struct Bins {
    pub api: PathBuf,
    pub dispatcher: PathBuf,
    pub mongo: PathBuf,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn wait_port(port: u16, secs: u64) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A SecantusDB server on a fixed port and data directory, restartable in place.
pub struct Mongo {
    bin: PathBuf,
    pub port: u16,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Mongo {
    pub async fn start(bin: PathBuf, dir: PathBuf) -> anyhow::Result<Self> {
        let mut m = Self {
            bin,
            port: free_port(),
            log: dir.with_extension("log"),
            dir,
            child: None,
        };
        m.restart().await?;
        Ok(m)
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.port)
    }

    /// Starts the server on the same port and data directory.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.bin)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--log-level",
                "WARNING",
            ])
            .arg("--storage-path")
            .arg(&self.dir)
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting SecantusDB")?;
        self.child = Some(child);
        if !wait_port(self.port, 30).await {
            bail!("SecantusDB did not start; see {}", self.log.display());
        }
        Ok(())
    }

    /// Stops the server (SIGKILL: the harshest stop a database can see).
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
            let _ = c.wait().await;
        }
    }
}

/// One scenario's processes: its own database name and AMQP prefix.
pub struct Stack {
    pub bins: Bins,
    /// The RabbitMQ every process of the scenario uses.
    pub amqp_url: String,
    pub mongo_uri: String,
    pub db_name: String,
    pub prefix: String,
    pub api_port: u16,
    pub env: HashMap<String, String>,
    logs: PathBuf,
    api: Option<Child>,
    /// More API processes, each on a port of its own.
    replicas: Vec<Child>,
    dispatchers: Vec<Child>,
}

impl Stack {
    pub fn new(
        bins: Bins,
        mongo_uri: String,
        amqp_url: String,
        logs: PathBuf,
        overrides: &[(&str, &str)],
    ) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let db_name = format!("sms_faults_{id}");
        let prefix = format!("faults-{id}");
        let mut env: HashMap<String, String> = [
            ("MONGO_URI", mongo_uri.as_str()),
            ("MONGO_DB", db_name.as_str()),
            ("AMQP_URL", amqp_url.as_str()),
            ("AMQP_PREFIX", prefix.as_str()),
            ("JWT_SECRET", JWT_SECRET),
            ("ALLOWED_HOSTS", "127.0.0.1,localhost"),
            ("AGENT_RATE_LIMIT_PER_MIN", "1000000"),
            ("APIKEY_RATE_LIMIT_PER_DAY_DEFAULT", "1000000"),
            ("OUTBOX_SWEEP_AFTER_MS", "1000"),
            ("SEED_ADMIN", "1"),
            ("SEED_ADMIN_PASSWORD", "fault-admin-password"),
            ("RUST_LOG", "warn"),
            ("DISPATCHER_METRICS_ADDR", "127.0.0.1:0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in overrides {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        std::fs::create_dir_all(&logs).ok();
        Self {
            bins,
            amqp_url,
            mongo_uri,
            db_name,
            prefix,
            api_port: free_port(),
            env,
            logs,
            api: None,
            replicas: Vec::new(),
            dispatchers: Vec::new(),
        }
    }

    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    fn spawn(&self, bin: &PathBuf, name: &str, extra: &[(&str, &str)]) -> anyhow::Result<Child> {
        let log_path = self.logs.join(format!("{}-{name}.log", self.prefix));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .envs(&self.env)
            .envs(extra.iter().copied())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        cmd.spawn()
            .with_context(|| format!("starting {}", bin.display()))
    }

    /// Starts the API (optionally with an `SMS_FAULT` crash point) and waits until it listens.
    pub async fn start_api(&mut self, fault: Option<&str>) -> anyhow::Result<()> {
        let child = self.spawn_api(self.api_port, "api", fault).await?;
        self.api = Some(child);
        Ok(())
    }

    /// Starts one more API process on a port of its own, with the same database and AMQP
    /// prefix as the first, and waits until it listens; returns its port.
    pub async fn start_api_replica(&mut self) -> anyhow::Result<u16> {
        let port = free_port();
        let name = format!("api-replica{}", self.replicas.len() + 1);
        let child = self.spawn_api(port, &name, None).await?;
        self.replicas.push(child);
        Ok(port)
    }

    async fn spawn_api(&self, port: u16, name: &str, fault: Option<&str>) -> anyhow::Result<Child> {
        let addr = format!("127.0.0.1:{port}");
        let mut extra = vec![("HTTP_ADDR", addr.as_str())];
        if let Some(f) = fault {
            extra.push(("SMS_FAULT", f));
        }
        let child = self.spawn(&self.bins.api.clone(), name, &extra)?;
        if !wait_port(port, 30).await {
            bail!("{name} did not start; see {}", self.logs.display());
        }
        Ok(child)
    }

    /// Waits for the API process to exit by itself (a crash point firing).
    pub async fn wait_api_exit(&mut self, secs: u64) -> anyhow::Result<()> {
        let Some(child) = self.api.as_mut() else {
            return Ok(());
        };
        match tokio::time::timeout(Duration::from_secs(secs), child.wait()).await {
            Ok(_) => {
                self.api = None;
                Ok(())
            }
            Err(_) => bail!("sms-api did not exit"),
        }
    }

    /// Kills the first API process (SIGKILL).
    pub async fn kill_api(&mut self) {
        if let Some(mut c) = self.api.take() {
            let _ = c.kill().await;
            let _ = c.wait().await;
        }
    }

    pub fn start_dispatcher(&mut self, fault: Option<&str>) -> anyhow::Result<()> {
        let extra: Vec<(&str, &str)> = fault.map(|f| vec![("SMS_FAULT", f)]).unwrap_or_default();
        let n = self.dispatchers.len();
        let child = self.spawn(
            &self.bins.dispatcher.clone(),
            &format!("dispatcher{n}"),
            &extra,
        )?;
        self.dispatchers.push(child);
        Ok(())
    }

    /// How many dispatcher processes have exited by themselves.
    pub fn exited_dispatchers(&mut self) -> usize {
        self.dispatchers
            .iter_mut()
            .map(|c| c.try_wait())
            .filter(|w| matches!(w, Ok(Some(_))))
            .count()
    }

    pub async fn stop_all(&mut self) {
        self.kill_api().await;
        for mut r in self.replicas.drain(..) {
            let _ = r.kill().await;
            let _ = r.wait().await;
        }
        for mut d in self.dispatchers.drain(..) {
            let _ = d.kill().await;
            let _ = d.wait().await;
        }
    }

    /// Drops the scenario's database, queues and exchanges.
    pub async fn cleanup(&mut self) {
        self.stop_all().await;
        let _ = sms_testkit::cleanup::drop_database(&self.mongo_uri, &self.db_name).await;
        let _ = sms_testkit::cleanup::remove_amqp(&self.amqp_url, &self.prefix).await;
    }
}

/// Runs `rabbitmqctl` with `args` (stop_app / start_app / await_startup).
pub async fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .await
        .context("running rabbitmqctl")?;
    if !out.status.success() {
        bail!(
            "rabbitmqctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
