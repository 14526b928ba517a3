//! Absolute `http` and `https` URLs, parsed once when the configuration is read.

/// How URLs are written, for hints.
pub const URL_HINT: &str = "an absolute http(s) URL such as \"https://api.example.com/v1/items\"";

/// The longest URL accepted (servers commonly refuse request lines past 8 KiB).
pub const MAX_URL_BYTES: usize = 8 * 1024;

/// A parsed absolute `http` or `https` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `https`?
    pub tls: bool,
    /// Host name.
    pub host: String,
    /// Port (default 80 / 443).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path_and_query: String,
}

impl Url {
    /// Parses an absolute http(s) URL; the error is a lowercase fragment.
    pub fn parse(text: &str) -> Result<Self, String> {
        let uri: http::Uri = text.parse().map_err(|e| format!("invalid url: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            Some(other) => return Err(format!("unsupported scheme `{other}`")),
            None => return Err("url has no scheme".to_string()),
        };
        let host = uri
            .host()
            .ok_or_else(|| "url has no host".to_string())?
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path_and_query = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".to_string());
        Ok(Self {
            tls,
            host,
            port,
            path_and_query,
        })
    }

    /// [`Url::parse`] for configuration values: bounded in length, with a clearer
    /// message for the commonest mistake.
    pub fn parse_config(text: &str) -> Result<Self, String> {
        if text.len() > MAX_URL_BYTES {
            return Err(format!(
                "url is {} bytes long, more than the {MAX_URL_BYTES} allowed",
                text.len()
            ));
        }
        if !text.contains("://") {
            return Err("not an absolute url: the scheme (https://) is missing".to_string());
        }
        Self::parse(text)
    }

    /// The connector target.
    pub fn target(&self) -> crate::env::Target {
        crate::env::Target {
            host: self.host.clone(),
            port: self.port,
            tls: self.tls,
        }
    }

    /// `host` or `host:port` for the `Host` header.
    pub fn authority(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority(), self.path_and_query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parses_parts_and_defaults() {
        let u = Url::parse("https://api.example.com/v1/x?y=1").unwrap();
        assert!(u.tls);
        assert_eq!(u.port, 443);
        assert_eq!(u.path_and_query, "/v1/x?y=1");
        assert_eq!(u.to_string(), "https://api.example.com/v1/x?y=1");
        let u = Url::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((u.port, u.path_and_query.as_str()), (8080, "/"));
        assert!(Url::parse("ftp://x/").is_err());
        assert!(Url::parse("/relative").is_err());
        assert!(
            Url::parse_config("example.com/x")
                .unwrap_err()
                .contains("scheme")
        );
    }
}
