//! `synthd check` (and `sync`) against broken configs: every mistake exits 2
//! with one line naming the key path, never a panic and never a secret; the
//! shipped example config passes.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const INLINE_TOKEN: &str = "tok-Check-Inline-3141";

/// A valid config; each case below breaks one thing in it.
fn base(state: &Path) -> String {
    format!(
        r#"[daemon]
state_dir = {state:?}
log_format = "json"

[providers.hr]
base_url = "http://127.0.0.1:9/v1"
auth = {{ type = "bearer", token = "{INLINE_TOKEN}" }}
pagination = {{ type = "page", size = 100 }}
records = "/data"
id = "/id"
timeout = "30s"

[providers.hr.resources.hris_employees]
path = "/employees"
ignore = ["/last_seen_at"]

[[accounts]]
id = "acme"
provider = "hr"
interval = "15m"

[[webhooks]]
id = "hr-sync"
name = "HR sync"
url = "http://127.0.0.1:9/hook?token=abc"
events = ["hris_employees.*", "account.*"]
secret = "{SECRET}"
timeout = "10s"
"#,
        state = state.display().to_string()
    )
}

/// Runs `synthd --config <file> <args>` with `vars` set; returns the output.
async fn run(config: &Path, args: &[&str], vars: &[(&str, &str)]) -> Out {
    let mut cmd = std::process::Command::new(synthd_bin());
    cmd.arg("--config").arg(config).args(args);
    clean_env(&mut cmd);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    run_with_deadline(cmd, Duration::from_secs(30)).await
}

/// Turns the base config text (and the test's directory) into a broken one.
type Edit = Box<dyn Fn(String, &Path) -> String>;

/// One broken config: `edit` turns the base text into it.
struct Case {
    name: &'static str,
    edit: Edit,
    path: &'static str,
    /// Text that must not appear in the output (a secret in the file).
    hidden: Option<&'static str>,
}

fn replace(from: &'static str, to: &'static str) -> Edit {
    Box::new(move |text: String, _: &Path| {
        assert!(
            text.contains(from),
            "case edit: {from:?} not in the base config"
        );
        text.replacen(from, to, 1)
    })
}

fn append(extra: &'static str) -> Edit {
    Box::new(move |text: String, _: &Path| format!("{text}\n{extra}\n"))
}

fn case(name: &'static str, edit: Edit, path: &'static str) -> Case {
    Case {
        name,
        edit,
        path,
        hidden: None,
    }
}

fn cases() -> Vec<Case> {
    let secret_line = format!("secret = \"{SECRET}\"");
    let secret_line: &'static str = Box::leak(secret_line.into_boxed_str());
    vec![
        // Unknown keys, at every level.
        case(
            "unknown top-level key",
            Box::new(|text: String, _: &Path| format!("colour = \"blue\"\n{text}")),
            "colour",
        ),
        case(
            "unknown daemon key",
            replace(
                "log_format = \"json\"",
                "log_format = \"json\"\nstate_dirr = \"/tmp\"",
            ),
            "daemon.state_dirr",
        ),
        case(
            "unknown provider key",
            replace(
                "timeout = \"30s\"",
                "timeout = \"30s\"\nbase_uri = \"http://x\"",
            ),
            "providers.hr.base_uri",
        ),
        case(
            "unknown resource key",
            replace(
                "path = \"/employees\"",
                "path = \"/employees\"\npaht = \"/x\"",
            ),
            "providers.hr.resources.hris_employees.paht",
        ),
        case(
            "unknown account key",
            replace(
                "interval = \"15m\"",
                "interval = \"15m\"\nintervall = \"15m\"",
            ),
            "accounts[0].intervall",
        ),
        case(
            "unknown webhook key",
            replace("timeout = \"10s\"", "timeout = \"10s\"\nsecrte = \"x\""),
            "webhooks[0].secrte",
        ),
        // References and ids.
        case(
            "unknown provider reference",
            replace("provider = \"hr\"", "provider = \"bamboo\""),
            "accounts[0].provider",
        ),
        case(
            "unknown resource reference",
            replace(
                "provider = \"hr\"",
                "provider = \"hr\"\nresources = [\"hris_employees\", \"hris_nope\"]",
            ),
            "accounts[0].resources[1]",
        ),
        case(
            "duplicate account id",
            append(
                "[[accounts]]\nid = \"globex\"\nprovider = \"hr\"\n\n[[accounts]]\nid = \"acme\"\nprovider = \"hr\"",
            ),
            "accounts[2].id",
        ),
        case(
            "duplicate webhook id",
            append(
                "[[webhooks]]\nid = \"hr-sync\"\nurl = \"http://127.0.0.1:9/other\"\nevents = [\"*\"]\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"",
            ),
            "webhooks[1].id",
        ),
        case(
            "webhook for an unknown account",
            replace(
                "timeout = \"10s\"",
                "timeout = \"10s\"\naccounts = [\"acme\", \"nobody\"]",
            ),
            "webhooks[0].accounts[1]",
        ),
        // Schedules.
        case(
            "interval below 5m",
            replace("interval = \"15m\"", "interval = \"2m\""),
            "accounts[0].interval",
        ),
        case(
            "interval above 1h",
            replace("interval = \"15m\"", "interval = \"2h\""),
            "accounts[0].interval",
        ),
        case(
            "interval not a duration",
            replace("interval = \"15m\"", "interval = \"often\""),
            "accounts[0].interval",
        ),
        case(
            "cron every minute",
            replace("interval = \"15m\"", "cron = \"0 * * * * *\""),
            "accounts[0].cron",
        ),
        case(
            "cron every 4 minutes",
            replace("interval = \"15m\"", "cron = \"0 */4 * * * *\""),
            "accounts[0].cron",
        ),
        case(
            "cron not a cron expression",
            replace("interval = \"15m\"", "cron = \"every tuesday\""),
            "accounts[0].cron",
        ),
        case(
            "both interval and cron",
            replace(
                "interval = \"15m\"",
                "interval = \"15m\"\ncron = \"0 */30 * * * *\"",
            ),
            "accounts[0].cron",
        ),
        // Timeouts.
        case(
            "webhook timeout 45s",
            replace("timeout = \"10s\"", "timeout = \"45s\""),
            "webhooks[0].timeout",
        ),
        case(
            "webhook timeout 500ms",
            replace("timeout = \"10s\"", "timeout = \"500ms\""),
            "webhooks[0].timeout",
        ),
        case(
            "provider timeout 10m",
            replace("timeout = \"30s\"", "timeout = \"10m\""),
            "providers.hr.timeout",
        ),
        // URLs.
        case(
            "webhook URL not a URL",
            replace(
                "url = \"http://127.0.0.1:9/hook?token=abc\"",
                "url = \"not a url\"",
            ),
            "webhooks[0].url",
        ),
        Case {
            name: "malformed webhook URL with a token",
            edit: replace(
                "url = \"http://127.0.0.1:9/hook?token=abc\"",
                "url = \"http://exa mple.com/hook?token=Tok-Leak-4242\"",
            ),
            path: "webhooks[0].url",
            hidden: Some("Tok-Leak-4242"),
        },
        case(
            "provider base_url not http",
            replace(
                "base_url = \"http://127.0.0.1:9/v1\"",
                "base_url = \"ftp://example.com/v1\"",
            ),
            "providers.hr.base_url",
        ),
        case(
            "account base_url malformed",
            replace(
                "provider = \"hr\"",
                "provider = \"hr\"\nbase_url = \"http//acme.example.com\"",
            ),
            "accounts[0].base_url",
        ),
        case(
            "oauth2 token_url malformed",
            replace(
                "auth = { type = \"bearer\", token = \"tok-Check-Inline-3141\" }",
                "auth = { type = \"oauth2\", token_url = \"::nope\", client_id = \"c\", client_secret = \"s\" }",
            ),
            "providers.hr.auth.token_url",
        ),
        // JSON pointers.
        case(
            "records pointer without /",
            replace("records = \"/data\"", "records = \"data\""),
            "providers.hr.records",
        ),
        case(
            "id pointer with a bad escape",
            replace("id = \"/id\"", "id = \"/a~2b\""),
            "providers.hr.id",
        ),
        case(
            "ignore pointer without /",
            replace(
                "ignore = [\"/last_seen_at\"]",
                "ignore = [\"/ok\", \"last_seen_at\"]",
            ),
            "providers.hr.resources.hris_employees.ignore[1]",
        ),
        case(
            "cursor next pointer without /",
            replace(
                "pagination = { type = \"page\", size = 100 }",
                "pagination = { type = \"cursor\", next = \"meta.next\" }",
            ),
            "providers.hr.pagination.next",
        ),
        // Webhook secrets.
        Case {
            name: "secret without whsec_",
            edit: replace(secret_line, "secret = \"sk_live_NotAWebhookSecret7731\""),
            path: "webhooks[0].secret",
            hidden: Some("sk_live_NotAWebhookSecret7731"),
        },
        Case {
            name: "whsec_ secret too short",
            edit: replace(secret_line, "secret = \"whsec_c2hvcnQtNzczMQ==\""),
            path: "webhooks[0].secret",
            hidden: Some("c2hvcnQtNzczMQ"),
        },
        Case {
            name: "whsec_ secret not base64",
            edit: replace(secret_line, "secret = \"whsec_!!not*base64*7731!!\""),
            path: "webhooks[0].secret",
            hidden: Some("not*base64*7731"),
        },
        case(
            "secret variable unset",
            replace(
                secret_line,
                "secret_env = \"HOOK_SECRET_SURELY_UNSET_7731\"",
            ),
            "webhooks[0].secret_env",
        ),
        case(
            "secret file missing",
            replace(
                secret_line,
                "secret_file = \"/nonexistent/synthd-test/hook.secret\"",
            ),
            "webhooks[0].secret_file",
        ),
        case(
            "secret file relative and missing",
            replace(secret_line, "secret_file = \"missing.secret\""),
            "webhooks[0].secret_file",
        ),
        Case {
            name: "secret file is a directory",
            edit: Box::new(|text: String, dir: &Path| {
                text.replacen(
                    &format!("secret = \"{SECRET}\""),
                    &format!("secret_file = {:?}", dir.display().to_string()),
                    1,
                )
            }),
            path: "webhooks[0].secret_file",
            hidden: None,
        },
        case(
            "secret given twice",
            replace(
                secret_line,
                "secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nsecret_env = \"X\"",
            ),
            "webhooks[0].secret",
        ),
        case(
            "provider token variable unset",
            replace(
                "auth = { type = \"bearer\", token = \"tok-Check-Inline-3141\" }",
                "auth = { type = \"bearer\", token_env = \"HR_TOKEN_SURELY_UNSET_7731\" }",
            ),
            "providers.hr.auth.token_env",
        ),
        case(
            "provider password file missing",
            replace(
                "auth = { type = \"bearer\", token = \"tok-Check-Inline-3141\" }",
                "auth = { type = \"basic\", username = \"u\", password_file = \"/nonexistent/pw\" }",
            ),
            "providers.hr.auth.password_file",
        ),
        // Event filters.
        case(
            "event filter without an action",
            replace(
                "events = [\"hris_employees.*\", \"account.*\"]",
                "events = [\"hris_employees\"]",
            ),
            "webhooks[0].events[0]",
        ),
        case(
            "event filter with a wildcard in the middle",
            replace(
                "events = [\"hris_employees.*\", \"account.*\"]",
                "events = [\"account.*\", \"hris.*.created\"]",
            ),
            "webhooks[0].events[1]",
        ),
        case(
            "no events",
            replace(
                "events = [\"hris_employees.*\", \"account.*\"]",
                "events = []",
            ),
            "webhooks[0].events",
        ),
        // Types and values.
        case(
            "interval of the wrong type",
            replace("interval = \"15m\"", "interval = 15"),
            "accounts[0].interval",
        ),
        case(
            "page size zero",
            replace(
                "pagination = { type = \"page\", size = 100 }",
                "pagination = { type = \"page\", size = 0 }",
            ),
            "providers.hr.pagination.size",
        ),
    ]
}

/// The one line of a config error, checked for shape.
fn try_config_error_line(out: &Out, what: &str) -> Result<String, String> {
    let err = out.stderr.trim_end();
    if out.code != 2 {
        return Err(format!(
            "{what}: want exit 2, got {}\n--- stdout\n{}\n--- stderr\n{err}",
            out.code, out.stdout
        ));
    }
    if err.contains("panicked") || err.contains("stack backtrace") {
        return Err(format!("{what}: panicked:\n{err}"));
    }
    if err.lines().count() != 1 {
        return Err(format!("{what}: want one line:\n{err}"));
    }
    if !err.starts_with("synthd: config error: ") {
        return Err(format!("{what}: unexpected error line: {err}"));
    }
    Ok(err.to_string())
}

fn config_error_line(out: &Out, what: &str) -> String {
    try_config_error_line(out, what).unwrap_or_else(|e| panic!("{e}"))
}

/// Checks one case's output: exit 2, one line, the key path, no secret.
fn check_case(out: &Out, c: &Case) -> Result<(), String> {
    let line = try_config_error_line(out, c.name)?;
    let want = format!("synthd: config error: {}: ", c.path);
    if !line.starts_with(&want) {
        return Err(format!(
            "{}: want key path {:?}, got: {line}",
            c.name, c.path
        ));
    }
    for secret in secret_forms()
        .iter()
        .map(String::as_str)
        .chain([INLINE_TOKEN])
        .chain(c.hidden)
    {
        if out.stderr.contains(secret) || out.stdout.contains(secret) {
            return Err(format!("{}: the output shows a secret: {line}", c.name));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broken_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = dir.path().join("synthd.toml");

    // The base config itself is valid.
    std::fs::write(&cfg, base(&state)).unwrap();
    let ok = run(&cfg, &["check"], &[]).await;
    ok.assert_code(0);
    assert!(ok.stdout.contains("is valid"), "{}", ok.stdout);

    let mut failures = Vec::new();
    for c in cases() {
        let text = (c.edit)(base(&state), dir.path());
        std::fs::write(&cfg, &text).unwrap();
        let out = run(&cfg, &["check"], &[]).await;
        if let Err(e) = check_case(&out, &c) {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(!state.exists(), "check never creates the state directory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_refuses_a_broken_config_before_touching_state() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = dir.path().join("synthd.toml");
    std::fs::write(
        &cfg,
        base(&state).replacen("interval = \"15m\"", "interval = \"2m\"", 1),
    )
    .unwrap();
    for args in [&["sync"][..], &["sync", "--json"], &["status"], &["run"]] {
        let out = run(&cfg, args, &[]).await;
        let line = config_error_line(&out, &format!("{args:?}"));
        assert!(
            line.starts_with("synthd: config error: accounts[0].interval: "),
            "{line}"
        );
        assert!(line.contains("2m"), "the message names the value: {line}");
    }
    assert!(!state.exists(), "no state directory for a broken config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syntax_errors_missing_files_and_env_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = dir.path().join("synthd.toml");

    // A TOML syntax error on the line holding a secret: one line, and the
    // line itself is not echoed.
    let broken = base(&state).replacen(
        &format!("secret = \"{SECRET}\""),
        &format!("secret = \"{SECRET}"),
        1,
    );
    std::fs::write(&cfg, broken).unwrap();
    let out = run(&cfg, &["check"], &[]).await;
    let line = config_error_line(&out, "syntax error");
    for s in secret_forms() {
        assert!(!line.contains(&s), "the error echoes the secret: {line}");
    }

    // No config file at all.
    let out = run(&dir.path().join("nope.toml"), &["check"], &[]).await;
    let line = config_error_line(&out, "missing file");
    assert!(line.contains("nope.toml"), "{line}");

    // SYNTHD_…__… overrides are validated like the file…
    std::fs::write(&cfg, base(&state)).unwrap();
    let out = run(
        &cfg,
        &["check"],
        &[("SYNTHD_DAEMON__MAX_CONCURRENT_POLLS", "0")],
    )
    .await;
    let line = config_error_line(&out, "env override");
    assert!(
        line.starts_with("synthd: config error: daemon.max_concurrent_polls: "),
        "{line}"
    );
    let other_state = dir.path().join("elsewhere");
    let out = run(
        &cfg,
        &["check"],
        &[("SYNTHD_DAEMON__STATE_DIR", other_state.to_str().unwrap())],
    )
    .await;
    out.assert_code(0);
    assert!(
        out.stdout
            .contains(&other_state.join("synthd.db").display().to_string()),
        "{}",
        out.stdout
    );

    // …while a variable without `__` (a secret kept in SYNTHD_HR_SECRET) is
    // not mistaken for a key.
    std::fs::write(
        &cfg,
        base(&state).replacen(
            &format!("secret = \"{SECRET}\""),
            "secret_env = \"SYNTHD_HR_SECRET\"",
            1,
        ),
    )
    .unwrap();
    let out = run(&cfg, &["check"], &[("SYNTHD_HR_SECRET", SECRET)]).await;
    out.assert_code(0);
    for s in secret_forms() {
        assert!(!out.stdout.contains(&s) && !out.stderr.contains(&s));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_config_checks_with_its_secrets_in_the_environment() {
    const BAMBOO: &str = "bamboo-Token-Example-2718";
    const GREENHOUSE: &str = "greenhouse-Key-Example-1618";
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/synthd.example.toml");
    let vars = [
        ("BAMBOO_TOKEN", BAMBOO),
        ("GREENHOUSE_API_KEY", GREENHOUSE),
        ("HR_SYNC_WEBHOOK_SECRET", SECRET),
    ];
    let out = run(&example, &["check"], &vars).await;
    out.assert_code(0);
    for want in [
        "acme",
        "globex",
        "hris_employees",
        "hris_employments",
        "ats_candidates",
        "ats_jobs",
        "hr-sync",
        "token=***",
    ] {
        assert!(
            out.stdout.contains(want),
            "missing {want:?}:\n{}",
            out.stdout
        );
    }
    for secret in
        secret_forms()
            .iter()
            .map(String::as_str)
            .chain([BAMBOO, GREENHOUSE, "unique_secret_token"])
    {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "check shows {secret:?}:\n{}{}",
            out.stdout,
            out.stderr
        );
    }

    // Each variable is needed: unset one and the error names its key.
    for (missing, path) in [
        ("BAMBOO_TOKEN", "providers.bamboo.auth.token_env"),
        ("GREENHOUSE_API_KEY", "accounts[1].auth.username_env"),
        ("HR_SYNC_WEBHOOK_SECRET", "webhooks[0].secret_env"),
    ] {
        let partial: Vec<(&str, &str)> = vars
            .iter()
            .copied()
            .filter(|(k, _)| *k != missing)
            .collect();
        let out = run(&example, &["check"], &partial).await;
        let line = config_error_line(&out, missing);
        assert!(
            line.starts_with(&format!("synthd: config error: {path}: ")),
            "{line}"
        );
        assert!(line.contains(missing), "names the variable: {line}");
    }

    // A webhook secret that is not a whsec_ is refused.
    let mut bad = vars;
    bad[2] = ("HR_SYNC_WEBHOOK_SECRET", "not-a-whsec-secret-7731");
    let out = run(&example, &["check"], &bad).await;
    let line = config_error_line(&out, "bad secret");
    assert!(
        line.starts_with("synthd: config error: webhooks[0].secret_env: "),
        "{line}"
    );
    assert!(!line.contains("not-a-whsec-secret-7731"), "{line}");
}
