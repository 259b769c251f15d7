//! Camera addresses: what a `url` in the config may say.

use std::fmt;
use std::path::PathBuf;

/// Where a camera's frames come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CameraUrl {
    /// An RTSP stream; the URL never holds credentials.
    Rtsp(String),
    /// A video file, played in a loop (demos, tests).
    File(PathBuf),
    /// A still image, repeated (demos, tests).
    Image(PathBuf),
}

impl CameraUrl {
    /// Parses a config URL; the error says what is wrong and what to do.
    pub fn parse(url: &str) -> Result<CameraUrl, String> {
        if let Some(rest) = url
            .strip_prefix("rtsp://")
            .or_else(|| url.strip_prefix("rtsps://"))
        {
            let authority = rest.split(['/', '?']).next().unwrap_or_default();
            if authority.contains('@') {
                return Err(
                    "credentials in the URL would end up in logs; use username_env/password_env or credentials_file"
                        .into(),
                );
            }
            if authority.is_empty() {
                return Err("RTSP URL without a host".into());
            }
            if let Some(key) = credential_param(&rest[authority.len()..]) {
                return Err(format!(
                    "credentials in the URL ('{key}=' in its path or query string) would end up in logs, the /cameras API and the console; remove them from the URL and set username_env/password_env or credentials_file (the gateway gives them to the camera itself)"
                ));
            }
            return Ok(CameraUrl::Rtsp(url.to_owned()));
        }
        if let Some(path) = url.strip_prefix("file://") {
            return non_empty(path).map(CameraUrl::File);
        }
        if let Some(path) = url.strip_prefix("image://") {
            return non_empty(path).map(CameraUrl::Image);
        }
        Err(format!(
            "'{}' is not rtsp://, rtsps://, file:// or image://",
            redact(url).chars().take(80).collect::<String>()
        ))
    }
}

/// The address as the config wrote it, safe to log and show: [`parse`]
/// refuses credentials, and whatever was built without it (tools, tests)
/// is shown through [`redact`].
///
/// [`parse`]: CameraUrl::parse
impl fmt::Display for CameraUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CameraUrl::Rtsp(url) => f.write_str(&redact(url)),
            CameraUrl::File(path) => write!(f, "file://{}", path.display()),
            CameraUrl::Image(path) => write!(f, "image://{}", path.display()),
        }
    }
}

/// Parameter names that carry secrets (compared without case).
const SECRET_KEYS: &[&str] = &[
    "user",
    "username",
    "usr",
    "login",
    "account",
    "password",
    "passwd",
    "pass",
    "pwd",
    "psw",
    "auth",
    "token",
    "access_token",
    "key",
    "apikey",
    "api_key",
    "secret",
    "credentials",
];

fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_KEYS.contains(&k.as_str())
        || ["pass", "pwd", "token", "secret"]
            .iter()
            .any(|w| k.contains(w))
}

/// The first `key=value` after the authority whose key names a secret
/// (`?user=admin&password=x`, `;password=x`, `/password=x/`).
fn credential_param(after_authority: &str) -> Option<String> {
    after_authority
        .split(['?', '&', ';', '/'])
        .filter_map(|p| p.split_once('=').map(|(k, _)| k))
        .find(|k| is_secret_key(k))
        .map(str::to_owned)
}

/// A URL with its secrets masked, for display: the user info before `@`
/// and the values of secret-named parameters become `***`.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(auth_end);
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_owned(),
    };
    let mut out = String::with_capacity(url.len());
    if let Some(s) = scheme {
        out.push_str(s);
        out.push_str("://");
    }
    out.push_str(&authority);
    // Mask each secret value up to the next separator.
    let mut rest = tail;
    while let Some(i) = rest.find(['?', '&', ';', '/']) {
        let (seg, after) = rest.split_at(i);
        push_masked(&mut out, seg);
        out.push_str(&after[..1]);
        rest = &after[1..];
    }
    push_masked(&mut out, rest);
    out
}

fn push_masked(out: &mut String, seg: &str) {
    match seg.split_once('=') {
        Some((k, _)) if is_secret_key(k) => {
            out.push_str(k);
            out.push_str("=***");
        }
        _ => out.push_str(seg),
    }
}

fn non_empty(path: &str) -> Result<PathBuf, String> {
    if path.is_empty() {
        Err("empty path".into())
    } else {
        Ok(PathBuf::from(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_inline_credentials_are_refused() {
        assert_eq!(
            CameraUrl::parse("rtsp://10.0.0.5:554/h264").unwrap(),
            CameraUrl::Rtsp("rtsp://10.0.0.5:554/h264".into())
        );
        assert_eq!(
            CameraUrl::parse("file:///srv/clip.mp4").unwrap(),
            CameraUrl::File("/srv/clip.mp4".into())
        );
        assert!(matches!(
            CameraUrl::parse("image:///a.jpg"),
            Ok(CameraUrl::Image(_))
        ));
        let e = CameraUrl::parse("rtsp://admin:12345@10.0.0.5/h264").unwrap_err();
        assert!(e.contains("credentials"), "{e}");
        assert!(CameraUrl::parse("http://x").is_err());
        assert!(CameraUrl::parse("rtsp:///path").is_err());
        assert!(CameraUrl::parse("file://").is_err());
        for url in [
            "rtsp://10.0.0.5:554/h264",
            "rtsp://10.0.0.5:554/cam/realmonitor?channel=1&subtype=0",
            "file:///srv/clip.mp4",
            "image:///a.jpg",
        ] {
            assert_eq!(CameraUrl::parse(url).unwrap().to_string(), url);
        }
    }

    #[test]
    fn credentials_in_the_query_or_path_are_refused_with_what_to_do() {
        for url in [
            "rtsp://10.0.0.5/live?user=admin&password=hunter2",
            "rtsp://10.0.0.5/live?channel=1&PWD=hunter2",
            "rtsps://10.0.0.5/live;password=hunter2",
            "rtsp://10.0.0.5/user=admin/password=hunter2/ch1",
            "rtsp://10.0.0.5/live?access_token=hunter2",
        ] {
            let e = CameraUrl::parse(url).unwrap_err();
            assert!(
                e.contains("credentials") && e.contains("username_env"),
                "{url}: {e}"
            );
            assert!(!e.contains("hunter2"), "the error shows the secret: {e}");
        }
        let e = CameraUrl::parse("http://admin:hunter2@10.0.0.5/x?password=hunter2").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn display_masks_whatever_slipped_past_parse() {
        let u = CameraUrl::Rtsp(
            "rtsp://admin:hunter2@10.0.0.5:554/live?user=admin&password=hunter2&channel=1".into(),
        );
        assert_eq!(
            u.to_string(),
            "rtsp://***@10.0.0.5:554/live?user=***&password=***&channel=1"
        );
        assert_eq!(redact("rtsp://h/a;pass=x/b"), "rtsp://h/a;pass=***/b");
        assert_eq!(redact("rtsp://h:554/s?ch=1"), "rtsp://h:554/s?ch=1");
    }
}
