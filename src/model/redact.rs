//! Secrets out of what sluice prints: a URL or a PostgreSQL DSN as it may be logged or
//! shown, with its password, userinfo and query replaced by `***`. One function, so the
//! log, `sluice check` and the store's start line cannot disagree.

/// `s` fit to print: `scheme://user:***@host/path?***` for a URL (a userinfo without a
/// password may itself be a token: `***@`), and `password=***` in a key=value DSN.
pub fn redacted(s: &str) -> String {
    match s.find("://") {
        Some(scheme) => redact_url(s, scheme + 3),
        None => redact_dsn(s),
    }
}

fn redact_url(url: &str, after_scheme: usize) -> String {
    let (head, rest) = url.split_at(after_scheme);
    // The authority ends at the first '/', '?' or '#'.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***{host}"),
                None => format!("***{host}"),
            }
        }
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let fragment = query.find('#').map_or("", |f| &query[f..]);
            format!("{path}?***{fragment}")
        }
        None => tail.to_owned(),
    };
    format!("{head}{authority}{tail}")
}

fn redact_dsn(dsn: &str) -> String {
    dsn.split(' ')
        .map(|part| match part.split_once('=') {
            Some((key, _)) if key.trim().eq_ignore_ascii_case("password") => {
                format!("{key}=***")
            }
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_userinfo_and_queries_are_hidden() {
        let table = [
            (
                "postgres://sluice:s3cret@db:5432/q",
                "postgres://sluice:***@db:5432/q",
            ),
            (
                "postgres://db/q?password=s3cret&sslmode=require",
                "postgres://db/q?***",
            ),
            ("postgresql://db/q", "postgresql://db/q"),
            (
                "https://hooks.example/x?token=abc#frag",
                "https://hooks.example/x?***#frag",
            ),
            (
                "https://TOKEN@hooks.example/x",
                "https://***@hooks.example/x",
            ),
            ("https://u:p@h.example?k=v", "https://u:***@h.example?***"),
            ("http://127.0.0.1:9478", "http://127.0.0.1:9478"),
            (
                "host=db user=sluice password=s3cret dbname=q",
                "host=db user=sluice password=*** dbname=q",
            ),
            ("host=db PASSWORD=x", "host=db PASSWORD=***"),
            ("/var/lib/sluice/quota.db", "/var/lib/sluice/quota.db"),
        ];
        for (input, shown) in table {
            assert_eq!(redacted(input), shown, "{input}");
        }
    }
}
