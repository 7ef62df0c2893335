//! For tests that use the emulator: the one way to run the `azure-emulator` binary as a
//! child process (black-box tests), and the one way to report a test skipped for a missing
//! precondition. In-process tests use [`crate::Emulator::start`] directly.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the emulator may take to print `READY`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The `azure-emulator` binary running as a child process, killed on drop.
pub struct EmulatorProcess {
    child: Child,
    /// The `KEY=VALUE` lines it printed before `READY`, in order.
    pub env: Vec<(String, String)>,
    /// Every line it printed up to `READY` (included).
    pub lines: Vec<String>,
}

impl EmulatorProcess {
    /// Starts `bin` with `--listen 127.0.0.1:0` and `args`, and waits for `READY`. Its
    /// stdout keeps being drained afterwards (so it never blocks on a full pipe); its stderr
    /// goes to this process's when `EMULATOR_LOG` is set, else nowhere.
    ///
    /// # Panics
    /// When the binary cannot start or exits or stalls before `READY` (a test harness).
    pub fn spawn(bin: &Path, args: &[&str]) -> EmulatorProcess {
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("EMULATOR_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let until = Instant::now() + READY_TIMEOUT;
        let mut env = Vec::new();
        let mut lines = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|e| {
                panic!("the emulator did not print READY ({e}); got {lines:?}")
            });
            lines.push(line.clone());
            if line.trim() == "READY" {
                break;
            }
            if let Some((k, v)) = line.split_once('=') {
                env.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        EmulatorProcess { child, env, lines }
    }

    /// The value of printed variable `key`.
    pub fn var(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (so the emulator removes its temporary files) and waits up to
    /// `within` for it to exit; its exit status, or `None` if it is still running.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < until => {
                    // Polling for the exit: std offers no wait with a timeout.
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => return None,
            }
        }
    }
}

impl Drop for EmulatorProcess {
    /// SIGTERM first, SIGKILL if it lingers.
    fn drop(&mut self) {
        if self.terminate(Duration::from_secs(1)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reports that `test` cannot run here because `reason` (a precondition is missing), so a
/// skip is never silent: prints `SKIPPED: <test>: <reason>` and appends the same line to the
/// file `SKIP_LOG` names, if set (`scripts/test.sh` counts them). Under `CI=true`, where the
/// precondition can be arranged, the test fails instead.
///
/// # Panics
/// Under CI, always.
pub fn skip(test: &str, reason: &str) {
    let line = format!("SKIPPED: {test}: {reason}");
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{line} (CI=true: the precondition must hold here)");
    }
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}
