//! The cast: the mail server, and each party as a home folder, a mailbox
//! and the program that works on it. Every command the demo runs goes
//! through [`Party::run`], which records it in `commands.sh` and turns a
//! failure into an error that names the command and quotes its stderr.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::Value;
use testmail::harness::{Account, ServerKind, TestServer};

use crate::bins::Bins;

/// Set when the user presses Ctrl-C (or the demo gets SIGTERM): the demo
/// stops at its next command, stops the daemons and keeps its folder.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Notes SIGINT (Ctrl-C) and SIGTERM in [`INTERRUPTED`]; registered
/// before this returns, so no signal can end the demo uncleanly after.
fn watch_for_stop_signals(rt: &tokio::runtime::Runtime) -> Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        for kind in [SignalKind::interrupt(), SignalKind::terminate()] {
            let mut s = rt
                .block_on(async { signal(kind) })
                .context("cannot watch for Ctrl-C")?;
            rt.spawn(async move {
                if s.recv().await.is_some() {
                    INTERRUPTED.store(true, Ordering::SeqCst);
                }
            });
        }
    }
    #[cfg(not(unix))]
    rt.spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            INTERRUPTED.store(true, Ordering::SeqCst);
        }
    });
    Ok(())
}

/// An error if the user pressed Ctrl-C (or the demo was sent SIGTERM).
pub fn not_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted (Ctrl-C or SIGTERM)");
    }
    Ok(())
}

/// The mail server a command line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Server {
    /// testmail's own server, started on loopback (with its fault hooks).
    Embedded,
    /// The Postfix + Dovecot that `testmail/real-server.sh start` runs
    /// (found through the variables `testmail/real-server.sh env` prints).
    Real,
}

impl Server {
    pub fn kind(self) -> ServerKind {
        match self {
            Server::Embedded => ServerKind::Embedded,
            Server::Real => ServerKind::Real,
        }
    }
}

/// Which program a party is run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    Issuer,
    Agent,
    Wallet,
}

impl Program {
    pub fn name(self) -> &'static str {
        match self {
            Program::Issuer => "issuer",
            Program::Agent => "agent",
            Program::Wallet => "wallet",
        }
    }
    fn home_var(self) -> &'static str {
        match self {
            Program::Issuer => "ISSUER_HOME",
            Program::Agent => "AGENT_HOME",
            Program::Wallet => "WALLET_HOME",
        }
    }
}

/// What every party shares: the programs, the folder, the mail server,
/// the transcript of commands.
pub struct Stage {
    pub bins: Bins,
    pub dir: PathBuf,
    pub server: TestServer,
    pub rt: tokio::runtime::Runtime,
    /// Each mailbox's password variable, address and password; every
    /// command gets all the variables (each party's settings name its own).
    passwords: Mutex<Vec<(String, String, String)>>,
    transcript: Mutex<File>,
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage")
            .field("dir", &self.dir)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Stage {
    /// The mail server (embedded, its store in `dir/mail`, or the real
    /// servers) and an empty transcript.
    pub fn new(bins: Bins, dir: PathBuf, kind: ServerKind) -> Result<Stage> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        watch_for_stop_signals(&rt)?;
        let server = match kind {
            ServerKind::Embedded => rt
                .block_on(TestServer::embedded_in(&dir.join("mail")))
                .context("cannot start the embedded mail server")?,
            ServerKind::Real => rt.block_on(TestServer::real()).map_err(|e| {
                anyhow!(
                    "cannot use the real mail servers: {e}\n\
                     Start them first: testmail/real-server.sh install && \
                     testmail/real-server.sh start && eval \"$(testmail/real-server.sh env)\""
                )
            })?,
        };
        let path = dir.join("commands.sh");
        let mut transcript =
            File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        writeln!(
            transcript,
            "# Every command the demo ran, in order; DEMO is {}.\n# `. $DEMO/env.sh` sets the variables they need.",
            dir.display()
        )?;
        Ok(Stage {
            bins,
            dir,
            server,
            rt,
            passwords: Mutex::new(Vec::new()),
            transcript: Mutex::new(transcript),
        })
    }

    /// A mailbox for `role` (`alice@example.test` on the embedded server,
    /// a claimed pool account on the real ones) and a party in
    /// `dir/ROLE` that uses it.
    pub fn party(&self, role: &str, program: Program) -> Result<Party> {
        let account = self
            .rt
            .block_on(self.server.account(role))
            .with_context(|| format!("cannot get a mailbox for {role}"))?;
        let pw_var = format!(
            "{}_MAIL_PASSWORD",
            role.to_ascii_uppercase().replace('-', "_")
        );
        self.lock_passwords().push((
            pw_var.clone(),
            account.address.clone(),
            account.password.clone(),
        ));
        Ok(Party {
            role: role.to_string(),
            program,
            home: self.dir.join(role),
            account: Arc::new(account),
            pw_var,
        })
    }

    /// A second party on the same mailbox as `of`, in its own folder
    /// (mallory's restored backup).
    pub fn copy_of(&self, of: &Party, role: &str) -> Result<Party> {
        let home = self.dir.join(role);
        copy_dir(&of.home, &home)?;
        Ok(Party {
            role: role.to_string(),
            program: of.program,
            home,
            account: Arc::clone(&of.account),
            pw_var: of.pw_var.clone(),
        })
    }

    /// The mail flags of every program's `init` for `party`.
    pub fn mail_flags(&self, party: &Party) -> Vec<String> {
        self.server
            .init_flags(&party.account.address, &party.pw_var)
    }

    fn lock_passwords(&self) -> std::sync::MutexGuard<'_, Vec<(String, String, String)>> {
        self.passwords.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(&self, line: &str) {
        let mut t = self.transcript.lock().unwrap_or_else(|p| p.into_inner());
        // The transcript is for the reader; a write error must not stop the demo.
        let _ = writeln!(t, "{line}");
    }

    /// `env.sh`: the variables every command needs (0600: it holds the
    /// mail passwords), and `serve_mail`, which serves the kept mail again
    /// on the same ports.
    pub fn write_env(&self) -> Result<PathBuf> {
        let path = self.dir.join("env.sh");
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# . this file to run the demo's programs against what it left.\nexport DEMO={}\nexport PATH=\"{}:$PATH\"",
            sh_quote(&self.dir.to_string_lossy()),
            self.bins.dir.display()
        );
        let passwords = self.lock_passwords().clone();
        for (var, _, pw) in &passwords {
            let _ = writeln!(s, "export {var}={}", sh_quote(pw));
        }
        if self.server.kind() == ServerKind::Embedded {
            let users: Vec<String> = passwords
                .iter()
                .map(|(_, address, pw)| format!("--user {}", sh_quote(&format!("{address}:{pw}"))))
                .collect();
            let _ = writeln!(
                s,
                "# The mail server again, on the ports the settings name (Ctrl-C stops it).\nserve_mail() {{ testmail serve --dir \"$DEMO/mail\" --smtp {} --imap {} {}; }}",
                self.server.smtp_addr(),
                self.server.imap_addr(),
                users.join(" ")
            );
        }
        write_private(&path, s.as_bytes())?;
        Ok(path)
    }
}

/// One party: a home folder worked on by one program, and a mailbox.
#[derive(Debug)]
pub struct Party {
    pub role: String,
    pub program: Program,
    pub home: PathBuf,
    pub account: Arc<Account>,
    pub pw_var: String,
}

impl Party {
    pub fn address(&self) -> &str {
        &self.account.address
    }

    fn command(&self, stage: &Stage, args: &[&str]) -> Command {
        let mut c = Command::new(stage.bins.path(self.program.name()));
        c.args(args)
            .env(self.program.home_var(), &self.home)
            .envs(stage.lock_passwords().iter().map(|(k, _, v)| (k, v)))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        c
    }

    fn shown(&self, stage: &Stage, args: &[&str]) -> String {
        let home = self.home.strip_prefix(&stage.dir).unwrap_or(&self.home);
        let args: Vec<String> = args.iter().map(|a| sh_quote(a)).collect();
        format!(
            "{}=$DEMO/{} {} {}",
            self.program.home_var(),
            home.display(),
            self.program.name(),
            args.join(" ")
        )
    }

    /// Runs the program with `args` and records it in the transcript; its
    /// stdout, or an error naming the command with its exit code and
    /// stderr.
    pub fn run(&self, stage: &Stage, args: &[&str]) -> Result<String> {
        stage.record(&self.shown(stage, args));
        self.run_unrecorded(stage, args)
    }

    /// [`Self::run`] left out of the transcript: the demo's own polling
    /// (`wallet sync` again and again, status reads).
    pub fn poll(&self, stage: &Stage, args: &[&str]) -> Result<String> {
        self.run_unrecorded(stage, args)
    }

    fn run_unrecorded(&self, stage: &Stage, args: &[&str]) -> Result<String> {
        let (code, out, err) = self.output(stage, args)?;
        if code != Some(0) {
            bail!(
                "`{}` failed (exit {}):\n{}{}",
                self.shown(stage, args),
                code.map_or("by a signal".into(), |c| c.to_string()),
                err.trim_end(),
                if out.trim().is_empty() {
                    String::new()
                } else {
                    format!("\n{}", out.trim_end())
                }
            );
        }
        Ok(out)
    }

    /// Runs the program, recorded; its exit code, stdout and stderr,
    /// whatever they are.
    pub fn run_status(
        &self,
        stage: &Stage,
        args: &[&str],
    ) -> Result<(Option<i32>, String, String)> {
        stage.record(&self.shown(stage, args));
        self.output(stage, args)
    }

    fn output(&self, stage: &Stage, args: &[&str]) -> Result<(Option<i32>, String, String)> {
        not_interrupted()?;
        let out = self
            .command(stage, args)
            .output()
            .with_context(|| format!("cannot run {}", self.program.name()))?;
        // A command the Ctrl-C cut short is not a failure of its own. The
        // signal may reach the command before the runtime notes it here.
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt as _;
            if out.status.signal() == Some(rustix::process::Signal::INT.as_raw()) {
                INTERRUPTED.store(true, Ordering::SeqCst);
            }
        }
        not_interrupted()?;
        Ok((
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Runs the program with `args` and `--json` (a read: not recorded).
    pub fn json(&self, stage: &Stage, args: &[&str]) -> Result<Value> {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.poll(stage, &a)?;
        serde_json::from_str(&out)
            .with_context(|| format!("`{}` printed no JSON: {out}", self.shown(stage, &a)))
    }

    /// Starts the program with `args`, its stdout and stderr piped to the
    /// caller (who reads them as they come), not recorded: the benchmark's
    /// thousands of commands.
    pub fn start_piped(&self, stage: &Stage, args: &[&str]) -> Result<Child> {
        not_interrupted()?;
        self.command(stage, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", self.program.name()))
    }

    /// Starts the program with `args`, recorded, its stdout and stderr
    /// appended to `log`: a command that may be killed halfway.
    pub fn start_logged(&self, stage: &Stage, args: &[&str], log: &Path) -> Result<Child> {
        not_interrupted()?;
        stage.record(&self.shown(stage, args));
        let open = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .with_context(|| format!("cannot open {}", log.display()))
        };
        self.command(stage, args)
            .stdout(open()?)
            .stderr(open()?)
            .spawn()
            .with_context(|| format!("cannot run {}", self.program.name()))
    }

    /// Starts the program's daemon (`run`), its log in `logs/ROLE.log`.
    pub fn spawn(&self, stage: &Stage, args: &[&str]) -> Result<Daemon> {
        let logs = stage.dir.join("logs");
        std::fs::create_dir_all(&logs)
            .with_context(|| format!("cannot create {}", logs.display()))?;
        let log_path = logs.join(format!("{}.log", self.role));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        stage.record(&format!("{} &", self.shown(stage, args)));
        // The daemons log at info unless the user asked for more or less.
        let log_level = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
        let child = self
            .command(stage, args)
            .env("RUST_LOG", log_level)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {} run", self.program.name()))?;
        Ok(Daemon {
            role: self.role.clone(),
            child,
            log: log_path,
        })
    }
}

/// A daemon: stopped with SIGTERM (then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Daemon {
    role: String,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// An error if the daemon has exited, with the end of its log.
    pub fn check(&mut self) -> Result<()> {
        not_interrupted()?;
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{}'s daemon stopped ({status}); the end of {}:\n{}",
                self.role,
                self.log.display(),
                tail.join("\n")
            );
        }
        Ok(())
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: no chance to finish anything; reaped before this returns.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and SIGKILL if it has not stopped after five seconds.
    pub fn stop(&mut self) {
        #[cfg(unix)]
        {
            if let Ok(id) = i32::try_from(self.child.id()) {
                if let Some(pid) = rustix::process::Pid::from_raw(id) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                }
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// Waits until `f` says yes, asking every `every`; an error saying what
/// was awaited after `secs` seconds.
pub fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        not_interrupted()?;
        if f()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {secs} s waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(150));
    }
}

/// `s` quoted for a POSIX shell when it needs it.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:@%+=,".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Writes `bytes` to a new file readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut o = OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(0o600);
    }
    let mut f = o
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Copies a folder (files and subfolders), keeping file permissions.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    let perms = std::fs::metadata(from)
        .with_context(|| format!("cannot read {}", from.display()))?
        .permissions();
    std::fs::set_permissions(to, perms)
        .with_context(|| format!("cannot set the permissions of {}", to.display()))?;
    for e in std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), &target).with_context(|| {
                format!("cannot copy {} to {}", e.path().display(), target.display())
            })?;
        }
    }
    Ok(())
}
