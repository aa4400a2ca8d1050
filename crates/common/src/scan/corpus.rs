//! Fake but format-valid credentials for tests, fuzzing and benchmarks: one generator per
//! built-in rule family. Values are assembled at runtime from a seeded generator, so no
//! credential-shaped literal sits in the source tree (which must scan clean itself).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// Deterministic xorshift64* generator (reproducible corpora).
#[derive(Debug, Clone)]
pub struct FakeRng(u64);

const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
const DIGITS: &str = "0123456789";
const HEX: &str = "0123456789abcdef";

impl FakeRng {
    pub fn new(seed: u64) -> Self {
        FakeRng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `n` characters drawn from `alphabet`, with at least one digit when the alphabet has
    /// digits and `n >= 8` (so generated values look like real tokens).
    pub fn chars(&mut self, alphabet: &str, n: usize) -> String {
        let a = alphabet.as_bytes();
        let mut s: Vec<u8> = (0..n).map(|_| a[self.below(a.len())]).collect();
        let digits: Vec<u8> = a.iter().copied().filter(u8::is_ascii_digit).collect();
        if n >= 8 && !digits.is_empty() && !s.iter().any(u8::is_ascii_digit) {
            let at = self.below(n);
            s[at] = digits[self.below(digits.len())];
        }
        String::from_utf8(s).unwrap_or_default()
    }

    pub fn alnum(&mut self, n: usize) -> String {
        self.chars(&[UPPER, LOWER, DIGITS].concat(), n)
    }

    pub fn hex(&mut self, n: usize) -> String {
        self.chars(HEX, n)
    }

    pub fn b64url(&mut self, n: usize) -> String {
        self.chars(&[UPPER, LOWER, DIGITS, "_-"].concat(), n)
    }
}

/// One credential family: the rule id that must report it and a generator returning the
/// secret value.
#[derive(Clone, Copy)]
pub struct Family {
    pub rule_id: &'static str,
    pub make: fn(&mut FakeRng) -> String,
    /// How the value sits in a line of code or config (`{}` is the value).
    pub template: &'static str,
}

impl Family {
    /// A line containing a fresh value, and the value.
    pub fn line(&self, rng: &mut FakeRng) -> (String, String) {
        let v = (self.make)(rng);
        (self.template.replace("{}", &v), v)
    }
}

fn cat(parts: &[&str]) -> String {
    parts.concat()
}

/// Every family the built-in rules cover, with a generator.
pub fn families() -> Vec<Family> {
    macro_rules! fam {
        ($id:literal, $tpl:literal, |$r:ident| $e:expr) => {
            Family { rule_id: $id, template: $tpl, make: |$r: &mut FakeRng| $e }
        };
    }
    vec![
        fam!("aws-access-token", "aws_access_key_id = {}", |r| cat(&[
            "AK",
            "IA",
            &r.chars("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)
        ])),
        fam!("gcp-api-key", "  \"api_key\": \"{}\",", |r| cat(&["AI", "za", &r.b64url(35)])),
        fam!("azure-ad-client-secret", "AZURE_CLIENT_SECRET=\"{}\"", |r| cat(&[
            &r.alnum(3),
            &r.chars(DIGITS, 1),
            "Q~",
            &r.alnum(32)
        ])),
        fam!("digitalocean-pat", "export DO_TOKEN={}", |r| cat(&["dop", "_v1_", &r.hex(64)])),
        fam!("digitalocean-access-token", "oauth: {}", |r| cat(&["doo", "_v1_", &r.hex(64)])),
        fam!("heroku-api-key-v2", "HEROKU_API_KEY={}", |r| cat(&["HRKU", "-AA", &r.b64url(58)])),
        fam!("databricks-api-token", "token = \"{}\"", |r| cat(&["da", "pi", &r.hex(32)])),
        fam!("hashicorp-tf-api-token", "credentials \"app.terraform.io\" {{ token = \"{}\" }}", |r| cat(&[
            &r.chars(&cat(&[LOWER, DIGITS]), 14),
            ".atlas",
            "v1.",
            &r.chars(&cat(&[LOWER, DIGITS]), 64)
        ])),
        fam!("pulumi-api-token", "PULUMI_ACCESS_TOKEN={}", |r| cat(&["pul", "-", &r.hex(40)])),
        fam!("doppler-api-token", "doppler: {}", |r| cat(&["dp.", "pt.", &r.alnum(43)])),
        fam!("age-secret-key", "# key: {}", |r| cat(&[
            "AGE-SECRET",
            "-KEY-1",
            &r.chars("QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", 58)
        ])),
        fam!("github-pat", "let token = \"{}\";", |r| cat(&["gh", "p_", &r.alnum(36)])),
        fam!("github-oauth", "GITHUB_OAUTH={}", |r| cat(&["gh", "o_", &r.alnum(36)])),
        fam!("github-app-token", "installation token {} here", |r| cat(&["gh", "s_", &r.alnum(36)])),
        fam!("github-refresh-token", "refresh: '{}'", |r| cat(&["gh", "r_", &r.alnum(36)])),
        fam!("github-fine-grained-pat", "GH_TOKEN={}", |r| cat(&["github", "_pat_", &r.alnum(22), "_", &r.alnum(59)])),
        fam!("gitlab-pat", "gitlab_token: {}", |r| cat(&["gl", "pat-", &r.b64url(20)])),
        fam!("gitlab-ptt", "curl -F token={} https://gitlab.example/api", |r| cat(&["gl", "ptt-", &r.hex(40)])),
        fam!("gitlab-rrt", "registration-token: {}", |r| cat(&["GR134", "8941", &r.b64url(20)])),
        fam!("gitlab-deploy-token", "deploy {}", |r| cat(&["gl", "dt-", &r.alnum(20)])),
        fam!("npm-access-token", "//registry.npmjs.org/:_authToken={}", |r| cat(&["np", "m_", &r.alnum(36)])),
        fam!("pypi-upload-token", "password = {}", |r| cat(&["pypi-AgEIcHlw", "aS5vcmc", &r.b64url(70)])),
        fam!("rubygems-api-token", ":rubygems_api_key: {}", |r| cat(&["ruby", "gems_", &r.hex(48)])),
        fam!("slack-bot-token", "SLACK_BOT_TOKEN = '{}'", |r| cat(&[
            "xo",
            "xb-",
            &r.chars(DIGITS, 12),
            "-",
            &r.chars(DIGITS, 13),
            "-",
            &r.alnum(24)
        ])),
        fam!("slack-user-token", "slack user {}", |r| cat(&[
            "xo",
            "xp-",
            &r.chars(DIGITS, 12),
            "-",
            &r.chars(DIGITS, 12),
            "-",
            &r.chars(DIGITS, 12),
            "-",
            &r.hex(32)
        ])),
        fam!("slack-app-token", "SLACK_APP_TOKEN={}", |r| cat(&[
            "xa",
            "pp-1-A",
            &r.chars(&cat(&[UPPER, DIGITS]), 10),
            "-",
            &r.chars(DIGITS, 13),
            "-",
            &r.hex(64)
        ])),
        fam!("slack-webhook-url", "webhook: {}", |r| cat(&[
            "https://hooks.",
            "slack.com/services/T",
            &r.chars(&cat(&[UPPER, DIGITS]), 8),
            "/B",
            &r.chars(&cat(&[UPPER, DIGITS]), 10),
            "/",
            &r.alnum(24)
        ])),
        fam!("telegram-bot-api-token", "telegram_bot_token = \"{}\"", |r| cat(&[
            &r.chars(DIGITS, 10),
            ":A",
            &r.b64url(34)
        ])),
        fam!("stripe-access-token", "Stripe.api_key = \"{}\"", |r| cat(&["sk", "_live_", &r.alnum(24)])),
        fam!("square-access-token", "square: {}", |r| cat(&["sq0", "atp-", &r.b64url(22)])),
        fam!("shopify-access-token", "X-Shopify-Access-Token: {}", |r| cat(&["shp", "at_", &r.hex(32)])),
        fam!("shopify-shared-secret", "shared_secret: {}", |r| cat(&["shp", "ss_", &r.hex(32)])),
        fam!("twilio-api-key", "TWILIO_API_KEY={}", |r| cat(&["S", "K", &r.hex(32)])),
        fam!("sendgrid-api-token", "sg = SendGridAPIClient(\"{}\")", |r| cat(&[
            "S",
            "G.",
            &r.b64url(22),
            ".",
            &r.b64url(43)
        ])),
        fam!("mailgun-private-api-token", "auth=(\"api\", \"{}\")", |r| cat(&["ke", "y-", &r.hex(32)])),
        fam!("openai-api-key", "OPENAI_API_KEY={}", |r| cat(&[
            "sk-",
            "proj-",
            &r.b64url(64),
            "T3Blbk",
            "FJ",
            &r.b64url(64)
        ])),
        fam!("anthropic-api-key", "ANTHROPIC_API_KEY=\"{}\"", |r| cat(&["sk-ant", "-api03-", &r.b64url(93), "AA"])),
        fam!("huggingface-access-token", "HF_TOKEN={}", |r| cat(&["h", "f_", &r.chars(&cat(&[UPPER, LOWER]), 34)])),
        fam!("perplexity-api-key", "PPLX_KEY={}", |r| cat(&["pp", "lx-", &r.alnum(48)])),
        fam!("datadog-access-token", "DATADOG_APP_KEY = \"{}\"", |r| r.hex(40)),
        fam!("sentry-user-token", "SENTRY_AUTH_TOKEN={}", |r| cat(&["sntr", "yu_", &r.hex(64)])),
        fam!("grafana-service-account-token", "grafana: {}", |r| cat(&["gl", "sa_", &r.alnum(32), "_", &r.hex(8)])),
        fam!("new-relic-user-api-key", "NEW_RELIC_API_KEY={}", |r| cat(&[
            "NR",
            "AK-",
            &r.chars(&cat(&[UPPER, DIGITS]), 27)
        ])),
        fam!("linear-api-key", "LINEAR_API_KEY={}", |r| cat(&["lin", "_api_", &r.alnum(40)])),
        fam!("postman-api-token", "postman {}", |r| cat(&["PM", "AK-", &r.hex(24), "-", &r.hex(34)])),
        fam!("private-key", "{}", |r| {
            let body: Vec<u8> = (0..270).map(|_| r.next_u64() as u8).collect();
            let b64 = STANDARD.encode(body);
            let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or("")).collect();
            cat(&["-----BEGIN RSA ", "PRIVATE KEY-----\n", &lines.join("\n"), "\n-----END RSA ", "PRIVATE KEY-----"])
        }),
        fam!("jwt", "Authorization: Bearer {}", |r| {
            let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
            let payload =
                URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"{}","iat":{}}}"#, r.alnum(12), r.chars(DIGITS, 10)));
            cat(&[&header, ".", &payload, ".", &r.b64url(43)])
        }),
        fam!("generic-api-key", "db_password = \"{}\"", |r| r.alnum(20)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{Mode, Rules, scan_outbound};

    #[test]
    fn every_family_is_found_by_its_rule_and_only_it() {
        let rules = Rules::builtin();
        let fams = families();
        assert!(fams.len() >= 30);
        let ids: Vec<&str> = rules.ids().collect();
        for seed in 0..20 {
            let mut rng = FakeRng::new(seed);
            for f in &fams {
                assert!(ids.contains(&f.rule_id), "{} is not a built-in rule", f.rule_id);
                let (line, value) = f.line(&mut rng);
                // As the git gate reads, and as egress DLP does (only around what looks like a
                // credential: each rule's `minRun` must hold for its family).
                for found in
                    [rules.scan(line.as_bytes()), scan_outbound(Some(rules), None, Mode::Standard, line.as_bytes())]
                {
                    let got: Vec<(&str, &str)> =
                        found.iter().map(|x| (x.rule_id.as_str(), &line[x.start..x.end])).collect();
                    assert!(
                        got.len() == 1 && got[0].0 == f.rule_id && value.contains(got[0].1),
                        "seed {seed} line {line:?}: {got:?}"
                    );
                }
            }
        }
    }
}
