//! Rule sets in gitleaks' TOML format, compiled for the prefilter-then-regex engine.
//!
//! Scanning a buffer: one Aho-Corasick pass (ASCII case-insensitive) over every rule keyword
//! selects candidate rules; only those run their regex; each match's secret group is checked
//! against the rule's entropy threshold and allowlists, then the global allowlists, then the
//! rule's `lowConfidence` tables (our extension of the format: a match fitting one is a
//! low-confidence finding, reported only when the caller asks). Encoded text (base64, hex,
//! percent) is decoded and scanned again ([`super::decode`]). Of overlapping findings only the
//! strongest stays: higher confidence first, then a specific rule over a generic one.

use std::sync::LazyLock;

use aho_corasick::automaton::{Automaton, OverlappingState};
use aho_corasick::dfa::DFA;
use aho_corasick::{Anchored, Input, MatchKind};
use regex::bytes::{Regex, RegexBuilder};
use serde::Deserialize;

use super::prescan::{ByteSet, Leads};
use super::{Confidence, Finding, ScanError, assign_lines, entropy, redact};

const BUILTIN_TOML: &str = include_str!("rules.toml");
/// Rules less specific than the others, the stronger first: the strict-only vendor prefix (a
/// token of the right format says more), and the ones that match any assignment to a
/// secret-sounding name; any other rule is specific.
const GENERIC_IDS: [&str; 3] = ["vendor-token-prefix", "generic-api-key", "generic-named-value"];

static BUILTIN: LazyLock<Rules> = LazyLock::new(|| {
    // The built-in file is part of the source tree and covered by tests; failing here is a bug.
    Rules::from_gitleaks_toml(BUILTIN_TOML, false).unwrap_or_else(|e| panic!("built-in rules.toml is invalid: {e}"))
});

// ------------------------------------------------------------------ the TOML shape

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    extend: Option<RawExtend>,
    #[serde(default)]
    rules: Vec<RawRule>,
    /// gitleaks < 8.25: one global allowlist table.
    #[serde(default)]
    allowlist: Option<RawAllowlist>,
    #[serde(default)]
    allowlists: Vec<RawAllowlist>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawExtend {
    #[serde(default)]
    use_default: bool,
    #[serde(default)]
    disabled_rules: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRule {
    #[serde(default)]
    id: String,
    #[serde(default)]
    regex: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    secret_group: Option<usize>,
    #[serde(default)]
    entropy: Option<f64>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    allowlist: Option<RawAllowlist>,
    #[serde(default)]
    allowlists: Vec<RawAllowlist>,
    /// Our extension: matches that fit one of these (same shape as an allowlist) are reported
    /// as low-confidence findings instead of being dropped or reported plainly.
    #[serde(default)]
    low_confidence: Vec<RawAllowlist>,
    /// Our extension: the rule only runs in strict mode (egress routes that should carry no
    /// credential at all), never for the git gate.
    #[serde(default)]
    strict_only: bool,
    /// Our extension: a match can lie far from its keyword, or span lines (a PEM block, a curl
    /// command): a scan limited to the places a credential could be still runs this rule over
    /// the whole input.
    #[serde(default)]
    wide: bool,
    /// Our extension: the match lies within one run of this many bytes or more (no byte of it
    /// ends a run): a scan limited to the places a credential could be runs this rule only in
    /// a window holding such a run.
    #[serde(default)]
    min_run: usize,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAllowlist {
    #[serde(default)]
    condition: Option<String>,
    #[serde(default)]
    regex_target: Option<String>,
    #[serde(default)]
    regexes: Vec<String>,
    #[serde(default)]
    stopwords: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    commits: Vec<String>,
    #[serde(default)]
    target_rules: Vec<String>,
    /// Our extension: the secret reads like an identifier (see [`reads_like_identifier`]).
    #[serde(default)]
    identifiers: bool,
    /// Our extension, on a `lowConfidence` table: it excuses the match in strict mode too (the
    /// match says nothing about the value's shape, only about the name it was assigned to).
    #[serde(default)]
    strict: bool,
}

// ------------------------------------------------------------------ compiled form

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Secret,
    Match,
    Line,
}

#[derive(Debug)]
struct Allowlist {
    all: bool,
    target: Target,
    regexes: Vec<Regex>,
    stopwords: Vec<Vec<u8>>,
    paths: Vec<Regex>,
    commits: Vec<String>,
    target_rules: Vec<String>,
    identifiers: bool,
    /// Holds in strict mode too (a `lowConfidence` table only).
    strict: bool,
}

/// A span of the input where a windowed scan looks, and the longest run in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) longest_run: usize,
}

/// Where scanned bytes came from; allowlists with `paths`/`commits` need it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    pub path: Option<&'a str>,
    pub commit: Option<&'a str>,
    /// Also report low-confidence findings (dropped otherwise).
    pub low_confidence: bool,
}

struct Hit<'a> {
    secret: &'a [u8],
    whole: &'a [u8],
    line: &'a [u8],
}

impl Allowlist {
    fn allows(&self, hit: &Hit<'_>, ctx: Context<'_>) -> bool {
        let mut checks: Vec<bool> = Vec::with_capacity(4);
        if !self.commits.is_empty() {
            checks.push(ctx.commit.is_some_and(|c| self.commits.iter().any(|x| c.starts_with(x.as_str()))));
        }
        if !self.paths.is_empty() {
            checks.push(ctx.path.is_some_and(|p| self.paths.iter().any(|r| r.is_match(p.as_bytes()))));
        }
        if !self.regexes.is_empty() {
            let target = match self.target {
                Target::Secret => hit.secret,
                Target::Match => hit.whole,
                Target::Line => hit.line,
            };
            checks.push(self.regexes.iter().any(|r| r.is_match(target)));
        }
        if !self.stopwords.is_empty() {
            let lower = hit.secret.to_ascii_lowercase();
            checks.push(self.stopwords.iter().any(|w| contains(&lower, w)));
        }
        if self.identifiers {
            checks.push(reads_like_identifier(hit.secret));
        }
        if checks.is_empty() {
            return false;
        }
        if self.all { checks.iter().all(|&c| c) } else { checks.iter().any(|&c| c) }
    }
}

/// Whether `s` reads like a name a programmer wrote rather than random key material. Split at
/// separators into segments and each segment into pieces (at a lower-to-upper case change, before
/// the last capital of a run followed by lowercase, and after a run of digits). An identifier
/// is not hex; no segment has more than 2 runs of digits or one longer than 4; its pieces average
/// 3 characters or more and at most a quarter are a lone letter; and its letters are
/// pronounceable: pieces without a vowel are short abbreviations (`ctrl`, `HTTP`; at most a
/// third of the pieces), and in the
/// others at least 20% of the letters are vowels (`y` counts) with no more than 4 consonants in
/// a row. `P256.Signing.PrivateKey`, `TR31_E2_EMV_MKEY_INTEGRITY` and `result_record-299` read
/// like identifiers; base64, hex, UUIDs and (all but a few percent of) random alphanumerics do
/// not. Measured on random alphanumerics of 10 to 40 characters with entropy above 3.5: 5% of
/// the 10-character ones and under 0.5% from 30 characters up read like identifiers.
pub fn reads_like_identifier(s: &[u8]) -> bool {
    let is_hex = s.iter().all(|b| b.is_ascii_hexdigit() || !b.is_ascii_alphanumeric())
        && s.iter().any(u8::is_ascii_digit)
        && s.iter().any(u8::is_ascii_alphabetic);
    if is_hex && s.len() >= 12 {
        return false;
    }
    let is_vowel = |b: u8| matches!(b.to_ascii_lowercase(), b'a' | b'e' | b'i' | b'o' | b'u' | b'y');
    let (mut pieces, mut total, mut singles, mut letters, mut vowels, mut abbreviations) = (0, 0, 0, 0, 0, 0);
    for segment in s.split(|b| !b.is_ascii_alphanumeric()).filter(|g| !g.is_empty()) {
        let mut digit_runs = segment.split(|b| !b.is_ascii_digit()).filter(|r| !r.is_empty());
        if digit_runs.clone().count() > 2 || digit_runs.any(|r| r.len() > 4) {
            return false;
        }
        let mut start = 0;
        for i in 1..=segment.len() {
            let cut = i == segment.len() || {
                let (a, b) = (segment[i - 1], segment[i]);
                let next_lower = segment.get(i + 1).is_some_and(u8::is_ascii_lowercase);
                (a.is_ascii_lowercase() && b.is_ascii_uppercase())
                    || (a.is_ascii_uppercase() && b.is_ascii_uppercase() && next_lower)
                    || (a.is_ascii_digit() && b.is_ascii_alphabetic())
            };
            if !cut {
                continue;
            }
            let piece = &segment[start..i];
            start = i;
            pieces += 1;
            total += piece.len();
            singles += usize::from(piece.len() == 1 && piece[0].is_ascii_alphabetic());
            let alpha: Vec<u8> = piece.iter().copied().filter(u8::is_ascii_alphabetic).collect();
            let piece_vowels = alpha.iter().filter(|&&b| is_vowel(b)).count();
            if piece_vowels == 0 {
                if alpha.len() > 4 {
                    return false;
                }
                abbreviations += usize::from(alpha.len() >= 2);
                continue;
            }
            if alpha.split(|&b| is_vowel(b)).any(|run| run.len() > 4) {
                return false;
            }
            letters += alpha.len();
            vowels += piece_vowels;
        }
    }
    pieces > 0 && total >= pieces * 3 && singles * 4 <= pieces && abbreviations * 3 <= pieces && vowels * 5 >= letters
}

/// Among `out[first..]`, a finding overlapping a stronger one says nothing more: stronger is
/// higher confidence, then a specific rule over a generic one ([`GENERIC_IDS`]).
pub(crate) fn drop_redundant(out: &mut Vec<Finding>, first: usize) {
    // Specific rules, then the generic rules in their order of strength.
    let specificity = |f: &Finding| GENERIC_IDS.iter().rev().position(|&g| g == f.rule_id).unwrap_or(GENERIC_IDS.len());
    let rank = |f: &Finding| (f.confidence, specificity(f));
    let stronger = |f: &Finding, g: &Finding| f.start < g.end && g.start < f.end && rank(g) > rank(f);
    let found = &out[first..];
    let redundant: Vec<bool> = found.iter().map(|f| found.iter().any(|g| stronger(f, g))).collect();
    let mut i = 0;
    out.retain(|_| {
        let keep = i < first || !redundant[i - first];
        i += 1;
        keep
    });
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

#[derive(Debug)]
struct Rule {
    id: String,
    regex: Option<Regex>,
    path: Option<Regex>,
    secret_group: Option<usize>,
    entropy: Option<f64>,
    allowlists: Vec<Allowlist>,
    low_confidence: Vec<Allowlist>,
    strict_only: bool,
    /// Run over the whole input even by a windowed scan.
    wide: bool,
    /// A windowed scan runs it only in a window with a run this long.
    min_run: usize,
}

/// How many of a keyword's first bytes [`Prefixes`] looks for.
const PREFIX: usize = 4;

/// The keywords by their first [`PREFIX`] bytes: an automaton of those (smaller than one of
/// the whole keywords, and what it finds is only a few bytes long), and for each of its
/// patterns, the keywords that start so (lower case) with their rules.
#[derive(Debug)]
struct Prefixes {
    dfa: DFA,
    keywords: Vec<Vec<Keyword>>,
}

/// A keyword (lower case) and its rule.
type Keyword = (Vec<u8>, usize);

impl Prefixes {
    fn new(patterns: &[String], keyword_rule: &[usize]) -> Result<Option<Prefixes>, ScanError> {
        let (mut heads, mut keywords): (Vec<&[u8]>, Vec<Vec<Keyword>>) = (Vec::new(), Vec::new());
        for (p, &r) in patterns.iter().zip(keyword_rule) {
            let head = &p.as_bytes()[..p.len().min(PREFIX)];
            let i = heads.iter().position(|&h| h == head).unwrap_or_else(|| {
                heads.push(head);
                keywords.push(Vec::new());
                heads.len() - 1
            });
            keywords[i].push((p.as_bytes().to_vec(), r));
        }
        if heads.is_empty() {
            return Ok(None);
        }
        let dfa = DFA::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(&heads)
            .map_err(|e| ScanError::Toml(format!("keywords: {e}")))?;
        Ok(Some(Prefixes { dfa, keywords }))
    }
}

/// A compiled rule set. Build once and share: scanning takes `&self` and is thread-safe.
#[derive(Debug)]
pub struct Rules {
    rules: Vec<Rule>,
    /// Keyword automaton, a DFA, for a search over all of an input
    /// ([`Rules::keyword_hits_anywhere`], [`Rules::may_match`]); pattern i belongs to rule
    /// `keyword_rule[i]`.
    keywords: Option<DFA>,
    keyword_rule: Vec<usize>,
    /// The keywords' first [`PREFIX`] bytes, for [`Rules::keyword_hits`].
    prefixes: Option<Prefixes>,
    /// Rules that run on every input (no keywords).
    always: Vec<usize>,
    /// Strict-only rules without keywords: they run on every input in strict mode.
    strict_always: Vec<usize>,
    /// The keywords of the wide rules (lower case, each once), and the rules of each: a windowed
    /// scan looks for these over the whole input.
    wide_keywords: Vec<Vec<u8>>,
    wide_keyword_rules: Vec<Vec<usize>>,
    /// Where a wide keyword could start (its first two bytes in either case).
    wide_leads: Option<Leads>,
    global: Vec<Allowlist>,
    longest_keyword: usize,
}

fn compile_regex(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .unicode(false)
        .size_limit(64 << 20)
        .dfa_size_limit(16 << 20)
        .build()
        .map_err(|e| e.to_string())
}

fn compile_allowlist(
    raw: &RawAllowlist,
    err: &dyn Fn(&'static str, String) -> ScanError,
) -> Result<Allowlist, ScanError> {
    let all = match raw.condition.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("OR") => false,
        Some("AND") => true,
        Some(other) => return Err(err("allowlist condition", format!("{other:?} (expected OR or AND)"))),
    };
    let target = match raw.regex_target.as_deref() {
        None | Some("secret") => Target::Secret,
        Some("match") => Target::Match,
        Some("line") => Target::Line,
        Some(other) => return Err(err("allowlist regexTarget", format!("{other:?} (expected secret, match or line)"))),
    };
    let regexes = raw
        .regexes
        .iter()
        .map(|r| compile_regex(r).map_err(|m| err("allowlist regexes", m)))
        .collect::<Result<_, _>>()?;
    let paths =
        raw.paths.iter().map(|r| compile_regex(r).map_err(|m| err("allowlist paths", m))).collect::<Result<_, _>>()?;
    Ok(Allowlist {
        all,
        target,
        regexes,
        stopwords: raw.stopwords.iter().map(|s| s.to_ascii_lowercase().into_bytes()).collect(),
        paths,
        commits: raw.commits.clone(),
        target_rules: raw.target_rules.clone(),
        identifiers: raw.identifiers,
        strict: raw.strict,
    })
}

fn parse(text: &str) -> Result<RawConfig, ScanError> {
    toml::from_str(text).map_err(|e| ScanError::Toml(e.to_string().trim_end().to_string()))
}

impl Rules {
    /// The built-in catalogue (`rules.toml`), compiled once per process.
    pub fn builtin() -> &'static Rules {
        &BUILTIN
    }

    /// Compile a gitleaks-format TOML (`[[rules]]` with id, regex, path, keywords, entropy,
    /// secretGroup, allowlist(s); global `[allowlist]`/`[[allowlists]]`). With
    /// `extend_builtin` (or `[extend] useDefault = true` in the file) the built-in rules come
    /// first and a rule with the same id replaces the built-in one; `disabledRules` drops
    /// built-ins. Every problem names the rule id and key.
    pub fn from_gitleaks_toml(text: &str, extend_builtin: bool) -> Result<Rules, ScanError> {
        let user = parse(text)?;
        let extend = extend_builtin || user.extend.as_ref().is_some_and(|e| e.use_default);
        let mut rules: Vec<RawRule> = Vec::new();
        let mut globals: Vec<RawAllowlist> = Vec::new();
        if extend {
            let base = parse(BUILTIN_TOML)?;
            let disabled = user.extend.as_ref().map(|e| e.disabled_rules.clone()).unwrap_or_default();
            rules.extend(base.rules.into_iter().filter(|r| !disabled.contains(&r.id)));
            globals.extend(base.allowlist);
            globals.extend(base.allowlists);
        }
        let mut seen_user = std::collections::HashSet::new();
        for (index, r) in user.rules.into_iter().enumerate() {
            if r.id.is_empty() {
                return Err(ScanError::MissingId { index: index + 1 });
            }
            if !seen_user.insert(r.id.clone()) {
                return Err(ScanError::DuplicateId(r.id));
            }
            match rules.iter_mut().find(|b| b.id == r.id) {
                Some(existing) => *existing = r,
                None => rules.push(r),
            }
        }
        globals.extend(user.allowlist);
        globals.extend(user.allowlists);
        Self::compile(rules, &globals)
    }

    fn compile(raw_rules: Vec<RawRule>, raw_globals: &[RawAllowlist]) -> Result<Rules, ScanError> {
        let mut rules = Vec::with_capacity(raw_rules.len());
        let mut patterns: Vec<String> = Vec::new();
        let mut keyword_rule = Vec::new();
        let mut always = Vec::new();
        let mut strict_always = Vec::new();
        for raw in raw_rules {
            let id = raw.id.clone();
            let err = |key: &'static str, message: String| ScanError::Rule { rule: id.clone(), key, message };
            let regex = raw.regex.as_deref().map(compile_regex).transpose().map_err(|m| err("regex", m))?;
            let path = raw.path.as_deref().map(compile_regex).transpose().map_err(|m| err("path", m))?;
            if regex.is_none() && path.is_none() {
                return Err(err("regex", "a rule needs a regex or a path".into()));
            }
            if let (Some(g), Some(re)) = (raw.secret_group, &regex)
                && g >= re.captures_len()
            {
                return Err(err("secretGroup", format!("{g} but the regex has {} group(s)", re.captures_len() - 1)));
            }
            if let Some(e) = raw.entropy
                && !(0.0..=8.0).contains(&e)
            {
                return Err(err("entropy", format!("{e} (expected 0 to 8 bits)")));
            }
            let mut allowlists = Vec::new();
            for a in raw.allowlist.iter().chain(raw.allowlists.iter()) {
                allowlists.push(compile_allowlist(a, &err)?);
            }
            let low_confidence =
                raw.low_confidence.iter().map(|a| compile_allowlist(a, &err)).collect::<Result<Vec<_>, _>>()?;
            let idx = rules.len();
            let keywords: Vec<String> =
                raw.keywords.iter().filter(|k| !k.is_empty()).map(|k| k.to_ascii_lowercase()).collect();
            if keywords.is_empty() {
                if raw.strict_only { strict_always.push(idx) } else { always.push(idx) }
            }
            for k in &keywords {
                patterns.push(k.clone());
                keyword_rule.push(idx);
            }
            rules.push(Rule {
                id: raw.id,
                regex,
                path,
                secret_group: raw.secret_group,
                entropy: raw.entropy,
                allowlists,
                low_confidence,
                strict_only: raw.strict_only,
                // A rule without keywords (in a user's file) reads the whole input, as gitleaks'.
                wide: raw.wide || (keywords.is_empty() && !raw.strict_only),
                min_run: raw.min_run,
            });
        }
        let global = raw_globals
            .iter()
            .map(|a| compile_allowlist(a, &|key, message| ScanError::Allowlist { key, message }))
            .collect::<Result<Vec<_>, _>>()?;
        let longest_keyword = patterns.iter().map(String::len).max().unwrap_or(0);
        let mut wide_patterns: Vec<String> = Vec::new();
        let mut wide_keyword_rules: Vec<Vec<usize>> = Vec::new();
        for (p, &r) in patterns.iter().zip(&keyword_rule).filter(|&(_, &r)| rules[r].wide) {
            match wide_patterns.iter().position(|w| w == p) {
                Some(i) => wide_keyword_rules[i].push(r),
                None => {
                    wide_patterns.push(p.clone());
                    wide_keyword_rules.push(vec![r]);
                }
            }
        }
        // Where one could start is found by the prescan's vector pass, a byte pair at a time (an
        // automaton's prefilter keys on common letters, and lower-casing the input to search it
        // costs a pass over it); each place is then compared whole.
        let both_cases = |i: usize| {
            wide_patterns
                .iter()
                .flat_map(move |p| p.as_bytes().get(i).map_or(vec![], |&b| vec![b, b.to_ascii_uppercase()]))
        };
        let wide_leads = (!wide_patterns.is_empty()).then(|| Leads {
            first: ByteSet::new(both_cases(0)),
            // A keyword of one byte starts before anything.
            second: if wide_patterns.iter().any(|p| p.len() < 2) {
                ByteSet::new(0..=255)
            } else {
                ByteSet::new(both_cases(1))
            },
        });
        let wide_keywords = wide_patterns.into_iter().map(String::into_bytes).collect();
        let keywords = if patterns.is_empty() {
            None
        } else {
            Some(
                DFA::builder()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::Standard)
                    .build(&patterns)
                    .map_err(|e| ScanError::Toml(format!("keywords: {e}")))?,
            )
        };
        Ok(Rules {
            prefixes: Prefixes::new(&patterns, &keyword_rule)?,
            rules,
            keywords,
            keyword_rule,
            always,
            strict_always,
            wide_keywords,
            wide_keyword_rules,
            wide_leads,
            global,
            longest_keyword,
        })
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule ids, in order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.id.as_str())
    }

    /// Length of the longest keyword (for callers that window their input).
    pub fn longest_keyword(&self) -> usize {
        self.longest_keyword
    }

    /// False when no rule can match anywhere in `data` (no keyword occurs and every rule has
    /// keywords): a cheap test to skip work on text that cannot hold a finding. Keywords never
    /// span lines, so this also holds for any selection of `data`'s lines.
    pub fn may_match(&self, data: &[u8]) -> bool {
        !self.always.is_empty()
            || self.keywords.as_ref().is_some_and(|dfa| dfa.try_find(&Input::new(data)).is_ok_and(|m| m.is_some()))
    }

    /// As [`Rules::may_match`], looking inside encoded text as well: false only when no keyword
    /// occurs in `data` nor in anything its encoded segments decode to (the layers
    /// [`Rules::scan`] decodes). A base64- or hex-encoded key carries no keyword in its raw
    /// bytes, so a prefilter on the raw bytes alone would skip it. Encoded segments never span
    /// lines either, so this too holds for any selection of `data`'s lines.
    pub fn may_match_decoded(&self, data: &[u8]) -> bool {
        self.may_match(data) || self.decoded_may_match(data, 1)
    }

    fn decoded_may_match(&self, data: &[u8], depth: usize) -> bool {
        depth <= super::decode::MAX_DEPTH
            && super::decode::segments_in(data, &super::prescan::prescan(data, None))
                .iter()
                .any(|s| self.may_match(&s.text) || self.decoded_may_match(&s.text, depth + 1))
    }

    /// True when a global allowlist skips this path entirely (a paths-only allowlist).
    pub fn path_allowed(&self, path: &str) -> bool {
        self.global.iter().any(|a| {
            a.target_rules.is_empty()
                && a.regexes.is_empty()
                && a.stopwords.is_empty()
                && a.commits.is_empty()
                && a.paths.iter().any(|r| r.is_match(path.as_bytes()))
        })
    }

    /// Findings in `data`: byte spans of each secret, 1-based lines, sorted by position.
    pub fn scan(&self, data: &[u8]) -> Vec<Finding> {
        self.scan_with_context(data, Context::default())
    }

    /// As [`Rules::scan`], with the path and commit the bytes came from (for allowlists
    /// and path rules).
    pub fn scan_with_context(&self, data: &[u8], ctx: Context<'_>) -> Vec<Finding> {
        let mut out = Vec::new();
        self.scan_into(data, ctx, &mut out);
        out.sort_by(|a, b| (a.start, a.end, &a.rule_id).cmp(&(b.start, b.end, &b.rule_id)));
        assign_lines(data, &mut out, 0, 0);
        out
    }

    /// Unsorted findings without line numbers, offsets relative to `data`: the rules on `data`
    /// and on what its encoded segments decode to ([`super::layered`]).
    pub(crate) fn scan_into(&self, data: &[u8], ctx: Context<'_>, out: &mut Vec<Finding>) {
        super::layered::scan_into(Some(self), None, ctx, false, false, data, out);
    }

    /// The rules on `data` itself (no decoding). `strict`: also the strict-only rules, and what
    /// allowlists and low-confidence tables excuse (but for tables marked `strict`) reported as
    /// [`Confidence::Low`], which in strict mode means "found by strict mode alone".
    ///
    /// `windows`: only look there (where a credential could be, [`super::prescan`]): each rule
    /// whose keyword occurs in a window runs in that window alone, the look-around at its edges
    /// reading the bytes beyond; wide rules run over all of `data` when their keyword occurs at
    /// one of the places the prescan found one could start ([`Rules::wide_leads`]). `None`:
    /// every candidate rule over all of `data`.
    pub(crate) fn scan_layer(
        &self,
        data: &[u8],
        ctx: Context<'_>,
        strict: bool,
        windows: Option<(&[Window], &[usize])>,
        out: &mut Vec<Finding>,
    ) {
        let mut candidates = Vec::new();
        let Some((windows, leads)) = windows else {
            self.candidates(&self.keyword_hits_anywhere(data), strict, |_| true, &mut candidates);
            self.scan_range(data, (0, data.len()), &candidates, ctx, strict, out);
            return;
        };
        let wide = self.wide_candidates(data, leads, strict);
        if !wide.is_empty() {
            self.scan_range(data, (0, data.len()), &wide, ctx, strict, out);
        }
        let hits = self.keyword_hits(data, windows);
        for (w, hits) in windows.iter().zip(hits.chunks(self.hit_words())) {
            self.candidates(hits, strict, |r| !r.wide && r.min_run <= w.longest_run, &mut candidates);
            self.scan_range(data, (w.start, w.end), &candidates, ctx, strict, out);
        }
    }

    /// Where a wide rule's keyword could start: for [`super::prescan::prescan`] to find.
    pub(crate) fn wide_leads(&self) -> Option<&Leads> {
        self.wide_leads.as_ref()
    }

    /// The wide rules whose keywords occur in `data` at one of the `leads` (the places one could
    /// start, [`Rules::wide_leads`]), and wide rules without keywords.
    fn wide_candidates(&self, data: &[u8], leads: &[usize], strict: bool) -> Vec<usize> {
        let mut hit: Vec<usize> = self.always.iter().copied().filter(|&i| self.rules[i].wide).collect();
        let mut missing = self.wide_keywords.len();
        let mut seen = vec![false; missing];
        for &at in leads {
            if missing == 0 {
                break;
            }
            for (k, keyword) in self.wide_keywords.iter().enumerate() {
                if seen[k] || !data[at..].get(..keyword.len()).is_some_and(|w| w.eq_ignore_ascii_case(keyword)) {
                    continue;
                }
                (seen[k], missing) = (true, missing - 1);
                for &r in &self.wide_keyword_rules[k] {
                    if !hit.contains(&r) {
                        hit.push(r);
                    }
                }
            }
        }
        hit.retain(|&i| strict || !self.rules[i].strict_only);
        hit.sort_unstable();
        hit
    }

    /// The `candidates` over `data[start..end]`: matches start in it and end by its end;
    /// look-behinds see the bytes before it.
    fn scan_range(
        &self,
        data: &[u8],
        (start, end): (usize, usize),
        candidates: &[usize],
        ctx: Context<'_>,
        strict: bool,
        out: &mut Vec<Finding>,
    ) {
        let hay = &data[..end];
        for &idx in candidates {
            let rule = &self.rules[idx];
            if let Some(p) = &rule.path {
                let Some(path) = ctx.path else { continue };
                if !p.is_match(path.as_bytes()) {
                    continue;
                }
                if rule.regex.is_none() {
                    if !out.iter().any(|f| f.rule_id == rule.id && f.start == 0 && f.end == 0) {
                        out.push(Finding {
                            rule_id: rule.id.clone(),
                            start: 0,
                            end: 0,
                            line: 0,
                            secret_redacted: redact(path.as_bytes()),
                            confidence: Confidence::High,
                        });
                    }
                    continue;
                }
            }
            let Some(re) = &rule.regex else { continue };
            // The next match is looked for from the secret's start, not the match's end: in
            // `a_token=x.unk_token,b=SECRET` the first (rejected) match would otherwise hide the
            // second name.
            let mut from = start;
            while from <= hay.len() {
                let Some(caps) = re.captures_at(hay, from) else { break };
                let Some(whole) = caps.get(0) else { break };
                let secret = match rule.secret_group {
                    Some(g) => caps.get(g),
                    None => (1..caps.len()).filter_map(|g| caps.get(g)).find(|m| !m.is_empty()).or(Some(whole)),
                };
                from = match secret {
                    Some(m) if m.start() > whole.start() => m.start(),
                    _ => whole.end().max(whole.start() + 1),
                };
                let Some(secret) = secret else { continue };
                if secret.is_empty() || out.iter().any(|f| f.rule_id == rule.id && f.start == secret.start()) {
                    continue;
                }
                let s = secret.as_bytes();
                // Too little entropy to be random... unless strict mode, which reads the shape:
                // 16 or more bytes with letters and digits is a key's shape however it is filled
                // (`SG.FAKE_TEST_KEY_0000…`); strict alone then decides it.
                let mut low_entropy = false;
                if let Some(min) = rule.entropy
                    && entropy(s) <= min
                {
                    let key_shaped =
                        s.len() >= 16 && s.iter().any(u8::is_ascii_alphabetic) && s.iter().any(u8::is_ascii_digit);
                    if !(strict && key_shaped) {
                        continue;
                    }
                    low_entropy = true;
                }
                let line_start = data[..whole.start()].iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
                let line_end =
                    data[whole.end()..].iter().position(|&b| b == b'\n').map_or(data.len(), |p| whole.end() + p);
                let hit = Hit { secret: s, whole: whole.as_bytes(), line: &data[line_start..line_end] };
                let allowed = rule.allowlists.iter().any(|a| a.allows(&hit, ctx))
                    || self.global.iter().any(|a| {
                        (a.target_rules.is_empty() || a.target_rules.contains(&rule.id)) && a.allows(&hit, ctx)
                    });
                let low = rule.low_confidence.iter().filter(|a| a.allows(&hit, ctx)).map(|a| a.strict).max();
                let confidence = match (strict, allowed, low) {
                    // Strict mode reads the shape: what an allowlist or a low-confidence table
                    // excuses is still found, as strict's own finding; only tables that say
                    // nothing about the shape (`strict = true`) still excuse.
                    (true, _, Some(true)) => continue,
                    (true, true, _) | (true, false, Some(false)) => Confidence::Low,
                    // A strict-only rule's finding, or one its entropy would have excused, is
                    // strict's own too.
                    (true, false, None) if rule.strict_only || low_entropy => Confidence::Low,
                    (false, true, _) => continue,
                    (false, false, Some(_)) if !ctx.low_confidence => continue,
                    (false, false, Some(_)) => Confidence::Low,
                    (_, false, None) => Confidence::High,
                };
                out.push(Finding {
                    rule_id: rule.id.clone(),
                    start: secret.start(),
                    end: secret.end(),
                    line: 0,
                    secret_redacted: redact(s),
                    confidence,
                });
            }
        }
        // A generic finding inside a specific one is the same secret: keep the specific id.
    }

    /// How many u64s hold a bit per rule.
    fn hit_words(&self) -> usize {
        self.rules.len().div_ceil(64)
    }

    /// For each of `windows`, a bit per rule whose keyword occurs in it ([`Rules::hit_words`]
    /// u64s a window). The automaton of the keywords' first bytes ([`Prefixes`]) steps through
    /// each window, and each keyword whose first bytes it finds is compared whole. Each step
    /// waits on two reads (the byte's class, then the next state), so a window is cut into
    /// [`LANES`] pieces of one length, overlapping by [`PREFIX`] bytes less one (each keyword's
    /// first bytes lie whole in one of them), and the automaton steps through them side by
    /// side: the steps of different pieces do not wait on each other.
    fn keyword_hits(&self, data: &[u8], windows: &[Window]) -> Vec<u64> {
        const LANES: usize = 4;
        let words = self.hit_words();
        let mut hits = vec![0u64; windows.len() * words];
        let Some(Prefixes { dfa, keywords }) = &self.prefixes else { return hits };
        let Ok(start) = dfa.start_state(Anchored::No) else { return hits };
        let overlap = PREFIX - 1;
        for (w, hits) in windows.iter().zip(hits.chunks_mut(words)) {
            let text = &data[w.start..w.end];
            // Marks the rules of the keywords that lie whole in the window from where a
            // pattern of the match state `state`, ending before `end`, starts.
            let mut found = |state, end: usize| {
                for m in 0..dfa.match_len(state) {
                    let p = dfa.match_pattern(state, m);
                    let from = end - dfa.pattern_len(p);
                    for (keyword, r) in &keywords[p.as_usize()] {
                        if text[from..].get(..keyword.len()).is_some_and(|t| t.eq_ignore_ascii_case(keyword)) {
                            hits[r / 64] |= 1 << (r % 64);
                        }
                    }
                }
            };
            // LANES pieces of `len` bytes, the last ending where the text does.
            let len = (text.len() + (LANES - 1) * overlap).div_ceil(LANES);
            if len + overlap >= text.len() {
                let mut state = start;
                for (i, &b) in text.iter().enumerate() {
                    state = dfa.next_state(Anchored::No, state, b);
                    if dfa.is_match(state) {
                        found(state, i + 1);
                    }
                }
                continue;
            }
            let from: [usize; LANES] = std::array::from_fn(|j| (j * (len - overlap)).min(text.len() - len));
            let piece = |j: usize| &text[from[j]..from[j] + len];
            let mut states = [start; LANES];
            for (i, (((&a, &b), &c), &d)) in piece(0).iter().zip(piece(1)).zip(piece(2)).zip(piece(3)).enumerate() {
                let [s0, s1, s2, s3] = states;
                states = [
                    dfa.next_state(Anchored::No, s0, a),
                    dfa.next_state(Anchored::No, s1, b),
                    dfa.next_state(Anchored::No, s2, c),
                    dfa.next_state(Anchored::No, s3, d),
                ];
                if states.iter().any(|&s| dfa.is_match(s)) {
                    for (j, &s) in states.iter().enumerate().filter(|&(_, &s)| dfa.is_match(s)) {
                        found(s, from[j] + i + 1);
                    }
                }
            }
        }
        hits
    }

    /// A bit per rule whose keyword occurs anywhere in `data`, by the library's overlapping
    /// search (whose prefilter skips ahead to where a keyword could start).
    fn keyword_hits_anywhere(&self, data: &[u8]) -> Vec<u64> {
        let mut hits = vec![0u64; self.hit_words()];
        if let Some(dfa) = &self.keywords {
            let (input, mut state) = (Input::new(data), OverlappingState::start());
            while dfa.try_find_overlapping(&input, &mut state).is_ok()
                && let Some(m) = state.get_match()
            {
                let r = self.keyword_rule[m.pattern().as_usize()];
                hits[r / 64] |= 1 << (r % 64);
            }
        }
        hits
    }

    /// Into `out`, in rule order: the rules `hits` marks ([`Rules::keyword_hits`]) and those
    /// without keywords, that `keep` keeps; strict-only rules only when `strict`.
    fn candidates(&self, hits: &[u64], strict: bool, keep: impl Fn(&Rule) -> bool, out: &mut Vec<usize>) {
        out.clear();
        out.extend(self.always.iter().chain(if strict { &self.strict_always[..] } else { &[] }));
        for (k, &word) in hits.iter().enumerate() {
            let mut word = word;
            while word != 0 {
                out.push(64 * k + word.trailing_zeros() as usize);
                word &= word - 1;
            }
        }
        out.retain(|&i| keep(&self.rules[i]) && (strict || !self.rules[i].strict_only));
        out.sort_unstable();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_found_in_windows_stepped_through_together_as_in_each_alone() {
        let rules = Rules::builtin();
        let text = "x PASSWORD= token ghp_ and Key, a CURL -H then apikey and AKIA12, xoxb- SECRET_KEY s. end";
        let data = text.as_bytes();
        // Nine windows (not a multiple of the lanes), of other lengths, one empty, some overlapping.
        let spans =
            [(0, 12), (5, 40), (40, 40), (30, 31), (0, data.len()), (60, 75), (70, data.len()), (2, 9), (50, 88)];
        let windows: Vec<Window> = spans.iter().map(|&(start, end)| Window { start, end, longest_run: 0 }).collect();
        let hits = rules.keyword_hits(data, &windows);
        for (w, hits) in windows.iter().zip(hits.chunks(rules.hit_words())) {
            let alone = rules.keyword_hits_anywhere(&data[w.start..w.end]);
            assert_eq!(hits, &alone[..], "{:?}", &text[w.start..w.end]);
        }
        assert!(rules.keyword_hits_anywhere(data).iter().map(|w| w.count_ones()).sum::<u32>() > 5);
        // Every window of a text full of keywords (long and short, in other cases, cut short
        // at the window's end), as many at once as fit: each keyword at every place of the
        // pieces a window is stepped through in.
        let text = "GitHub_PAT_x hooks.slack.com S. sk_live_ pypi-AgEIcHlwaS5vcmc PYPI-agei Datadog -----BEGIN sg.";
        let data = text.as_bytes();
        for start in 0..40 {
            let windows: Vec<Window> =
                (start + 1..=data.len()).map(|end| Window { start, end, longest_run: 0 }).collect();
            let hits = rules.keyword_hits(data, &windows);
            for (w, hits) in windows.iter().zip(hits.chunks(rules.hit_words())) {
                let alone = rules.keyword_hits_anywhere(&data[w.start..w.end]);
                assert_eq!(hits, &alone[..], "{:?}", &text[w.start..w.end]);
            }
        }
    }

    /// Fake, format-valid values are assembled at runtime so this source stays clean.
    fn fake(prefix: &str, alphabet: &str, n: usize) -> String {
        let a = alphabet.as_bytes();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let body: String = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                a[(x % a.len() as u64) as usize] as char
            })
            .collect();
        format!("{prefix}{body}")
    }

    const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

    #[test]
    fn identifiers_are_told_from_key_material() {
        for id in [
            "P256.Signing.PrivateKey",
            "EC_prime256v1",
            "S3_BUCKET_EFFECTIVE_PERMISSION",
            "InvalidS3KeyPrefixFault",
            "Key_iframe.m3u8",
            "TR31_E2_EMV_MKEY_INTEGRITY",
            "KeyToInclude2",
            "NormalBrushGradient1",
            "REF_ID_923.properties",
            "v4-unsigned-body",
            "result_record_secret-299",
            "header_result-610",
            "DYNATRACE_API_KEY=",
            "HTTPServerConfig",
        ] {
            assert!(reads_like_identifier(id.as_bytes()), "{id} reads like an identifier");
        }
        for key in [
            fake("", ALNUM, 24).as_str(),
            fake("", "0123456789abcdef", 40).as_str(),
            "4b18315e-6b7d-4337-b449-5d38f5a189ec",
            "dGhpcyBpcyBhIHRlc3Qgc3RyaW5nIHdpdGggbm8gcmVhbCBrZXk=",
            "bXlwYXNzd29yZA==",
            "sm7p90vzq0dxozabk9pj6905",
            "L1aW4aubDFB7yfras2S1mN3bqg9nwySY8nkoLmJebSLD5BWv3ENZ",
            "s8pnnxNVzjWyrvYdFUQq5llS1PX2zhPXmccZv99h7uQ=",
            "cks-1234567890abcdef0",
        ] {
            assert!(!reads_like_identifier(key.as_bytes()), "{key} is key material");
        }
        let mut rng = crate::scan::corpus::FakeRng::new(11);
        let random: Vec<String> = (0..2000).map(|i| rng.alnum(30 + i % 11)).collect();
        let as_identifiers = random.iter().filter(|k| reads_like_identifier(k.as_bytes())).count();
        assert!(as_identifiers * 100 < random.len(), "{as_identifiers} of 2000 random keys read like identifiers");
    }

    #[test]
    fn encoded_secrets_are_found_at_the_encoded_text() {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let kind = ["PRIVATE", " KEY"].concat();
        let pem = format!("-----BEGIN{kind}-----\n{}\n-----END{kind}-----\n", fake("MII", ALNUM, 120));
        let yaml = format!("kind: Secret\ndata:\n  tls.key: {}\n  other: x\n", b64(&pem));
        let found = Rules::builtin().scan(yaml.as_bytes());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].rule_id.as_str(), found[0].line), ("private-key", 3));
        assert_eq!(&yaml[found[0].start..found[0].end], b64(&pem), "the span is the encoded text");

        // Three layers: percent-encoding of base64 of an assignment.
        let inner = b64(&format!("secret={}", fake("", ALNUM, 32)));
        let percent: String =
            inner.bytes().map(|b| if b == b'=' { "%3D".to_string() } else { (b as char).to_string() }).collect();
        let layered = format!("GET /?q={} HTTP/1.1\n", b64(&percent));
        let found = Rules::builtin().scan(layered.as_bytes());
        assert!(found.iter().any(|f| f.rule_id == "generic-api-key"), "{found:?}");

        // Decoding that yields no text is not a finding.
        assert!(Rules::builtin().scan(b"id: AAAAB3NzaC1yc2EAAAADAQABAAABAQ\n").is_empty());
    }

    /// The built-in rules with a `minRun` are still found as egress DLP reads, which runs them
    /// only around a run that long: each match lies whole in one run.
    #[test]
    fn min_run_rules_are_found_around_their_runs() {
        for (text, rule) in [
            (format!("vault login {}\n", fake("s.", ALNUM, 24)), "vault-service-token"),
            (format!("VAULT_TOKEN={}", fake("hvs.", ALNUM, 95)), "vault-service-token"),
            (format!("twilio {}", fake("SK", "0123456789abcdef", 32)), "twilio-api-key"),
            (format!("mailgun: {}", fake("key-", "0123456789abcdef", 32)), "mailgun-private-api-token"),
        ] {
            let found = super::super::scan_outbound(
                Some(Rules::builtin()),
                None,
                super::super::Mode::Standard,
                text.as_bytes(),
            );
            assert_eq!(found.iter().map(|f| f.rule_id.as_str()).collect::<Vec<_>>(), [rule], "{text}");
        }
        let min_run = |id: &str| Rules::builtin().rules.iter().find(|r| r.id == id).map(|r| r.min_run);
        let ids = ["vault-service-token", "twilio-api-key", "mailgun-private-api-token"];
        assert_eq!(ids.map(min_run), [Some(26), Some(34), Some(36)]);
    }

    #[test]
    fn builtin_compiles_with_many_families() {
        let r = Rules::builtin();
        assert!(r.len() >= 30, "{} rules", r.len());
    }

    #[test]
    fn finds_a_token_with_span_line_and_redaction() {
        let token = fake(&["gh", "p_"].concat(), ALNUM, 36);
        let text = format!("first line\nlet t = \"{token}\";\n");
        let found = Rules::builtin().scan(text.as_bytes());
        assert_eq!(found.len(), 1, "{found:?}");
        let f = &found[0];
        assert_eq!(f.rule_id, "github-pat");
        assert_eq!(f.line, 2);
        assert_eq!(&text.as_bytes()[f.start..f.end], token.as_bytes());
        assert_eq!(f.secret_redacted, format!("{}…", &token[..4]));
    }

    #[test]
    fn may_match_is_the_keyword_prefilter() {
        let r = Rules::builtin();
        assert!(!r.may_match(b"fn main() { println!(\"hello\"); }"));
        assert!(r.may_match(b"let GHP_ = 1;"));
        let always = Rules::from_gitleaks_toml("[[rules]]\nid = \"a\"\nregex = 'x'\n", false).unwrap();
        assert!(always.may_match(b"anything"), "a rule without keywords runs on everything");
    }

    #[test]
    fn may_match_decoded_sees_keywords_inside_encodings() {
        use base64::Engine as _;
        let r = Rules::builtin();
        let key = fake(&["AK", "IA"].concat(), "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&key);
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("id={key}"));
        let hexed: String = key.bytes().map(|b| format!("{b:02x}")).collect();
        let twice = base64::engine::general_purpose::STANDARD.encode(format!("blob: {b64}"));
        for encoded in [&b64, &url, &hexed, &twice] {
            let text = format!("value: {encoded}\n");
            assert!(!r.may_match(text.as_bytes()), "{text}: no keyword in the raw bytes");
            assert!(r.may_match_decoded(text.as_bytes()), "{text}: the keyword is in the decoded text");
            assert!(!r.scan(text.as_bytes()).is_empty(), "{text}: and the scan finds it");
        }
        assert!(!r.may_match_decoded(b"fn main() { println!(\"ThisIsACamelCaseIdentifierName\"); }"));
    }

    #[test]
    fn keyword_is_case_insensitive_but_regex_decides() {
        // The keyword occurs, the format does not: no finding.
        let text = "GHP_ is mentioned but no token follows";
        assert!(Rules::builtin().scan(text.as_bytes()).is_empty());
    }

    #[test]
    fn generic_assignment_needs_entropy_and_digits() {
        let value = fake("", ALNUM, 24);
        let text = format!("db_password = \"{value}\"\n");
        let found = Rules::builtin().scan(text.as_bytes());
        assert_eq!(found.iter().map(|f| f.rule_id.as_str()).collect::<Vec<_>>(), ["generic-api-key"]);
        for clean in
            ["password = \"aaaaaaaaaaaaaa1\"", "token = state.queue.answer(id)", "secret_key = \"/etc/app/key.pem\""]
        {
            assert!(Rules::builtin().scan(clean.as_bytes()).is_empty(), "{clean}");
        }
    }

    #[test]
    fn specific_rule_wins_over_generic_on_the_same_secret() {
        let token = fake(&["gh", "p_"].concat(), ALNUM, 36);
        let text = format!("github_token = \"{token}\"");
        let found = Rules::builtin().scan(text.as_bytes());
        assert_eq!(found.iter().map(|f| f.rule_id.as_str()).collect::<Vec<_>>(), ["github-pat"]);
    }

    #[test]
    fn user_toml_extends_or_replaces() {
        let cfg = r#"
[[rules]]
id = "acme-token"
regex = '''\b(acme_[a-z0-9]{16})\b'''
keywords = ["acme_"]
"#;
        let text =
            format!("x {} y {}", fake("acme_", "abcdefghij0123456789", 16), fake(&["gh", "p_"].concat(), ALNUM, 36));
        let only = Rules::from_gitleaks_toml(cfg, false).unwrap();
        assert_eq!(only.scan(text.as_bytes()).iter().map(|f| f.rule_id.as_str()).collect::<Vec<_>>(), ["acme-token"]);
        let both = Rules::from_gitleaks_toml(cfg, true).unwrap();
        assert_eq!(
            both.scan(text.as_bytes()).iter().map(|f| f.rule_id.as_str()).collect::<Vec<_>>(),
            ["acme-token", "github-pat"]
        );
        let via_extend = Rules::from_gitleaks_toml(&format!("[extend]\nuseDefault = true\n{cfg}"), false).unwrap();
        assert_eq!(via_extend.len(), both.len());
    }

    #[test]
    fn user_allowlists_stopwords_and_paths() {
        let cfg = r#"
[[rules]]
id = "acme-token"
regex = '''acme_([a-z0-9]{16})'''
keywords = ["acme_"]
secretGroup = 1
[[rules.allowlists]]
stopwords = ["test"]
[[allowlists]]
paths = ['''^fixtures/''']
"#;
        let rules = Rules::from_gitleaks_toml(cfg, false).unwrap();
        let hit = "acme_0123456789abcdef";
        let f = rules.scan(hit.as_bytes());
        assert_eq!((f[0].start, f[0].end), (5, 21));
        assert!(rules.scan(b"acme_test456789abcdef").is_empty());
        assert!(rules.path_allowed("fixtures/a.txt"));
        assert!(!rules.path_allowed("src/a.txt"));
        let ctx = Context { path: Some("fixtures/a.txt"), ..Context::default() };
        assert!(rules.scan_with_context(hit.as_bytes(), ctx).is_empty());
    }

    #[test]
    fn bad_toml_names_the_rule_and_key() {
        let e = Rules::from_gitleaks_toml("[[rules]]\nid = \"broken\"\nregex = '''(unclosed'''\n", false).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("\"broken\"") && msg.contains("regex"), "{msg}");
        let e =
            Rules::from_gitleaks_toml("[[rules]]\nid = \"g\"\nregex = 'a(b)'\nsecretGroup = 3\n", false).unwrap_err();
        assert!(e.to_string().contains("secretGroup"), "{e}");
        let e = Rules::from_gitleaks_toml("[[rules]]\nregex = 'a'\n", false).unwrap_err();
        assert!(e.to_string().contains("missing id"), "{e}");
        let e = Rules::from_gitleaks_toml("rules = 3", false).unwrap_err();
        assert!(e.to_string().contains("rules"), "{e}");
        let e = Rules::from_gitleaks_toml(
            "[[rules]]\nid = \"x\"\nregex = 'a'\n[[rules.allowlists]]\ncondition = \"XOR\"\n",
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("\"x\"") && e.to_string().contains("condition"), "{e}");
    }
}
