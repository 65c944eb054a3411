//! Text from outside, made safe to keep: every secret the keeper sent removed, in every form a
//! peer may echo it in, before anything is cut short; control characters removed before a
//! terminal or a log line sees them.
//!
//! A provider or instance that echoes what it was sent (the refresh token in an
//! `error_description`, the client secret in a `detail`) must leave no trace of it in logs,
//! `status`, the journal's outcome table or events. [`Scrubber::clean`] looks for each secret
//! raw, URL-encoded (`%20` and `+`, upper- and lower-case hex), JSON-escaped, base64 and as the
//! `Basic` credential it was sent in, and redacts a run that is only the start of a secret too
//! (a peer that cut the echo itself). It scrubs the text as received and cuts the result, so a
//! cut can never leave the beginning of a secret behind.
//!
//! [`printable`] strips what a terminal would obey instead of show: ANSI escape sequences, C0
//! and C1 controls (CR, LF, tab become a space) and the bidirectional overrides that reorder
//! text on screen.

use base64::Engine;
use std::borrow::Cow;

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Secrets shorter than this are not looked for: a two-letter "secret" would redact words.
const MIN_SECRET: usize = 4;

/// A run at least this long that is the start of a secret (but not all of it) is redacted too:
/// an echo the peer cut short. Shorter runs may be chance.
const MIN_ECHOED_PREFIX: usize = 12;

/// The secrets of one exchange, in every form a peer may echo them in.
#[derive(Default, Clone)]
pub struct Scrubber {
    /// Every form of every secret, longest first (a longer form wins where two match).
    needles: Vec<String>,
}

/// Never shows what it looks for.
impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scrubber({} forms)", self.needles.len())
    }
}

impl Scrubber {
    /// A scrubber that knows no secret yet.
    pub fn new() -> Scrubber {
        Scrubber::default()
    }

    /// Adds a secret in all its forms: as is, percent-encoded (`%20` or `+` for a space, either
    /// case of hex digits), JSON-escaped and base64. Secrets shorter than four characters are
    /// ignored.
    #[must_use]
    pub fn secret(mut self, secret: &str) -> Scrubber {
        if secret.chars().count() < MIN_SECRET {
            return self;
        }
        let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        let percent = form.replace('+', "%20");
        let json = serde_json::to_string(secret).unwrap_or_default();
        let json = json
            .strip_prefix('"')
            .and_then(|j| j.strip_suffix('"'))
            .unwrap_or(secret)
            .to_string();
        let engine = base64::engine::general_purpose::STANDARD;
        let forms = [
            secret.to_string(),
            lower_hex(&form),
            lower_hex(&percent),
            json.replace('/', "\\/"),
            engine.encode(secret.as_bytes()),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret.as_bytes()),
            form,
            percent,
            json,
        ];
        for form in forms {
            self = self.literal(&form);
        }
        self
    }

    /// Adds the `Basic` credential of `client_secret_basic` (RFC 6749 §2.3.1: id and secret
    /// form-encoded, joined by `:`, base64) as it went out in the `Authorization` header.
    #[must_use]
    pub fn basic(self, client_id: &str, secret: &str) -> Scrubber {
        let id: String = url::form_urlencoded::byte_serialize(client_id.as_bytes()).collect();
        let pw: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{pw}"));
        self.literal(&encoded)
    }

    /// Adds one exact string to look for.
    #[must_use]
    pub fn literal(mut self, text: &str) -> Scrubber {
        if text.chars().count() >= MIN_SECRET && !self.needles.iter().any(|n| n == text) {
            self.needles.push(text.to_string());
            self.needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        }
        self
    }

    /// Whether it knows no secret at all.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// `text` with every secret redacted, made [`printable`], and at most `max_chars`
    /// characters long. The whole text is scrubbed before it is cut: no cut can leave the start
    /// of a secret behind. The work is bounded by `max_chars`, not by the text's length.
    pub fn clean(&self, text: &str, max_chars: usize) -> String {
        self.clean_until(text, max_chars, false)
    }

    /// [`Scrubber::clean`] of the first line of `text` only (Entra appends trace and correlation
    /// ids on further lines of its `error_description`).
    pub fn clean_line(&self, text: &str, max_chars: usize) -> String {
        self.clean_until(text, max_chars, true)
    }

    fn clean_until(&self, text: &str, max_chars: usize, first_line: bool) -> String {
        let mut out = String::new();
        let mut kept = 0;
        let mut rest = text;
        while kept < max_chars {
            let Some(c) = rest.chars().next() else {
                break;
            };
            if first_line && matches!(c, '\r' | '\n') {
                break;
            }
            if let Some(len) = self.secret_at(rest) {
                out.push_str(REDACTED);
                kept += REDACTED.len();
                rest = &rest[len..];
                continue;
            }
            out.push(c);
            kept += 1;
            rest = &rest[c.len_utf8()..];
        }
        // Redaction markers may overshoot the limit by a few characters: cut at a character.
        let cut: String = printable(&out).chars().take(max_chars).collect();
        cut
    }

    /// The length in bytes of the secret (or the start of one) that `text` begins with.
    fn secret_at(&self, text: &str) -> Option<usize> {
        let mut best = None;
        for needle in &self.needles {
            let common = common_prefix(text, needle);
            let whole = common == needle.len();
            // Cut short by the peer, or by the end of what was received.
            let echoed =
                common >= MIN_ECHOED_PREFIX || (common == text.len() && common >= MIN_SECRET);
            if (whole || echoed) && best.is_none_or(|b| common > b) {
                best = Some(common);
            }
        }
        best.filter(|&n| n > 0)
    }
}

/// How many leading bytes two strings share, at a character boundary of both.
fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .take_while(|((_, x), y)| x == y)
        .last()
        .map_or(0, |((i, c), _)| i + c.len_utf8())
}

/// Percent-escapes with lower-case hex digits (`%2f`), as some encoders write them.
fn lower_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut chars = encoded.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '%' {
            out.extend(chars.by_ref().take(2).map(|h| h.to_ascii_lowercase()));
        }
    }
    out
}

/// `text` as a terminal may show it and a log line may hold it: ANSI escape sequences (CSI,
/// OSC and two-character escapes) and the C1 `CSI` removed, other C0 and C1 control characters
/// and `DEL` removed, CR, LF and tab turned into a space, and the bidirectional embedding,
/// override and isolate characters (which reorder what is shown) removed.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unprintable) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates up to a final byte in @..~.
                Some('[') => skip_csi(&mut chars),
                // OSC, DCS, SOS, PM, APC: a string up to BEL or ST (ESC \).
                Some(']' | 'P' | 'X' | '^' | '_') => skip_string(&mut chars),
                // A two-character escape (ESC c, ESC 7, …): the second is gone with it.
                _ => {}
            },
            '\u{9b}' => skip_csi(&mut chars),
            '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars),
            '\r' | '\n' | '\t' => out.push(' '),
            c if unprintable(c) => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

fn skip_csi(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    for c in chars.by_ref() {
        if ('\u{40}'..='\u{7e}').contains(&c) {
            break;
        }
    }
}

fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(c) = chars.next() {
        match c {
            '\u{7}' | '\u{9c}' => break,
            '\u{1b}' if chars.peek() == Some(&'\\') => {
                chars.next();
                break;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TOKEN: &str = "0.AXkA7n/rt+Tok3n==with spaces&amp;\"quotes\"/and-more-chars";

    fn scrubber() -> Scrubber {
        Scrubber::new()
            .secret(TOKEN)
            .secret("s3cr3t:p@ss w0rd")
            .basic("client id", "s3cr3t:p@ss w0rd")
    }

    #[test]
    fn every_echoed_form_is_redacted() {
        let s = scrubber();
        let json = serde_json::to_string(TOKEN).unwrap();
        let form: String = url::form_urlencoded::byte_serialize(TOKEN.as_bytes()).collect();
        let percent = form.replace('+', "%20");
        let b64 = base64::engine::general_purpose::STANDARD.encode(TOKEN);
        let basic =
            base64::engine::general_purpose::STANDARD.encode("client+id:s3cr3t%3Ap%40ss+w0rd");
        for echoed in [
            TOKEN.to_string(),
            json.trim_matches('"').to_string(),
            json.trim_matches('"').replace('/', "\\/"),
            form.clone(),
            percent.clone(),
            lower_hex(&form),
            lower_hex(&percent),
            b64,
            format!("Basic {basic}"),
        ] {
            let text = format!("invalid refresh token {echoed} (see docs)");
            let clean = s.clean(&text, 10_000);
            assert!(clean.contains(REDACTED), "{echoed}: {clean}");
            assert!(
                !clean.contains("Tok3n") && !clean.contains(&basic),
                "{clean}"
            );
            assert!(clean.ends_with("(see docs)"), "{clean}");
        }
    }

    #[test]
    fn a_secret_straddling_the_cut_leaves_no_prefix() {
        let s = Scrubber::new().secret("rt-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789");
        let text = format!(
            "{}rt-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 tail",
            "x".repeat(290)
        );
        let cut = s.clean(&text, 300);
        assert!(!cut.contains("rt-ABC"), "{cut}");
        assert!(cut.chars().count() <= 300);
    }

    #[test]
    fn an_echo_the_peer_cut_short_is_redacted_too() {
        let s = Scrubber::new().secret("rt-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789");
        let clean = s.clean("token rt-ABCDEFGHIJKLMN... is invalid", 300);
        assert_eq!(clean, format!("token {REDACTED}... is invalid"));
        // At the very end of what was received, any start is redacted.
        let clean = s.clean("token rt-AB", 300);
        assert_eq!(clean, format!("token {REDACTED}"));
        // A short shared start in the middle is chance, not an echo.
        assert_eq!(s.clean("rt-A and more", 300), "rt-A and more");
    }

    #[test]
    fn short_secrets_are_not_looked_for() {
        let s = Scrubber::new().secret("abc");
        assert!(s.is_empty());
        assert_eq!(s.clean("abc abc", 100), "abc abc");
    }

    #[test]
    fn control_characters_never_reach_a_terminal() {
        assert_eq!(printable("plain"), Cow::Borrowed("plain"));
        assert_eq!(printable("\u{1b}[31mred\u{1b}[0m"), "red");
        assert_eq!(printable("a\r\nb\tc"), "a  b c");
        assert_eq!(printable("title\u{1b}]0;pwned\u{7}x"), "titlex");
        assert_eq!(printable("osc\u{1b}]8;;http://x\u{1b}\\link"), "osclink");
        assert_eq!(printable("c1\u{9b}2Jcsi\u{85}nel"), "c1csinel");
        assert_eq!(printable("ab\u{202e}cd\u{2066}"), "abcd");
        assert_eq!(printable("del\u{7f}"), "del");
        assert_eq!(printable("Müller 日本"), "Müller 日本");
    }

    #[test]
    fn a_first_line_is_cut_after_scrubbing() {
        let s = Scrubber::new().secret("secret-value-1234");
        assert_eq!(
            s.clean_line("bad secret-value-1234\r\nTrace ID: 1", 300),
            format!("bad {REDACTED}")
        );
    }

    #[test]
    fn clean_also_makes_text_printable() {
        let s = Scrubber::new();
        assert_eq!(s.clean("line1\nline2\u{1b}[2J", 100), "line1 line2");
        assert_eq!(s.clean("éééé", 2), "éé");
    }

    proptest! {
        #[test]
        fn no_secret_survives_whatever_surrounds_it(
            // Lower case: the redaction marker itself cannot spell it.
            secret in "[a-z0-9 .~%+/=-]{4,40}",
            before in "[ -~]{0,400}",
            after in "[ -~]{0,400}",
            max in 1usize..900,
        ) {
            let s = Scrubber::new().secret(&secret);
            let clean = s.clean(&format!("{before}{secret}{after}"), max);
            prop_assert!(!clean.contains(&secret), "{clean}");
            prop_assert!(clean.chars().count() <= max);
        }

        #[test]
        fn no_prefix_of_a_long_secret_survives_a_cut(
            secret in "[A-Za-z0-9._~-]{24,64}",
            before in "[ a-z]{0,300}",
            max in 1usize..400,
        ) {
            let s = Scrubber::new().secret(&secret);
            let clean = s.clean(&format!("{before}{secret} trailing text"), max);
            prop_assert!(!clean.contains(&secret[..MIN_ECHOED_PREFIX]), "{clean}");
        }

        #[test]
        fn printable_text_has_no_controls(text in any::<String>()) {
            let shown = printable(&text);
            prop_assert!(!shown.chars().any(unprintable), "{shown:?}");
        }

        #[test]
        fn text_without_secrets_is_kept_as_it_was(text in "[ -~]{0,200}") {
            let s = Scrubber::new().secret("ZZZZ-not-in-the-alphabet-\u{e9}\u{e9}");
            prop_assert_eq!(s.clean(&text, 1_000), text);
        }
    }
}
