//! Property tests over the policy parser: the pinned example damaged at random (lines dropped,
//! repeated or cut, values replaced) and arbitrary text never panic, and a refusal never repeats
//! the value that was written. Cases: `PROPTEST_CASES` (256 by default).

use kyc_gateway::policy::Policy;
use proptest::prelude::*;

const PINNED: &str = include_str!("../../../deploy/policy.example.toml");
const MARKER: &str = "Zq7-not-to-be-echoed";

fn env(name: &str) -> Option<String> {
    Some(match name {
        "PAYMENTS_WEBHOOK_SECRET" => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        _ => format!("value-of-{name}"),
    })
}

/// The pinned policy with its lines damaged as `choices` say.
fn damaged(choices: &[u8]) -> String {
    let mut out = String::new();
    for (i, line) in PINNED.lines().enumerate() {
        let pick = choices.get(i).copied().unwrap_or(u8::MAX);
        match pick % 32 {
            0 => {}
            1 => {
                out.push_str(line);
                out.push('\n');
                out.push_str(line);
            }
            2 => out.push_str(&line[..line.len() / 2]),
            3 | 4 => match line.split_once('=') {
                Some((key, _)) => out.push_str(&format!("{key}= \"{MARKER}\"")),
                None => out.push_str(line),
            },
            5 => match line.split_once('=') {
                Some((key, _)) => out.push_str(&format!("{key}= [\"{MARKER}\", 7]")),
                None => out.push_str(line),
            },
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

proptest! {
    // A failure is reported in the output, not written into the source tree.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_damaged_policy_is_refused_by_key_and_never_echoed(choices in proptest::collection::vec(any::<u8>(), 0..80)) {
        if let Err(error) = Policy::parse(&damaged(&choices), env) {
            let text = error.to_string();
            prop_assert!(!text.contains(MARKER), "{}", text);
        }
    }

    #[test]
    fn arbitrary_text_is_refused_without_panic(text in "\\PC{0,400}") {
        let _ = Policy::parse(&text, env);
    }
}
