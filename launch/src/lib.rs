//! Starting `spillway host` processes on this machine: the one launcher
//! that `spillway up` (and the demo and benchmarks it serves), the chaos
//! harness and the integration tests share.
//!
//! ```text
//!  HostLaunch (program, dir, addresses, role, flags) ──start──▶ HostProcess
//!      stdout: "admin token …" (founding only), "listening on http://…" ──▶ endpoint
//!      stderr ──▶ DIR/host.log (0600)      stdin held open: closing it stops the host
//! ```
//!
//! A host is started with `--stop-on-stdin-close`: dropping its
//! [`HostProcess`] without [`HostProcess::stop`] kills it, and a launcher
//! that dies closes the pipe, so no host outlives whoever started it.
//! A join ticket travels in the environment, never in argv (which every
//! user of the machine can read).
//!
//! Blocking by design (std processes, one reader thread per host), so the
//! synchronous test harness uses it as it is; async callers run
//! [`HostLaunch::start`] and [`HostProcess::stop`] on a blocking thread.
//!
//! What it is not: a supervisor (nothing is restarted) or a cluster
//! former: forming one (tickets, waiting for members) takes the HTTP API,
//! which each caller speaks in its own way.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The line a founding host prints its admin token on, once.
const TOKEN_LINE: &str = "admin token (shown once, store it now): ";
/// The line a host prints once it serves HTTP.
const LISTENING_LINE: &str = "listening on ";
/// The environment variable a join ticket travels in.
const TICKET_ENV: &str = "SPILLWAY_JOIN_TICKET";

/// What a host does about its cluster at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Found a new cluster (`--init`; on a directory that already belongs
    /// to one, rejoin it).
    Found,
    /// Join with this ticket.
    Join(String),
    /// Rejoin the cluster its directory belongs to.
    Rejoin,
}

/// Why a host did not start.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The directory or its log could not be made: check the path and its
    /// permissions.
    #[error("preparing {path}: {source}")]
    Prepare {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The program could not be run: check the path to `spillway`.
    #[error("running {program}: {source}")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    /// It exited before serving: its log says why.
    #[error("the host exited before serving; see {}", log.display())]
    Exited { log: PathBuf },
    /// It did not serve in time (and was killed): its log may say why.
    #[error("the host was not serving after {after:?}; see {}", log.display())]
    Timeout { after: Duration, log: PathBuf },
}

/// How to start one host.
#[derive(Debug, Clone)]
pub struct HostLaunch {
    program: PathBuf,
    dir: PathBuf,
    listen: String,
    peer_listen: String,
    role: Role,
    flags: Vec<OsString>,
    wrapper: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
}

impl HostLaunch {
    /// `program host --dir DIR`, listening on loopback ports the system
    /// picks, rejoining the cluster `dir` belongs to.
    pub fn new(program: impl Into<PathBuf>, dir: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            dir: dir.into(),
            listen: "127.0.0.1:0".into(),
            peer_listen: "127.0.0.1:0".into(),
            role: Role::Rejoin,
            flags: Vec::new(),
            wrapper: Vec::new(),
            env: Vec::new(),
        }
    }

    /// The HTTP address (`--listen`).
    #[must_use]
    pub fn listen(mut self, addr: impl ToString) -> Self {
        self.listen = addr.to_string();
        self
    }

    /// The QUIC peer address (`--peer-listen`).
    #[must_use]
    pub fn peer_listen(mut self, addr: impl ToString) -> Self {
        self.peer_listen = addr.to_string();
        self
    }

    #[must_use]
    pub fn role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    /// More `spillway host` flags, after the launcher's own.
    #[must_use]
    pub fn flags<I, S>(mut self, flags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.flags.extend(flags.into_iter().map(Into::into));
        self
    }

    /// Runs the program through `wrapper` (`ip netns exec NAME`, say).
    #[must_use]
    pub fn wrapped_in<I, S>(mut self, wrapper: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.wrapper = wrapper.into_iter().map(Into::into).collect();
        self
    }

    #[must_use]
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The command line, wrapper first (the ticket is not on it).
    fn command(&self) -> Command {
        let mut command = match self.wrapper.split_first() {
            Some((wrapper, args)) => {
                let mut command = Command::new(wrapper);
                command.args(args).arg(&self.program);
                command
            }
            None => Command::new(&self.program),
        };
        command
            .arg("host")
            .args(["--listen", &self.listen, "--peer-listen", &self.peer_listen])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--stop-on-stdin-close");
        command.env_remove(TICKET_ENV);
        match &self.role {
            Role::Found => {
                command.arg("--init");
            }
            Role::Join(ticket) => {
                command.env(TICKET_ENV, ticket);
            }
            Role::Rejoin => {}
        }
        command.args(&self.flags);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command
    }

    /// Starts the host and waits, at most `timeout`, until it serves HTTP.
    /// Its stderr is appended to `DIR/host.log`.
    pub fn start(self, timeout: Duration) -> Result<HostProcess, LaunchError> {
        let prepare = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LaunchError::Prepare { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(prepare(&self.dir))?;
        let log = self.dir.join("host.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log)
            .map_err(prepare(&log))?;
        let mut child = self
            .command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|source| LaunchError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let mut process = HostProcess {
            child,
            stdin,
            endpoint: String::new(),
            admin_token: None,
            log,
        };
        let (lines, heard) = mpsc::channel();
        // Reads every line for as long as the host runs, so it never
        // blocks on a full pipe; the first ones come back here.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Nobody listens once the host serves: keep draining.
                let _ = lines.send(line);
            }
        });
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match heard.recv_timeout(left) {
                Ok(line) => {
                    if let Some(token) = line.strip_prefix(TOKEN_LINE) {
                        process.admin_token = Some(token.trim().to_owned());
                    } else if let Some(endpoint) = line.strip_prefix(LISTENING_LINE) {
                        process.endpoint = endpoint.trim().to_owned();
                        return Ok(process);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let log = process.log.clone();
                    drop(process);
                    return Err(LaunchError::Exited { log });
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let log = process.log.clone();
                    drop(process);
                    return Err(LaunchError::Timeout {
                        after: timeout,
                        log,
                    });
                }
            }
        }
    }
}

/// A running `spillway host`; killed when dropped.
#[derive(Debug)]
pub struct HostProcess {
    child: Child,
    /// Held open: the host stops when it closes.
    stdin: Option<ChildStdin>,
    endpoint: String,
    admin_token: Option<String>,
    log: PathBuf,
}

impl HostProcess {
    /// Its HTTP endpoint, `http://ADDR:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The admin token, when this start founded the cluster and printed it.
    pub fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    /// Where its stderr goes.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The process id of `spillway host` (or of its wrapper).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL now (its node notices the closed socket and exits), and
    /// reaped.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops it gracefully: closes its stdin, waits up to `grace` for it
    /// to exit, then kills it.
    pub fn stop(mut self, grace: Duration) {
        self.close_stdin();
        if self.wait_exit(grace).is_none() {
            self.kill();
        }
    }

    /// Closes its stdin: the host shuts down gracefully.
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// Its exit status, once it exits within `within` (`None`: still
    /// running).
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(launch: &HostLaunch) -> Vec<String> {
        let command = launch.command();
        std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn env_of(launch: &HostLaunch, key: &str) -> Option<Option<String>> {
        launch
            .command()
            .get_envs()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
    }

    #[test]
    fn a_ticket_travels_in_the_environment_never_in_argv() {
        let launch = HostLaunch::new("/bin/spillway", "/d").role(Role::Join("sw1.secret".into()));
        assert!(!argv(&launch).iter().any(|a| a.contains("secret")));
        assert_eq!(env_of(&launch, TICKET_ENV), Some(Some("sw1.secret".into())));
        // Any other role clears a ticket the launcher's own environment has.
        for role in [Role::Found, Role::Rejoin] {
            let launch = HostLaunch::new("/bin/spillway", "/d").role(role);
            assert_eq!(env_of(&launch, TICKET_ENV), Some(None));
        }
    }

    #[test]
    fn the_command_line_has_the_wrapper_first_and_the_callers_flags_last() {
        let launch = HostLaunch::new("/bin/spillway", "/d")
            .listen("10.0.0.2:8080")
            .role(Role::Found)
            .flags(["--slots", "2"])
            .wrapped_in(["ip", "netns", "exec", "h1"]);
        assert_eq!(
            argv(&launch),
            [
                "ip",
                "netns",
                "exec",
                "h1",
                "/bin/spillway",
                "host",
                "--listen",
                "10.0.0.2:8080",
                "--peer-listen",
                "127.0.0.1:0",
                "--dir",
                "/d",
                "--stop-on-stdin-close",
                "--init",
                "--slots",
                "2"
            ]
        );
    }

    #[test]
    fn a_program_that_exits_before_serving_is_reported_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        match HostLaunch::new("/bin/false", dir.path()).start(Duration::from_secs(10)) {
            Err(LaunchError::Exited { log }) => assert_eq!(log, dir.path().join("host.log")),
            other => panic!("{other:?}"),
        }
        let missing = HostLaunch::new(dir.path().join("no-such-program"), dir.path())
            .start(Duration::from_secs(10));
        assert!(
            matches!(missing, Err(LaunchError::Spawn { .. })),
            "{missing:?}"
        );
    }

    #[test]
    fn a_program_that_never_serves_times_out_and_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        // `sleep host …` is not a host: it prints nothing and would sleep on.
        let script = dir.path().join("silent");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let started = Instant::now();
        let outcome = HostLaunch::new(&script, dir.path()).start(Duration::from_millis(300));
        assert!(
            matches!(outcome, Err(LaunchError::Timeout { .. })),
            "{outcome:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "it was killed, not waited for"
        );
    }

    #[test]
    fn a_host_that_prints_its_token_and_address_is_running() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake-host");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho '{TOKEN_LINE}swa_secret'\necho '{LISTENING_LINE}http://127.0.0.1:9'\nexec cat >/dev/null\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut host = HostLaunch::new(&script, dir.path().join("h1"))
            .role(Role::Found)
            .start(Duration::from_secs(10))
            .unwrap();
        assert_eq!(host.endpoint(), "http://127.0.0.1:9");
        assert_eq!(host.admin_token(), Some("swa_secret"));
        assert!(host.running());
        // Closing stdin is the graceful stop (`cat` ends at end of input).
        host.stop(Duration::from_secs(10));
    }
}
