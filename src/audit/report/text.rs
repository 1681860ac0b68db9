//! `tmcs audit timeline`: one subject's steps as an aligned table for a
//! terminal. Every cell is made terminal-safe (control characters shown as
//! `\u{…}`), as some text in the log came from callers.

use super::gather::Step;

/// A cell with control characters escaped, so that no stored text can move
/// the cursor or recolour the terminal.
pub fn terminal_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// TIME, ACTION, ACTOR, DETAILS: one line per step, in order, columns
/// padded to their widest cell (the last column is not padded).
pub fn table(steps: &[Step]) -> String {
    let rows: Vec<[String; 4]> = steps
        .iter()
        .map(|s| {
            [
                terminal_safe(&s.ts),
                terminal_safe(&s.action),
                terminal_safe(&s.actor),
                terminal_safe(&s.details_line()),
            ]
        })
        .collect();
    let header = ["TIME", "ACTION", "ACTOR", "DETAILS"].map(str::to_string);
    let mut widths = [0usize; 3];
    for r in std::iter::once(&header).chain(rows.iter()) {
        for (w, cell) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&header).chain(rows.iter()) {
        let mut line = String::new();
        for (w, cell) in widths.iter().zip(r.iter()) {
            line.push_str(cell);
            line.push_str(&" ".repeat(w - cell.chars().count() + 2));
        }
        line.push_str(&r[3]);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(seq: i64, action: &str, actor: &str, details: &[(&str, &str)]) -> Step {
        Step {
            seq,
            ts: format!("2026-12-02T10:00:0{seq}.000Z"),
            action: action.into(),
            actor: actor.into(),
            subject: Some("ab".into()),
            details: details
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn columns_line_up_and_rows_keep_their_order() {
        let t = table(&[
            step(1, "cert.key_generated", "system", &[("key_id", "k1")]),
            step(
                2,
                "cert.revoked",
                "operator:sha256:ff",
                &[("reason", "keyCompromise")],
            ),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        let col = |l: &str, word: &str| l.find(word).unwrap();
        assert_eq!(col(lines[0], "ACTION"), col(lines[1], "cert.key_generated"));
        assert_eq!(col(lines[0], "ACTION"), col(lines[2], "cert.revoked"));
        assert_eq!(col(lines[0], "DETAILS"), col(lines[1], "key_id: k1"));
        assert_eq!(
            col(lines[0], "DETAILS"),
            col(lines[2], "reason: keyCompromise")
        );
        assert!(lines[1].starts_with("2026-12-02T10:00:01.000Z"));
    }

    #[test]
    fn control_characters_cannot_reach_the_terminal() {
        let t = table(&[step(
            1,
            "subscriber.registered",
            "x",
            &[("kyc_ref", "a\u{1b}[2Jb\n")],
        )]);
        assert!(!t.contains('\u{1b}'), "{t:?}");
        assert!(t.contains("a\\u{1b}[2Jb\\u{a}"), "{t:?}");
        assert_eq!(t.lines().count(), 2);
    }
}
