//! What a camera pipeline needs to know, resolved from the config once:
//! the URL, the transport, the credentials (from env or a file), timeouts.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::config::{CameraConfig, Transport};

use super::{BackoffPolicy, CameraUrl, SourceError};

/// RTSP credentials. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// One camera, ready to spawn. Fields are public so tests and tools can
/// build one directly; [`CameraSpec::from_config`] is the usual way.
#[derive(Debug, Clone)]
pub struct CameraSpec {
    pub name: String,
    pub url: CameraUrl,
    pub transport: Transport,
    pub credentials: Option<Credentials>,
    /// Online and no frame for this long: stalled, the pipeline is rebuilt.
    pub stall_timeout: Duration,
    /// After a (re)start, how long to wait for the first frame: a camera's
    /// first decodable frame can be a whole GOP (often 2–4 s) away.
    pub start_timeout: Duration,
    pub backoff: BackoffPolicy,
    /// How many nice steps below the process its GStreamer streaming
    /// threads (network, demuxing, decoding) run: a patrol camera's
    /// decoding yields to the gate cameras' (`ingest.patrol_nice`).
    pub nice: i32,
}

/// The first frame gets at least this long after a (re)start.
const MIN_START_TIMEOUT: Duration = Duration::from_secs(10);

impl CameraSpec {
    /// A spec with the defaults: TCP, no credentials, 5 s stall timeout.
    pub fn new(name: impl Into<String>, url: CameraUrl) -> Self {
        let stall_timeout = Duration::from_secs(5);
        Self {
            name: name.into(),
            url,
            transport: Transport::Tcp,
            credentials: None,
            stall_timeout,
            start_timeout: stall_timeout.max(MIN_START_TIMEOUT),
            backoff: BackoffPolicy::default(),
            nice: 0,
        }
    }

    /// Resolves a camera's config: parses the URL and reads the credentials
    /// from the environment or the credentials file. Errors name the camera
    /// and what is missing, never a secret.
    pub fn from_config(cfg: &CameraConfig) -> Result<Self, SourceError> {
        Self::from_config_with_env(cfg, |k| std::env::var(k).ok())
    }

    /// [`CameraSpec::from_config`] with the environment as a function (tests).
    pub fn from_config_with_env(
        cfg: &CameraConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SourceError> {
        let bad = |reason: String| SourceError::Config {
            camera: cfg.name.clone(),
            reason,
        };
        let url = CameraUrl::parse(&cfg.url).map_err(|e| bad(format!("url: {e}")))?;
        let credentials = credentials(cfg, env).map_err(bad)?;
        let stall_timeout = Duration::try_from_secs_f32(cfg.stall_timeout_s)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                bad(format!(
                    "stall_timeout_s = {} is not a duration",
                    cfg.stall_timeout_s
                ))
            })?;
        Ok(Self {
            name: cfg.name.clone(),
            url,
            transport: cfg.transport,
            credentials,
            stall_timeout,
            start_timeout: stall_timeout.max(MIN_START_TIMEOUT),
            backoff: BackoffPolicy::default(),
            // The role's priority is the caller's to set (it knows `[ingest]`).
            nice: 0,
        })
    }
}

fn credentials(
    cfg: &CameraConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Credentials>, String> {
    let from_env = cfg.username_env.is_some() || cfg.password_env.is_some();
    if from_env && cfg.credentials_file.is_some() {
        return Err("set either username_env/password_env or credentials_file, not both".into());
    }
    if from_env {
        let (Some(user_var), Some(pw_var)) = (&cfg.username_env, &cfg.password_env) else {
            return Err("username_env and password_env must be set together".into());
        };
        let read = |key: &str, var: &str| {
            env(var).ok_or_else(|| {
                format!("{key} names the environment variable {var}, which is not set")
            })
        };
        return Ok(Some(Credentials {
            user: read("username_env", user_var)?,
            password: read("password_env", pw_var)?,
        }));
    }
    match &cfg.credentials_file {
        Some(path) => read_credentials_file(path).map(Some),
        None => Ok(None),
    }
}

/// `user:password` on the first line; the password may contain ':'.
fn read_credentials_file(path: &Path) -> Result<Credentials, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("credentials_file {}: {e}", path.display()))?;
    let line = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end_matches('\r');
    match line.split_once(':') {
        Some((user, password)) if !user.is_empty() => Ok(Credentials {
            user: user.to_owned(),
            password: password.to_owned(),
        }),
        _ => Err(format!(
            "credentials_file {}: the first line must be user:password",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn camera(extra: &str) -> CameraConfig {
        let text =
            format!("[[cameras]]\nname = \"gate-1\"\nurl = \"rtsp://10.0.0.5/h264\"\n{extra}");
        let c = Config::parse(&text, Path::new("c.toml")).unwrap();
        c.cameras[0].clone()
    }

    #[test]
    fn credentials_come_from_the_named_env_vars() {
        let cfg =
            camera("username_env = \"CAM_USER\"\npassword_env = \"CAM_PW\"\nstall_timeout_s = 2.5");
        let env = |k: &str| match k {
            "CAM_USER" => Some("admin".to_owned()),
            "CAM_PW" => Some("s3cret".to_owned()),
            _ => None,
        };
        let spec = CameraSpec::from_config_with_env(&cfg, env).unwrap();
        let c = spec.credentials.clone().unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("admin", "s3cret"));
        assert_eq!(spec.stall_timeout, Duration::from_millis(2500));
        assert!(spec.start_timeout >= spec.stall_timeout);
        assert!(
            !format!("{spec:?}").contains("s3cret"),
            "Debug leaks the password"
        );
    }

    #[test]
    fn a_missing_env_var_names_the_camera_and_the_variable() {
        let cfg = camera("username_env = \"CAM_USER\"\npassword_env = \"CAM_PW\"");
        let env = |k: &str| (k == "CAM_USER").then(|| "admin".to_owned());
        let err = CameraSpec::from_config_with_env(&cfg, env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("gate-1") && err.contains("CAM_PW"), "{err}");
        let cfg = camera("username_env = \"CAM_USER\"");
        let err = CameraSpec::from_config_with_env(&cfg, |_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("together"), "{err}");
    }

    #[test]
    fn the_credentials_file_gives_user_and_password_and_its_errors_show_no_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cam.cred");
        std::fs::write(&path, "viewer:pa:ss\r\nignored\n").unwrap();
        let cfg = camera(&format!(
            "credentials_file = {:?}",
            path.display().to_string()
        ));
        let c = CameraSpec::from_config_with_env(&cfg, |_| None)
            .unwrap()
            .credentials
            .unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("viewer", "pa:ss"));

        std::fs::write(&path, "justapassword\n").unwrap();
        let err = CameraSpec::from_config_with_env(&cfg, |_| None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("user:password") && !err.contains("justapassword"),
            "{err}"
        );

        let cfg = camera("credentials_file = \"/nonexistent/cam.cred\"");
        let err = CameraSpec::from_config_with_env(&cfg, |_| None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gate-1") && err.contains("/nonexistent/cam.cred"),
            "{err}"
        );
    }

    #[test]
    fn env_and_file_together_are_refused_and_no_credentials_is_fine() {
        let cfg = camera("username_env = \"U\"\npassword_env = \"P\"\ncredentials_file = \"/x\"");
        assert!(CameraSpec::from_config_with_env(&cfg, |_| Some("x".into())).is_err());
        let spec = CameraSpec::from_config_with_env(&camera(""), |_| None).unwrap();
        assert!(spec.credentials.is_none());
        assert_eq!(spec.transport, Transport::Tcp);
    }
}
