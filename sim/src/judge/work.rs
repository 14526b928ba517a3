//! Which request belongs to which job and step, as the world can tell.
//!
//! A step's endpoint is its method, host and path as the scenario writes them
//! (`{{...}}` placeholders in the path match any text). A request belongs to the step
//! whose endpoint it hits; when several jobs share an endpoint, the request's run id
//! (the `run` field of its JSON body) picks the job.
//!
//! A job's *work* is what it exists to change in the world: its writing steps (POST,
//! PUT, PATCH, DELETE), each done when the service applied its side effect. A job that
//! only reads counts its last http step, done when the service answered it 2xx.

use steadfast_core::config::{Config, StepKind};

use crate::services::ledger::{AnsweredBy, Effect, LedgerEntry};

/// One step's endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Index of the job in the config.
    pub job: usize,
    /// Index of the step in the job.
    pub step: usize,
    /// Method, upper case.
    pub method: String,
    /// Host name.
    pub host: String,
    /// The path's literal pieces between placeholders.
    pub pieces: Vec<String>,
    /// Whether the step writes (its work is a side effect).
    pub writes: bool,
}

impl Endpoint {
    fn matches(&self, e: &LedgerEntry) -> bool {
        *e.service == *self.host && e.method == self.method && glob(&self.pieces, &e.path)
    }
}

/// Whether `path` matches literal `pieces` with anything between them.
fn glob(pieces: &[String], path: &str) -> bool {
    match pieces {
        [] => true,
        [only] => path == only,
        [first, middle @ .., last] => {
            let Some(mut rest) = path.strip_prefix(first.as_str()) else {
                return false;
            };
            for piece in middle {
                match rest.find(piece.as_str()) {
                    Some(i) => rest = &rest[i + piece.len()..],
                    None => return false,
                }
            }
            rest.len() >= last.len() && rest.ends_with(last.as_str())
        }
    }
}

/// Host and path pieces of a URL template (`scheme://host/path?query`).
fn split_url(url: &str) -> (String, Vec<String>) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = host.split(':').next().unwrap_or(host);
    let path = path.split('?').next().unwrap_or(path);
    let mut pieces = Vec::new();
    let mut rest = path;
    while let Some(open) = rest.find("{{") {
        pieces.push(rest[..open].to_string());
        rest = rest[open..]
            .find("}}")
            .map_or("", |close| &rest[open + close + 2..]);
    }
    pieces.push(rest.to_string());
    (host.to_string(), pieces)
}

/// Every http step's endpoint, and each job's work steps.
#[derive(Debug, Clone, Default)]
pub struct WorkMap {
    /// Every http step's endpoint.
    pub endpoints: Vec<Endpoint>,
    /// Per job, the step indices that are its work (empty: the world cannot see it).
    pub work: Vec<Vec<usize>>,
}

impl WorkMap {
    /// The map of `config`'s jobs.
    pub fn new(config: &Config) -> Self {
        let mut map = Self::default();
        for (j, job) in config.jobs.iter().enumerate() {
            let mut writes = Vec::new();
            let mut last_read = None;
            for (s, step) in job.steps.iter().enumerate() {
                let StepKind::Http(http) = &step.kind else {
                    continue;
                };
                let method = http.method.as_str().to_string();
                let writing = matches!(method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE");
                let (host, pieces) = split_url(http.url.as_str());
                map.endpoints.push(Endpoint {
                    job: j,
                    step: s,
                    method,
                    host,
                    pieces,
                    writes: writing,
                });
                if writing {
                    writes.push(s);
                } else {
                    last_read = Some(s);
                }
            }
            if writes.is_empty() {
                writes.extend(last_read);
            }
            map.work.push(writes);
        }
        map
    }

    /// The endpoint `e` hit, if any; the run id decides between jobs sharing it.
    pub fn endpoint_of(&self, config: &Config, e: &LedgerEntry) -> Option<&Endpoint> {
        let mut candidates = self.endpoints.iter().filter(|p| p.matches(e));
        let first = candidates.next()?;
        let Some(run) = &e.run else {
            return Some(first);
        };
        std::iter::once(first)
            .chain(candidates)
            .find(|p| config.jobs.get(p.job).is_some_and(|j| j.name == run.job()))
            .or(Some(first))
    }
}

/// Whether the world did what the request asked: a write's side effect was applied (a
/// replay of a stored answer is not a new one), or a read was answered 2xx by the
/// service itself.
pub fn done(e: &LedgerEntry, writes: bool) -> bool {
    if writes {
        e.effect == Effect::Applied
    } else {
        e.answered_by == AnsweredBy::Service && (200..300).contains(&e.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_and_path_pieces() {
        assert_eq!(
            split_url("http://drive.sim/v1/render?x={{a.b}}"),
            ("drive.sim".to_string(), vec!["/v1/render".to_string()])
        );
        let (host, pieces) = split_url("https://u@blog.sim:8443/v1/{{draft.id}}/publish");
        assert_eq!(host, "blog.sim");
        assert!(glob(&pieces, "/v1/42/publish"));
        assert!(!glob(&pieces, "/v1/42/delete"));
        assert!(!glob(&pieces, "/v2/42/publish"));
        assert_eq!(split_url("http://h.sim").1, vec!["/".to_string()]);
    }
}
