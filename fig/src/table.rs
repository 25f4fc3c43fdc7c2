//! Aligned text tables for the commands a person reads (`fig report`, `fig toggle`).

/// Columns and rows of text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[&str]) -> Table {
        Table {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// The header and the rows, each line indented by two spaces, columns padded to their
    /// widest cell (in characters), trailing spaces trimmed. `(none)` when there are no rows.
    pub fn render(&self) -> String {
        fn cell(row: &[String], i: usize) -> &str {
            row.get(i).map(String::as_str).unwrap_or("")
        }
        if self.rows.is_empty() {
            return "  (none)\n".into();
        }
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|row| cell(row, i).chars().count())
                    .chain([self.columns[i].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |row: &[String]| {
            let padded: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(i, w)| format!("{:<w$}", cell(row, i)))
                .collect();
            format!("  {}\n", padded.join("  ").trim_end())
        };
        let mut out = line(&self.columns);
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_their_widest_cell() {
        let mut t = Table::new(&["album", "wishes"]);
        t.push(vec!["Blue Train".into(), "12".into()]);
        t.push(vec!["Kind of Blue".into(), "3".into()]);
        t.push(vec!["Été".into()]);
        assert_eq!(
            t.render(),
            "  album         wishes\n  Blue Train    12\n  Kind of Blue  3\n  Été\n"
        );
        assert_eq!(Table::new(&["a"]).render(), "  (none)\n");
    }
}
