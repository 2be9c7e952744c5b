//! The Prometheus text exposition of `GET /metrics`: one writer that every module reporting
//! metrics fills in (the hub's counters, the descriptor budget, the cluster bus), so the format is
//! written once. There is no global registry: the publish API asks each part for its figures when
//! it is scraped.

use std::fmt::{Display, Write as _};

/// A metrics page being written, in the Prometheus text format (version 0.0.4).
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

/// The content type of the page.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

impl Exposition {
    /// A gauge with one unlabelled sample.
    pub fn gauge(&mut self, name: &str, help: &str, value: impl Display) -> &mut Self {
        self.family(name, "gauge", help).sample(name, &[], value)
    }

    /// A counter with one unlabelled sample (`name` ends in `_total`).
    pub fn counter(&mut self, name: &str, help: &str, value: impl Display) -> &mut Self {
        self.family(name, "counter", help).sample(name, &[], value)
    }

    /// The `# HELP` and `# TYPE` lines of a family whose samples follow.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = write!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        self
    }

    /// One sample line, with `labels` (values escaped).
    pub fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl Display,
    ) -> &mut Self {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", label_value(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
        self
    }

    /// The page.
    pub fn into_text(self) -> String {
        self.text
    }
}

/// Escapes a label value: backslash, double quote and newline.
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_samples_in_the_text_format() {
        let mut page = Exposition::default();
        page.gauge("a_channels", "Channels.", 3)
            .counter("a_items_total", "Items.", 7u64)
            .family("a_up", "gauge", "Up.")
            .sample("a_up", &[("shard", "0"), ("addr", "h\"1\\")], 1);
        assert_eq!(
            page.into_text(),
            "# HELP a_channels Channels.\n# TYPE a_channels gauge\na_channels 3\n\
             # HELP a_items_total Items.\n# TYPE a_items_total counter\na_items_total 7\n\
             # HELP a_up Up.\n# TYPE a_up gauge\na_up{shard=\"0\",addr=\"h\\\"1\\\\\"} 1\n"
        );
    }
}
