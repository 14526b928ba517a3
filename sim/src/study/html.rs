//! The report as one self-contained HTML page: inline CSS and SVG, no script, no
//! network, so it opens from a file anywhere and diffs cleanly.

use super::doc::Block;
use super::svg::escape;

const STYLE: &str = "body{font-family:-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}\
table{border-collapse:collapse;margin:1em 0;font-size:0.9em;display:block;overflow-x:auto}\
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}\
th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}\
code{background:#f3f3f3;padding:0 3px;border-radius:3px}\
.charts{display:flex;flex-wrap:wrap;gap:1em}.charts>figure{flex:1 1 520px;margin:0}";

/// Inline `code` and **bold**, escaped.
pub fn inline(text: &str) -> String {
    let mut out = String::new();
    let mut code = false;
    let mut bold = false;
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('`') {
            out.push_str(if code { "</code>" } else { "<code>" });
            code = !code;
            rest = r;
        } else if !code && let Some(r) = rest.strip_prefix("**") {
            out.push_str(if bold { "</strong>" } else { "<strong>" });
            bold = !bold;
            rest = r;
        } else if !code && rest.starts_with('*') && !rest.starts_with("**") {
            // A lone `*text*` is emphasis; keep it readable as plain text.
            rest = &rest[1..];
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push_str(&escape(&c.to_string()));
            rest = &rest[c.len_utf8()..];
        }
    }
    if code {
        out.push_str("</code>");
    }
    if bold {
        out.push_str("</strong>");
    }
    out
}

/// Renders the blocks as a complete page.
pub fn render(blocks: &[Block]) -> String {
    let title = blocks
        .iter()
        .find_map(|b| match b {
            Block::Heading(1, t) => Some(t.as_str()),
            _ => None,
        })
        .unwrap_or("Field report");
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(title)
    );
    for b in blocks {
        match b {
            Block::Heading(level, text) => {
                let l = (*level).clamp(1, 6);
                out.push_str(&format!("<h{l}>{}</h{l}>\n", inline(text)));
            }
            Block::Para(text) => out.push_str(&format!("<p>{}</p>\n", inline(text))),
            Block::Bullets(items) => {
                out.push_str("<ul>\n");
                for i in items {
                    out.push_str(&format!("<li>{}</li>\n", inline(i)));
                }
                out.push_str("</ul>\n");
            }
            Block::Table { head, rows } => {
                out.push_str("<table>\n<thead><tr>");
                for h in head {
                    out.push_str(&format!("<th>{}</th>", inline(h)));
                }
                out.push_str("</tr></thead>\n<tbody>\n");
                for r in rows {
                    out.push_str("<tr>");
                    for c in r {
                        out.push_str(&format!("<td>{}</td>", inline(c)));
                    }
                    out.push_str("</tr>\n");
                }
                out.push_str("</tbody>\n</table>\n");
            }
            Block::Charts(caption, charts) => {
                out.push_str(&format!(
                    "<p><em>{}</em></p>\n<div class=\"charts\">\n",
                    inline(caption)
                ));
                for c in charts {
                    out.push_str("<figure>");
                    out.push_str(c);
                    out.push_str("</figure>\n");
                }
                out.push_str("</div>\n");
            }
        }
    }
    out.push_str("</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_markup_is_converted_and_escaped() {
        assert_eq!(
            inline("`a<b>` **x & y**"),
            "<code>a&lt;b&gt;</code> <strong>x &amp; y</strong>"
        );
        assert_eq!(inline("*improved*"), "improved");
        assert_eq!(inline("`**not bold**`"), "<code>**not bold**</code>");
    }

    #[test]
    fn page_is_self_contained() {
        let page = render(&[
            Block::Heading(1, "T".into()),
            Block::Charts("c".into(), vec!["<svg viewBox=\"0 0 1 1\"></svg>".into()]),
        ]);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<title>T</title>"));
        assert!(!page.contains("<script"));
        assert!(
            !page.contains("src=") && !page.contains("href="),
            "no external resources"
        );
        crate::study::svg::tests::assert_well_formed(
            &page[page.find("<svg").unwrap()..page.find("</svg>").unwrap() + 6],
        );
    }
}
