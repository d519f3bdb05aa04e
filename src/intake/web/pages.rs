//! Page templates and the campaign's Markdown. The templates are compiled into the binary
//! (`templates/*.hbs`) and rendered by a handlebars registry of their own with HTML escaping
//! on: every value from a campaign or a signer is escaped. The one unescaped value is the
//! campaign page rendered here from Markdown, in which raw HTML is shown as text and only
//! http(s), mailto and relative links survive.

use handlebars::Handlebars;
use pulldown_cmark::{html, CowStr, Event, Options, Parser, Tag};
use serde::Serialize;

const TEMPLATES: [(&str, &str); 7] = [
    ("layout", include_str!("templates/layout.hbs")),
    ("index", include_str!("templates/index.hbs")),
    ("action", include_str!("templates/action.hbs")),
    ("embed", include_str!("templates/embed.hbs")),
    ("form", include_str!("templates/form.hbs")),
    ("field", include_str!("templates/field.hbs")),
    ("message", include_str!("templates/message.hbs")),
];

/// The stylesheet served at `/static/style.css`.
pub(crate) const STYLE_CSS: &str = include_str!("static/style.css");
/// The script served at `/static/form.js` (the message counter; the form works without it).
pub(crate) const FORM_JS: &str = include_str!("static/form.js");

/// The compiled page templates.
#[derive(Debug)]
pub(crate) struct Pages {
    registry: Handlebars<'static>,
}

impl Pages {
    /// Compiles every template; an error here is a bug in this module, caught by any test.
    pub(crate) fn new() -> Result<Pages, handlebars::TemplateError> {
        let mut registry = Handlebars::new();
        registry.set_dev_mode(false);
        for (name, text) in TEMPLATES {
            registry.register_template_string(name, text)?;
        }
        Ok(Pages { registry })
    }

    /// Renders the template `name` with `data`.
    pub(crate) fn render(
        &self,
        name: &str,
        data: &impl Serialize,
    ) -> Result<String, handlebars::RenderError> {
        self.registry.render(name, data)
    }
}

fn safe_url(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    match lower.split_once(':') {
        // A colon before any slash, `?` or `#` names a scheme.
        Some((scheme, _)) if !scheme.contains(['/', '?', '#']) => {
            matches!(scheme, "http" | "https" | "mailto")
        }
        _ => true,
    }
}

/// Renders a campaign's Markdown to HTML that cannot carry markup or scripts of its own.
pub(crate) fn markdown_to_html(markdown: &str) -> String {
    let parser = Parser::new_ext(
        markdown,
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH,
    )
    .filter_map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Some(Event::Text(raw)),
        // Images would load from elsewhere (and the page's policy forbids it): keep the alt text.
        Event::Start(Tag::Image { .. }) | Event::End(pulldown_cmark::TagEnd::Image) => None,
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => {
            let dest_url = if safe_url(&dest_url) {
                dest_url
            } else {
                CowStr::Borrowed("#")
            };
            Some(Event::Start(Tag::Link {
                link_type,
                dest_url,
                title,
                id,
            }))
        }
        other => Some(other),
    });
    let mut out = String::with_capacity(markdown.len() * 3 / 2);
    html::push_html(&mut out, parser);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_renders_without_raw_html_or_script_links() {
        let html = markdown_to_html(
            "## Title\n\n<script>alert(1)</script>\n\nHi <b>there</b> [x](javascript:alert(1)) \
             [ok](https://example.org) ![img](https://example.net/i.png)",
        );
        assert!(html.contains("<h2>Title</h2>"), "{html}");
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(!html.contains("javascript:"), "{html}");
        assert!(html.contains("href=\"https://example.org\""), "{html}");
        assert!(!html.contains("<img"), "{html}");
    }

    #[test]
    fn every_template_compiles() {
        Pages::new().unwrap();
    }
}
