//! Which instances to ask: Cyclops's `-b BASE -p 9000-9004`, and any list
//! of instance URLs.

/// A target list that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("bad port range {0:?}: expected PORT, FIRST-LAST or a comma-separated list of those")]
    BadPorts(String),
    #[error("no instance to ask: give URLs, or --base with --ports")]
    Empty,
}

/// The instance URLs: `base` at each port of `ports` (`9000-9004`,
/// `9000,9002`, `9000`), then `urls` as given. A URL without a scheme gets `http://`.
pub fn targets(base: Option<&str>, ports: Option<&str>, urls: &[String]) -> Result<Vec<String>, TargetError> {
    let mut out = Vec::new();
    if let Some(ports) = ports {
        let base = with_scheme(base.unwrap_or("http://localhost"));
        let base = base.trim_end_matches('/');
        for part in ports.split(',').map(str::trim) {
            let bad = || TargetError::BadPorts(ports.to_owned());
            let (first, last) = match part.split_once('-') {
                Some((a, b)) => {
                    (a.trim().parse::<u16>().map_err(|_| bad())?, b.trim().parse::<u16>().map_err(|_| bad())?)
                }
                None => {
                    let p = part.parse::<u16>().map_err(|_| bad())?;
                    (p, p)
                }
            };
            if first > last || last - first > 1000 {
                return Err(bad());
            }
            out.extend((first..=last).map(|p| format!("{base}:{p}")));
        }
    } else if let Some(base) = base {
        out.push(with_scheme(base));
    }
    out.extend(urls.iter().map(|u| with_scheme(u)));
    if out.is_empty() {
        return Err(TargetError::Empty);
    }
    Ok(out)
}

fn with_scheme(url: &str) -> String {
    if url.contains("://") { url.to_owned() } else { format!("http://{url}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cyclops_flags_and_urls() {
        assert_eq!(
            targets(Some("http://localhost"), Some("9000-9002"), &[]).expect("ok"),
            ["http://localhost:9000", "http://localhost:9001", "http://localhost:9002"]
        );
        assert_eq!(
            targets(Some("farm.example"), Some("1,3"), &["10.0.0.5:3001".into()]).expect("ok"),
            ["http://farm.example:1", "http://farm.example:3", "http://10.0.0.5:3001"]
        );
        assert_eq!(targets(None, None, &["https://a:1".into()]).expect("ok"), ["https://a:1"]);
        assert_eq!(targets(None, None, &[]), Err(TargetError::Empty));
        for bad in ["9005-9000", "x", "1-", "70000"] {
            assert!(matches!(targets(None, Some(bad), &[]), Err(TargetError::BadPorts(_))), "{bad}");
        }
    }
}
