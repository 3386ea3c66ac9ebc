//! Keeping server processes tied to the lifetime of the test binary.
//!
//! The servers live in a `static` that is never dropped, so nothing in Rust
//! ever stops them. Two independent mechanisms make sure they go anyway:
//!
//! 1. Every server is spawned from one dedicated, never-ending thread with
//!    `PR_SET_PDEATHSIG = SIGKILL`. The kernel sends that signal when the
//!    *thread* that forked the child exits, which is why test threads (they
//!    end after each test) must not spawn the servers themselves.
//! 2. A small `sh` watcher holds the read end of a pipe whose write end only
//!    this process owns. When the test binary exits — normally, by panic or by
//!    `SIGKILL` — the pipe closes, and the watcher kills every registered
//!    process group (Postfix's `master` forks many children: they all share its
//!    group), then removes the temporary directory.

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// The channel to the spawner thread; the thread lives as long as the process.
fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("mail-server-spawner".into())
            .spawn(move || {
                // The sender sits in a static, so `recv` never fails; if it
                // ever did, the thread must still not exit (PDEATHSIG).
                while let Ok((mut cmd, reply)) = rx.recv() {
                    let _ = reply.send(cmd.spawn());
                }
                loop {
                    std::thread::park();
                }
            })
            .expect("start the mail-server spawner thread");
        Mutex::new(tx)
    })
}

/// Spawns `cmd` from the long-lived spawner thread so that the child gets
/// `SIGKILL` when this process ends.
pub fn spawn_tied(mut cmd: Command) -> std::io::Result<Child> {
    // SAFETY: the closure only calls async-signal-safe `prctl` and reads errno.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("the spawner thread did not answer"))?
}

const WATCHER: &str = r#"
trap '' INT TERM HUP PIPE
dir=$1
pgs=
while read -r pg; do pgs="$pgs $pg"; done
for pg in $pgs; do kill -s KILL -- "-$pg" 2>/dev/null; done
i=0
while [ "$i" -lt 50 ]; do
  alive=
  for pg in $pgs; do kill -s 0 -- "-$pg" 2>/dev/null && alive=1; done
  [ -z "$alive" ] && break
  sleep 0.1
  i=$((i + 1))
done
rm -rf -- "$dir"
"#;

/// The cleanup watcher for one set of servers.
pub struct Watcher {
    stdin: Mutex<ChildStdin>,
}

impl Watcher {
    /// Starts the watcher; it will remove `dir` when this process exits.
    pub fn start(dir: &Path) -> std::io::Result<Watcher> {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(WATCHER)
            .arg("mail-server-watcher")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group: a signal sent to the test's process group (Ctrl-C,
            // a CI timeout) must not take the watcher down before it cleans up.
            .process_group(0);
        let mut child = cmd.spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("watcher has no stdin"))?;
        // The `Child` is dropped on purpose: the watcher must outlive us.
        Ok(Watcher {
            stdin: Mutex::new(stdin),
        })
    }

    /// Asks the watcher to kill process group `pgid` when this process exits.
    pub fn register_group(&self, pgid: u32) -> std::io::Result<()> {
        let mut stdin = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(stdin, "{pgid}")?;
        stdin.flush()
    }
}

/// Kills a whole process group at once (used when start-up fails half-way).
pub fn kill_group(pgid: u32) {
    if let Ok(pgid) = i32::try_from(pgid) {
        // SAFETY: plain syscall; a stale group id only yields ESRCH.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// Sends `signal` to one process.
pub fn signal(pid: u32, signal: i32) -> bool {
    match i32::try_from(pid) {
        // SAFETY: plain syscall on a pid we spawned.
        Ok(pid) => unsafe { libc::kill(pid, signal) == 0 },
        Err(_) => false,
    }
}
