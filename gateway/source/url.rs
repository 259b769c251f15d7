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
            let authority = rest.split('/').next().unwrap_or_default();
            if authority.contains('@') {
                return Err(
                    "credentials in the URL would end up in logs; use username_env/password_env or credentials_file"
                        .into(),
                );
            }
            if authority.is_empty() {
                return Err("RTSP URL without a host".into());
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
            url.chars().take(80).collect::<String>()
        ))
    }
}

/// The address as the config wrote it; safe to log (never holds credentials).
impl fmt::Display for CameraUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CameraUrl::Rtsp(url) => f.write_str(url),
            CameraUrl::File(path) => write!(f, "file://{}", path.display()),
            CameraUrl::Image(path) => write!(f, "image://{}", path.display()),
        }
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
            "file:///srv/clip.mp4",
            "image:///a.jpg",
        ] {
            assert_eq!(CameraUrl::parse(url).unwrap().to_string(), url);
        }
    }
}
