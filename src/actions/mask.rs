//! Secret values out of everything printed or kept. A secret is hidden in
//! every form in which it can come back: as it is; line by line when it
//! spans several lines (a PEM key printed by a program comes one line at a
//! time, as GitHub Actions masks each line); and the forms runbook itself
//! derives from it (the password of a URL's userinfo, and the
//! `Basic base64(user:password)` that the HTTP client sends for it, which a
//! server may echo). All forms are matched at once, so two secrets that
//! overlap in a text are both hidden.

use base64::Engine;

/// What a hidden value is replaced by.
pub const HIDDEN: &str = "***";

/// A line of a multi-line secret shorter than this is not hidden on its
/// own: it would hide every `}` or `---` line. Kept low: a credentials
/// file's password line may be five characters, and hiding a common word
/// too often costs less than showing a password.
const SHORTEST_LINE: usize = 4;

/// A password or secret shorter than this is not hidden in its derived
/// forms (its encodings); the secret itself always is.
const SHORTEST_PART: usize = 4;

#[derive(Debug, Default, Clone)]
pub struct Masks {
    /// Longest first.
    forms: Vec<String>,
    /// All of them, for one pass over a text.
    finder: Option<aho_corasick::AhoCorasick>,
}

impl Masks {
    pub fn new<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) -> Masks {
        let mut forms: Vec<String> = secrets
            .into_iter()
            .flat_map(|s| forms_of(s.as_ref()))
            .filter(|f| !f.is_empty())
            .collect();
        forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        forms.dedup();
        let finder = (!forms.is_empty())
            .then(|| aho_corasick::AhoCorasick::new(&forms).ok())
            .flatten();
        Masks { forms, finder }
    }

    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// `text` with every form of every secret replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        let (shown, _) = self.split(text, false);
        shown
    }

    /// `scrub` for text that was cut short: what may be the beginning of a
    /// secret at its end is hidden too.
    pub fn scrub_cut(&self, text: &str) -> String {
        let (mut shown, held) = self.split(text, true);
        if !held.is_empty() {
            shown.push_str(HIDDEN);
        }
        shown
    }

    /// Splits a piece of a longer text for showing now: the piece scrubbed,
    /// and, when `more` text follows, its end that may be the beginning
    /// of a secret (or a secret that may go on), held back to be put before
    /// the next piece.
    pub fn split(&self, text: &str, more: bool) -> (String, String) {
        let hidden = self.matches(text);
        let mut cut = text.len();
        if more {
            cut -= self.pending(text);
            // A match that reaches into the held-back end is held back
            // whole: it may be the head of a longer secret.
            for &(start, end) in hidden.iter().rev() {
                if end <= cut {
                    break;
                }
                cut = cut.min(start);
            }
            // Never more than twice the longest form, whatever a program
            // prints: past that, a run of matches (only secrets that repeat
            // themselves make one) is shown hidden up to its end.
            let most = 2 * self.forms.first().map_or(0, String::len);
            if text.len() - cut > most {
                let mut bound = text.len() - most;
                while !text.is_char_boundary(bound) {
                    bound += 1;
                }
                // The run across the bound is shown hidden, up to where a
                // secret may begin that goes on in the next piece.
                let open = text.len() - self.pending(text);
                cut = hidden
                    .iter()
                    .find(|(start, end)| *start < bound && *end > bound)
                    .map_or(bound, |(_, end)| (*end).min(open).max(bound));
            }
        }
        let mut shown = String::with_capacity(cut);
        let mut at = 0;
        // A match across the cut (only after the bound above) is hidden up
        // to the cut; its rest is held.
        for (start, end) in hidden.into_iter().filter(|(start, _)| *start < cut) {
            shown.push_str(&text[at..start]);
            shown.push_str(HIDDEN);
            at = end.min(cut);
        }
        shown.push_str(&text[at..cut]);
        (shown, text[cut..].to_string())
    }

    /// Where forms occur in `text`, overlapping ones merged, in order.
    fn matches(&self, text: &str) -> Vec<(usize, usize)> {
        let mut found: Vec<(usize, usize)> = match &self.finder {
            Some(finder) => finder
                .find_overlapping_iter(text)
                .map(|m| (m.start(), m.end()))
                .collect(),
            // The automaton could not be built (never for a few thousand
            // forms): one search per form.
            None => self
                .forms
                .iter()
                .flat_map(|form| text.match_indices(form.as_str()))
                .map(|(i, m)| (i, i + m.len()))
                .collect(),
        };
        found.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(found.len());
        for (start, end) in found {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
    }

    /// The length of the longest end of `text` that is the beginning of a
    /// form (not the whole form).
    fn pending(&self, text: &str) -> usize {
        self.forms
            .iter()
            .filter_map(|form| {
                (1..form.len().min(text.len() + 1))
                    .rev()
                    .filter(|k| form.is_char_boundary(*k))
                    .find(|k| text.ends_with(&form[..*k]))
            })
            .max()
            .unwrap_or(0)
    }
}

/// Every form in which `secret` may come back.
fn forms_of(secret: &str) -> Vec<String> {
    let mut forms = vec![secret.to_string()];
    if secret.contains(['\n', '\r']) {
        forms.extend(
            secret
                .split(['\n', '\r'])
                .map(str::trim)
                .filter(|line| line.len() >= SHORTEST_LINE)
                .map(str::to_string),
        );
    }
    // As it goes into a URL's path or query (`compile::url`).
    let encoded = crate::compile::url::encode(secret);
    if encoded != secret {
        forms.push(encoded);
    }
    forms.extend(url_parts(secret.trim()));
    if let Some((user, password)) = userinfo(secret.trim()) {
        for (user, password) in [
            (user.clone(), password.clone()),
            (decoded(&user), decoded(&password)),
        ] {
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            forms.push(basic);
            if password.len() >= SHORTEST_PART {
                forms.push(password);
            }
        }
    }
    forms
}

/// A URL kept as a secret may carry its credential in its path (a Slack
/// webhook) or query: those parts are hidden wherever they show up alone,
/// when long enough not to hide every `/api`.
fn url_parts(text: &str) -> Vec<String> {
    let Ok(url) = reqwest::Url::parse(text) else {
        return Vec::new();
    };
    // A database URL's `?sslmode=require` is no credential.
    if !url.has_host() || !matches!(url.scheme(), "http" | "https") {
        return Vec::new();
    }
    let mut parts = Vec::new();
    let path = url.path();
    if path.len() >= SHORTEST_PATH {
        parts.push(path.to_string());
        parts.push(path.trim_start_matches('/').to_string());
    }
    for part in [url.query(), url.fragment()].into_iter().flatten() {
        parts.push(part.to_string());
        for pair in part.split('&') {
            let value = pair.split_once('=').map_or(pair, |(_, v)| v);
            if value.len() >= SHORTEST_LINE {
                parts.push(value.to_string());
            }
        }
    }
    parts.retain(|p| p.len() >= SHORTEST_LINE);
    parts
}

/// A secret URL's path shorter than this is not hidden on its own (`/`,
/// `/api`).
const SHORTEST_PATH: usize = 8;

/// The user and password of a URL with credentials in it.
fn userinfo(text: &str) -> Option<(String, String)> {
    let (_, rest) = text.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (info, _) = authority.rsplit_once('@')?;
    let (user, password) = info.split_once(':').unwrap_or((info, ""));
    Some((user.to_string(), password.to_string()))
}

/// Percent-decoding, as the HTTP client does before it builds the header.
fn decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests;
