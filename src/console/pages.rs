//! The console's pages as maud templates: compile-time checked, and every
//! interpolated value HTML-escaped (receiver responses, error texts and
//! record ids included). No page holds a script.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::store::{DeliveryCounts, DeliveryStatus, LogQuery};
use crate::views::{AccountView, DeliveryDetail, HourBucket, LogPage, Overview, WebhookRow};

/// What every page knows about the viewer.
pub struct Chrome<'a> {
    /// Signed in (a session cookie): forms carry this CSRF token.
    pub csrf: Option<&'a str>,
    /// Actions are possible at all (a console token is configured).
    pub actions: bool,
    pub now: DateTime<Utc>,
    pub flash: Option<(bool, &'static str)>,
    /// Reload the page every this many seconds (no script: a meta refresh).
    pub refresh: Option<u32>,
}

pub fn layout(title: &str, c: &Chrome<'_>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                @if let Some(secs) = c.refresh { meta http-equiv="refresh" content=(secs); }
                title { (title) " · synthd" }
                link rel="stylesheet" href="/console.css";
            }
            body {
                header.top {
                    a.brand href="/" { "synthd" }
                    nav { a href="/" { "Overview" } a href="/metrics" { "Metrics" } }
                    @if c.csrf.is_some() {
                        span.who { "signed in" }
                        form.inline method="post" action="/logout" {
                            (csrf_field(c))
                            button type="submit" { "Sign out" }
                        }
                    } @else if c.actions {
                        a href="/login" { "Sign in" }
                    }
                }
                main {
                    @if let Some((ok, text)) = c.flash {
                        div class=(if ok { "flash ok" } else { "flash bad" }) { (text) }
                    }
                    (body)
                }
            }
        }
    }
}

fn csrf_field(c: &Chrome<'_>) -> Markup {
    html! {
        @if let Some(t) = c.csrf { input type="hidden" name="csrf" value=(t); }
    }
}

/// A POST button, shown only to a signed-in viewer.
fn action(c: &Chrome<'_>, url: &str, label: &str, primary: bool) -> Markup {
    html! {
        @if c.csrf.is_some() {
            form.inline method="post" action=(url) {
                (csrf_field(c))
                button class=[primary.then_some("primary")] type="submit" { (label) }
            }
        }
    }
}

fn utc(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// "3 min ago", "in 12 s".
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    let (n, future) = (secs.unsigned_abs(), secs < 0);
    let text = match n {
        0..=59 => format!("{n} s"),
        60..=3599 => format!("{} min", n / 60),
        3600..=172_799 => format!("{} h", n / 3600),
        _ => format!("{} d", n / 86400),
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

fn when(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Markup {
    html! {
        @match t {
            Some(t) => { time datetime=(t.to_rfc3339()) title=(utc(t)) { (utc(t)) } span.hint { (relative(t, now)) } }
            None => span.muted { "never" }
        }
    }
}

fn status_badge(s: DeliveryStatus) -> Markup {
    let class = match s {
        DeliveryStatus::Delivered => "badge b-ok",
        DeliveryStatus::Pending => "badge b-warn",
        DeliveryStatus::Failed => "badge b-bad",
        DeliveryStatus::Cancelled => "badge b-idle",
    };
    html! { span class=(class) { (s.as_str()) } }
}

fn http_badge(code: Option<u16>) -> Markup {
    html! {
        @match code {
            Some(c @ 200..=299) => span.badge.b-ok { (c) },
            Some(c @ 400..=499) => span.badge.b-warn { (c) },
            Some(c) => span.badge.b-bad { (c) },
            None => span.muted { "–" },
        }
    }
}

fn webhook_health(w: &WebhookRow) -> Markup {
    html! {
        @if !w.enabled { span.badge.b-idle { "disabled" } }
        @else if w.paused_at.is_some() { span.badge.b-bad { "paused" } }
        @else if w.failing || w.last_24h.failed > 0 { span.badge.b-warn { "failing" } }
        @else { span.badge.b-ok { "healthy" } }
    }
}

fn counts_cells(c: &DeliveryCounts) -> Markup {
    html! {
        td.num { (c.pending) } td.num { (c.delivered) } td.num { (c.failed) }
    }
}

pub fn overview(o: &Overview, c: &Chrome<'_>) -> Markup {
    let failing = o
        .resources
        .iter()
        .filter(|r| r.poll.consecutive_failures > 0)
        .count();
    let pending: u64 = o.webhooks.iter().map(|w| w.last_24h.pending).sum();
    let delivered: u64 = o.webhooks.iter().map(|w| w.last_24h.delivered).sum();
    let failed: u64 = o.webhooks.iter().map(|w| w.last_24h.failed).sum();
    let body = html! {
        h1 { "Overview" }
        p.sub { "As of " (utc(o.now)) ". Delivery counts: pending now; delivered and failed in the last 24 h." }
        div.cards {
            div.card { div.l { "Resources" } div.n { (o.resources.len()) } }
            div.card { div.l { "Failing resources" } div.n { (failing) } }
            div.card { div.l { "Pending deliveries" } div.n { (pending) } }
            div.card { div.l { "Delivered 24 h" } div.n { (delivered) } }
            div.card { div.l { "Failed 24 h" } div.n { (failed) } }
        }
        h2 { "Accounts and resources" }
        div.panel { table {
            thead { tr { th { "Account" } th { "Resource" } th.num { "Records" } th { "Last poll" } th { "Next poll" } th { "Result" } th { "Last error" } } }
            tbody {
                @for r in &o.resources {
                    tr {
                        td { a href=(format!("/accounts/{}", enc(&r.poll.account_id))) { (r.poll.account_id) } }
                        td.mono { (r.poll.resource) }
                        td.num { (r.poll.records) }
                        td { (when(r.poll.last_started_at, o.now)) }
                        td { (when(r.next_poll_at, o.now)) }
                        td {
                            @if r.poll.consecutive_failures > 0 { span.badge.b-bad { "failing ×" (r.poll.consecutive_failures) } }
                            @else if r.poll.last_success_at.is_some() { span.badge.b-ok { "ok" } }
                            @else { span.badge.b-idle { "not yet" } }
                        }
                        td.wrap { @if let Some(e) = &r.poll.last_error { (e) } }
                    }
                }
                @if o.resources.is_empty() { tr { td colspan="7" .muted { "No account has been polled yet." } } }
            }
        } }
        h2 { "Webhooks" }
        div.panel { table {
            thead { tr { th { "Webhook" } th { "URL" } th { "Health" } th { "Events" } th.num { "Pending" } th.num { "Delivered 24 h" } th.num { "Failed 24 h" } } }
            tbody {
                @for w in &o.webhooks {
                    tr {
                        td { a href=(format!("/webhooks/{}", enc(&w.id))) { (w.id) } }
                        td.mono.wrap { (w.url) }
                        td { (webhook_health(w)) }
                        td.mono.wrap { (w.events.join(", ")) }
                        (counts_cells(&w.last_24h))
                    }
                }
                @if o.webhooks.is_empty() { tr { td colspan="7" .muted { "No webhook is configured." } } }
            }
        } }
        @if o.shared {
            h2 { "Processes sharing the store" }
            div.panel { table {
                thead { tr { th { "Host" } th.num { "PID" } th { "Version" } th { "Started" } th { "Heartbeat" } th.num { "Claims" } } }
                tbody { @for i in &o.instances { tr {
                    td { (i.host) } td.num { (i.pid) } td { (i.version) }
                    td { (when(Some(i.started_at), o.now)) } td { (when(Some(i.heartbeat_at), o.now)) } td.num { (i.claims) }
                } } }
            } }
        }
    };
    layout("Overview", c, body)
}

/// Percent-encodes an id for a URL path segment.
pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub const PAGE_SIZE: usize = 50;

pub fn webhook(
    w: Option<&WebhookRow>,
    id: &str,
    q: &LogQuery,
    page: &LogPage,
    page_no: u64,
    c: &Chrome<'_>,
) -> Markup {
    let link = |p: u64| {
        let mut s = format!("/webhooks/{}?page={p}", enc(id));
        if let Some(st) = q.status {
            s.push_str(&format!("&status={}", st.as_str()));
        }
        if let Some(t) = &q.event_type {
            s.push_str(&format!("&type={}", enc(t)));
        }
        s
    };
    let body = html! {
        h1 { "Webhook " span.mono { (id) } }
        @if let Some(w) = w {
            p.sub { span.mono { (w.url) } " · " (webhook_health(w)) " · events " span.mono { (w.events.join(", ")) } }
            div.actions {
                (action(c, &format!("/webhooks/{}/test", enc(id)), "Send test event", false))
                @if w.paused_at.is_some() { (action(c, &format!("/webhooks/{}/resume", enc(id)), "Resume", true)) }
            }
        } @else {
            p.sub { "This webhook is no longer in the config; its delivery log remains." }
        }
        h2 { "Delivery log" }
        form.filters method="get" action=(format!("/webhooks/{}", enc(id))) {
            label { "Status"
                select name="status" {
                    option value="" { "any" }
                    @for s in DeliveryStatus::ALL {
                        option value=(s.as_str()) selected[q.status == Some(s)] { (s.as_str()) }
                    }
                }
            }
            label { "Event type"
                input type="text" name="type" placeholder="hris_employees.created" value=(q.event_type.as_deref().unwrap_or(""));
            }
            button type="submit" { "Filter" }
        }
        div.panel { table {
            thead { tr { th { "Created" } th { "Event type" } th { "Record" } th { "Status" } th.num { "Attempts" } th { "Last HTTP" } th.num { "Time" } th { "Delivery" } } }
            tbody {
                @for r in &page.rows {
                    tr {
                        td { (when(Some(r.delivery.created_at), c.now)) }
                        td.mono { (r.delivery.event_type) }
                        td.mono.wrap { @if let Some(id) = &r.record_id { (id) } @else { span.muted { "–" } } }
                        td { (status_badge(r.delivery.status)) }
                        td.num { (r.delivery.attempts) }
                        td { (http_badge(r.delivery.last_status)) }
                        td.num { @if let Some(ms) = r.last_duration_ms { (ms) " ms" } @else { span.muted { "–" } } }
                        td.mono { a href=(format!("/deliveries/{}", enc(&r.delivery.id))) { (r.delivery.id) } }
                    }
                }
                @if page.rows.is_empty() { tr { td colspan="8" .muted { "No delivery matches." } } }
            }
        } }
        div.pager {
            @if page_no > 1 { a href=(link(page_no - 1)) { "← Newer" } }
            span.muted { "Page " (page_no) }
            @if page.more { a href=(link(page_no + 1)) { "Older →" } }
        }
    };
    layout(&format!("Webhook {id}"), c, body)
}

pub fn delivery(d: &DeliveryDetail, c: &Chrome<'_>) -> Markup {
    let v = &d.delivery;
    let body = html! {
        h1 { "Delivery " span.mono { (v.id) } }
        p.sub { (status_badge(v.status)) " " span.mono { (v.event_type) } " to "
            a href=(format!("/webhooks/{}", enc(&v.webhook_id))) { (v.webhook_id) } }
        div.actions { (action(c, &format!("/deliveries/{}/replay", enc(&v.id)), "Replay", true)) }
        div.panel { dl.kv {
            dt { "Event" } dd.mono { (v.event_id) }
            dt { "URL" } dd.mono { @if let Some(u) = &d.url { (u) } @else { span.muted { "(webhook no longer in the config)" } } }
            dt { "Created" } dd { (when(Some(v.created_at), c.now)) }
            dt { "Updated" } dd { (when(Some(v.updated_at), c.now)) }
            dt { "Attempts" } dd { (v.attempts) }
            @if let Some(t) = v.next_attempt_at { dt { "Next attempt" } dd { (when(Some(t), c.now)) } }
        } }
        h2 { "Payload" span.hint { "(byte for byte as sent and signed)" } }
        pre.payload { (d.payload) }
        h2 { "Attempts" }
        div.panel { table {
            thead { tr { th.num { "#" } th { "Time" } th { "Result" } th.num { "Latency" } th { "Response (first 1 KiB) or error" } } }
            tbody {
                @for a in &d.attempts {
                    tr {
                        td.num { (a.attempt) }
                        td { (when(Some(a.started_at), c.now)) }
                        td { (http_badge(a.status_code))
                            @if let Some(k) = &a.error_kind { " " span.badge.b-bad { (k) } } }
                        td.num { (a.duration_ms) " ms" }
                        td.wrap {
                            @if let Some(b) = &a.response_body { pre.light.response { (b) } }
                            @if let Some(e) = &a.error { div.muted { (e) } }
                        }
                    }
                }
                @if d.attempts.is_empty() { tr { td colspan="5" .muted { "No attempt yet." } } }
            }
        } }
    };
    layout(&format!("Delivery {}", v.id), c, body)
}

pub fn account(a: &AccountView, c: &Chrome<'_>) -> Markup {
    let body = html! {
        h1 { "Account " span.mono { (a.id) } }
        p.sub {
            @if let Some(p) = &a.provider { "provider " span.mono { (p) } " · " }
            @if a.enabled { span.badge.b-ok { "enabled" } } @else { span.badge.b-idle { "disabled or removed" } }
        }
        @if a.enabled { div.actions { (action(c, &format!("/accounts/{}/poll", enc(&a.id)), "Poll now", true)) } }
        h2 { "Events per hour, last 48 h" }
        div.panel { (chart(&a.hours)) div.legend {
            span { i.created {} "created" } span { i.updated {} "updated" } span { i.deleted {} "deleted" } span { i.other {} "account and other" }
        } }
        h2 { "Resources" }
        div.panel { table {
            thead { tr { th { "Resource" } th.num { "Records" } th { "Baseline" } th { "Last poll" } th { "Last success" } th { "Next poll" } th { "Last error" } } }
            tbody { @for r in &a.resources { tr {
                td.mono { (r.poll.resource) } td.num { (r.poll.records) }
                td { @if r.poll.baseline_done { span.badge.b-ok { "done" } } @else { span.badge.b-idle { "pending" } } }
                td { (when(r.poll.last_started_at, c.now)) } td { (when(r.poll.last_success_at, c.now)) }
                td { (when(r.next_poll_at, c.now)) }
                td.wrap { @if let Some(e) = &r.poll.last_error { (e) } }
            } } }
        } }
        h2 { "Recent polls" span.hint { "(by this process since it started)" } }
        div.panel { table {
            thead { tr { th { "Finished" } th { "Resource" } th { "Result" } th.num { "Pages" } th.num { "Records" } th.num { "Created" } th.num { "Updated" } th.num { "Deleted" } th.num { "Duration" } th { "Error" } } }
            tbody {
                @for p in &a.polls { tr {
                    td { (when(Some(p.finished_at), c.now)) } td.mono { (p.resource) }
                    td { @match p.result { "ok" => span.badge.b-ok { "ok" }, "skipped" => span.badge.b-idle { "skipped" }, other => span.badge.b-bad { (other) } } }
                    td.num { (p.pages) } td.num { (p.records) } td.num { (p.created) } td.num { (p.updated) } td.num { (p.deleted) }
                    td.num { (p.duration_ms) " ms" }
                    td.wrap { @if let Some(e) = &p.error { (e) } }
                } }
                @if a.polls.is_empty() { tr { td colspan="10" .muted { "No poll finished since this process started." } } }
            }
        } }
    };
    layout(&format!("Account {}", a.id), c, body)
}

/// A stacked bar chart of events per hour, drawn on the server.
pub fn chart(hours: &[HourBucket]) -> Markup {
    const W: f64 = 960.0;
    const H: f64 = 180.0;
    const LEFT: f64 = 40.0;
    const BOTTOM: f64 = 20.0;
    let max = hours
        .iter()
        .map(|h| h.created + h.updated + h.deleted + h.other)
        .max()
        .unwrap_or(0)
        .max(1);
    let bar = (W - LEFT) / hours.len().max(1) as f64;
    let scale = (H - BOTTOM - 10.0) / max as f64;
    let mut svg = String::new();
    use std::fmt::Write as _;
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="events per hour"><line class="axis" x1="{LEFT}" y1="{y}" x2="{W}" y2="{y}" stroke-width="1"/><text x="{tx}" y="14" text-anchor="end">{max}</text><text x="{tx}" y="{y}" text-anchor="end">0</text>"#,
        y = H - BOTTOM,
        tx = LEFT - 6.0,
    );
    for (i, h) in hours.iter().enumerate() {
        let x = LEFT + i as f64 * bar + 1.0;
        let mut base = H - BOTTOM;
        for (class, n) in [
            ("created", h.created),
            ("updated", h.updated),
            ("deleted", h.deleted),
            ("other", h.other),
        ] {
            if n == 0 {
                continue;
            }
            let height = n as f64 * scale;
            base -= height;
            let _ = write!(
                svg,
                r#"<rect class="{class}" x="{x:.1}" y="{base:.1}" width="{w:.1}" height="{height:.1}"><title>{hour}: {n} {class}</title></rect>"#,
                w = (bar - 2.0).max(1.0),
                hour = h.hour.format("%Y-%m-%d %H:00 UTC"),
            );
        }
        if i % 6 == 0 {
            let _ = write!(
                svg,
                r#"<text x="{x:.1}" y="{ty}">{label}</text>"#,
                ty = H - 5.0,
                label = h.hour.format("%d %H:00"),
            );
        }
    }
    svg.push_str("</svg>");
    // Only numbers and fixed words are written into this SVG.
    PreEscaped(svg)
}

pub fn login(c: &Chrome<'_>, failed: bool) -> Markup {
    let body = html! {
        div.login {
            h1 { "Sign in" }
            p.sub { "Enter the console token (" span.mono { "[console] token" } " in the config)." }
            @if failed { div.flash.bad { "That token is not the console token." } }
            form method="post" action="/login" {
                label for="token" { "Console token" }
                input id="token" type="password" name="token" autocomplete="current-password" required;
                button.primary type="submit" { "Sign in" }
            }
        }
    };
    layout("Sign in", c, body)
}

pub fn message(title: &str, text: &str, c: &Chrome<'_>) -> Markup {
    layout(title, c, html! { h1 { (title) } p { (text) } })
}
