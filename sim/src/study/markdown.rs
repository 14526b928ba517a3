//! The report as GitHub-flavoured Markdown.

use super::doc::Block;

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// Renders the blocks; charts become a pointer to the HTML page.
pub fn render(blocks: &[Block]) -> String {
    let mut out = String::new();
    for b in blocks {
        match b {
            Block::Heading(level, text) => {
                out.push_str(&"#".repeat(usize::from((*level).clamp(1, 6))));
                out.push(' ');
                out.push_str(text);
                out.push_str("\n\n");
            }
            Block::Para(text) => {
                out.push_str(text);
                out.push_str("\n\n");
            }
            Block::Bullets(items) => {
                for i in items {
                    out.push_str("- ");
                    out.push_str(i);
                    out.push('\n');
                }
                out.push('\n');
            }
            Block::Table { head, rows } => {
                out.push_str(&format!(
                    "| {} |\n",
                    head.iter().map(|h| cell(h)).collect::<Vec<_>>().join(" | ")
                ));
                out.push_str(&format!("|{}\n", "---|".repeat(head.len())));
                for r in rows {
                    out.push_str(&format!(
                        "| {} |\n",
                        r.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")
                    ));
                }
                out.push('\n');
            }
            Block::Charts(caption, charts) => {
                if !charts.is_empty() {
                    out.push_str(&format!(
                        "*Chart{}: {caption} (in `field-report.html`).*\n\n",
                        if charts.len() == 1 { "" } else { "s" }
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_escape_pipes_and_have_a_separator_per_column() {
        let md = render(&[Block::Table {
            head: vec!["a".into(), "b".into()],
            rows: vec![vec!["x|y".into(), "2".into()]],
        }]);
        assert_eq!(md, "| a | b |\n|---|---|\n| x\\|y | 2 |\n\n");
    }
}
