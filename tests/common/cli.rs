//! The `facegate` binary from a test: a temporary folder for its database,
//! data and config beside the face photos, and the command itself.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

/// One test's temporary folder (`registry.db`, `data/`, `facegate.toml`
/// live there once written) and the face photos, and the binary pointed
/// at that database (by `--db`, or by `--config` once a config is written).
pub struct Workdir {
    pub dir: tempfile::TempDir,
    pub faces: PathBuf,
    by_config: bool,
}

impl Workdir {
    /// No config: the binary is given `--db`. `None` (after the loud skip
    /// of [`super::faces_dir`]) without photos.
    pub fn new() -> Option<Workdir> {
        Some(Workdir {
            dir: tempfile::tempdir().unwrap(),
            faces: super::faces_dir()?,
            by_config: false,
        })
    }
    /// With `data/` made and a config naming the database and `data/`
    /// (see [`Workdir::write_config`]): the binary is given `--config`.
    pub fn with_config(storage_extra: &str) -> Option<Workdir> {
        let w = Workdir {
            by_config: true,
            ..Workdir::new()?
        };
        std::fs::create_dir(w.data()).unwrap();
        w.write_config(storage_extra);
        Some(w)
    }
    /// (Re)writes the config: a `[storage]` section naming the database and
    /// `data/`, then `storage_extra` (more `[storage]` keys, or sections).
    pub fn write_config(&self, storage_extra: &str) {
        std::fs::write(
            self.config(),
            format!(
                "[storage]\ndb = \"{}\"\ndata_dir = \"{}\"\n{storage_extra}",
                self.db().display(),
                self.data().display()
            ),
        )
        .unwrap();
    }
    /// `facegate --db DB` (or `--config CONFIG`), arguments to follow.
    pub fn command(&self) -> Command {
        let mut c = facegate();
        if self.by_config {
            c.arg("--config").arg(self.config());
        } else {
            c.arg("--db").arg(self.db());
        }
        c
    }
    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }
    /// The stdout of `facegate ARGS`, which must succeed.
    pub fn ok(&self, args: &[&str]) -> String {
        stdout_of_success(args, self.run(args))
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn db(&self) -> PathBuf {
        self.path("registry.db")
    }
    pub fn data(&self) -> PathBuf {
        self.path("data")
    }
    pub fn config(&self) -> PathBuf {
        self.path("facegate.toml")
    }
    /// `identities/WHO/N.jpg` of the face photos.
    pub fn photo(&self, who: &str, n: u32) -> PathBuf {
        self.faces
            .join("identities")
            .join(who)
            .join(format!("{n}.jpg"))
    }
    /// `scenes/NAME` of the face photos.
    pub fn scene(&self, name: &str) -> PathBuf {
        self.faces.join("scenes").join(name)
    }
    /// Writes `bytes` to `name` in the folder.
    pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
    /// The database file and its companions (`-wal`, `-shm`), as raw
    /// bytes: what someone reading the disk would find.
    pub fn db_bytes(&self) -> Vec<u8> {
        let mut all = std::fs::read(self.db()).unwrap();
        for c in ["-wal", "-shm"] {
            let mut p = self.db().into_os_string();
            p.push(c);
            if let Ok(b) = std::fs::read(PathBuf::from(p)) {
                all.extend(b);
            }
        }
        all
    }
}

/// The `facegate` binary, run from the repository root (where the shipped
/// config's relative paths point).
pub fn facegate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_facegate"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

/// The stdout of `facegate ARGS`, which must have succeeded.
pub fn stdout_of_success(args: &[&str], o: Output) -> String {
    assert!(
        o.status.success(),
        "facegate {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// The JSON report on the last line of the stdout of `facegate ARGS` (the
/// benches), which must have succeeded.
pub fn last_json_line(args: &[&str], o: Output) -> serde_json::Value {
    let out = stdout_of_success(args, o);
    let line = out.lines().last().expect("a report line");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// `enroll --owner-id ID --name NAME --consent-by CONSENT_BY PHOTOS…`
pub fn enroll_args<'a>(
    id: &'a str,
    name: &'a str,
    consent_by: &'a str,
    photos: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "enroll",
        "--owner-id",
        id,
        "--name",
        name,
        "--consent-by",
        consent_by,
    ];
    args.extend_from_slice(photos);
    args
}

/// Whether `needle` stands anywhere in `haystack` (a name in a file's bytes).
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The shipped `config/facegate.toml` up to its `[mqtt]` section, with the
/// site code `site` and this checkout's `models/` as an absolute path: the
/// head of a test gateway's config, to which the test appends its own
/// `[mqtt]` (and later) sections.
pub fn shipped_config_head(site: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(root.join("config/facegate.toml")).unwrap();
    let head = &shipped[..shipped
        .find("\n[mqtt]\n")
        .expect("the shipped config has an [mqtt] section after the others")];
    head.replace("code = \"demo-estate\"", &format!("code = \"{site}\""))
        .replace(
            "models_dir = \"models\"",
            &format!(
                "models_dir = {:?}",
                root.join("models").display().to_string()
            ),
        )
}

/// `facegate --config CONFIG --db DIR/registry.db run RUN_ARGS… --data-dir
/// DIR/data` as a running gateway: `FACEGATE_LOG=log_filter`, stdout
/// dropped, stderr appended to `log` as it comes.
pub fn spawn_run(
    config: &Path,
    dir: &Path,
    run_args: &[&str],
    log_filter: &str,
    log: &Arc<Mutex<String>>,
) -> Child {
    let mut child = facegate()
        .arg("--config")
        .arg(config)
        .arg("--db")
        .arg(dir.join("registry.db"))
        .arg("run")
        .args(run_args)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("FACEGATE_LOG", log_filter)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start facegate run");
    append_stderr(&mut child, log);
    child
}

/// Reads `child`'s piped stderr on a thread of its own, as it comes, onto
/// the end of `log` (a running gateway's log, for checks and for a failing
/// test's message; a restarted one appends to the same log).
pub fn append_stderr(child: &mut Child, log: &Arc<Mutex<String>>) {
    let mut pipe = child.stderr.take().expect("stderr piped");
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
}
