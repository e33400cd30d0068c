//! The tiny HTML pages a person sees when opening a sandbox verification link in a browser.

use crate::Outcome;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;\
padding:0 1rem;line-height:1.5;color:#222}h1{font-size:1.4rem}code{background:#eee;padding:0 .2rem}\
form{display:inline-block;margin:.3rem .4rem .3rem 0}button{font-size:1rem;padding:.5rem 1.1rem;\
border:1px solid #888;border-radius:.3rem;background:#f6f6f6;cursor:pointer}\
button.approve{background:#1f7a3a;color:#fff;border-color:#1f7a3a}\
button.reject{background:#a32020;color:#fff;border-color:#a32020}p.note{color:#666;font-size:.9rem}";

/// Escapes text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{title}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        title = escape(title),
    )
}

fn button(outcome: Outcome) -> (&'static str, &'static str) {
    match outcome {
        Outcome::Approved => ("Approve", "approve"),
        Outcome::Rejected => ("Reject", "reject"),
        Outcome::InReview => ("In review", ""),
        Outcome::InProgress => ("In progress", ""),
        Outcome::Expired => ("Expire", ""),
        Outcome::Abandoned => ("Abandon", ""),
        Outcome::Cancelled => ("Cancel", ""),
    }
}

/// The page behind a verification link: what this is, where the verification stands, and one
/// button per outcome, each posting to `/_sandbox/finish/{id}`.
pub(crate) fn verification_page(
    provider: &str,
    id: &str,
    status: &str,
    outcomes: &[Outcome],
) -> String {
    let id = escape(id);
    let mut forms = String::new();
    for &outcome in outcomes {
        let (label, class) = button(outcome);
        forms.push_str(&format!(
            "<form method=\"post\" action=\"/_sandbox/finish/{id}\">\
<input type=\"hidden\" name=\"outcome\" value=\"{value}\">\
<button type=\"submit\" class=\"{class}\">{label}</button></form>",
            value = outcome.as_str(),
        ));
    }
    let title = format!("Sandbox {provider} verification");
    let body = format!(
        "<h1>{title}</h1>\
<p>This is a simulated identity check. No document or selfie is needed: choose how this \
verification ends, and the sandbox notifies the gateway as the real provider would.</p>\
<p>Verification <code>{id}</code> &middot; current state: <strong>{status}</strong></p>\
<div>{forms}</div>\
<p class=\"note\">Sandbox only: nothing here is a real identity verification.</p>",
        title = escape(&title),
        status = escape(status),
    );
    layout(&title, &body)
}

/// The answer to a finish form: the outcome, and that the notification was sent.
pub(crate) fn done_page(outcome: Outcome) -> String {
    let body = format!(
        "<h1>Done: {outcome}</h1><p>The sandbox recorded the outcome and sent the webhook. \
You can close this page.</p>"
    );
    layout(&format!("Done: {outcome}"), &body)
}

/// A short page with a heading and one sentence, for errors.
pub(crate) fn message_page(heading: &str, text: &str) -> String {
    let body = format!("<h1>{}</h1><p>{}</p>", escape(heading), escape(text));
    layout(heading, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_escapes_ids_and_posts_each_outcome() {
        let page = verification_page(
            "gu1",
            "<x>",
            "pending",
            &[Outcome::Approved, Outcome::Rejected],
        );
        assert!(page.contains("Sandbox gu1 verification"));
        assert!(page.contains("/_sandbox/finish/&lt;x&gt;"));
        assert!(!page.contains("<x>"));
        assert!(page.contains("value=\"approved\""));
        assert!(page.contains(">Reject</button>"));
    }
}
