//! `groups.json` (`{"groupEntries":[...]}`): loading with every problem named by entry, field
//! path and line.

use std::collections::HashMap;
use std::fmt;

use serde_json::Value;

use super::Group;
use super::validate::parse_group;

/// One problem in a groups file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProblem {
    /// Field path from the file's root (`groupEntries[1].scalingOptions.minDesired`).
    pub path: String,
    /// 1-based line of the field (or of its nearest enclosing value when the field is missing).
    pub line: Option<usize>,
    /// The group's name, when the entry has one.
    pub group: Option<String>,
    /// What is wrong.
    pub msg: String,
}

impl fmt::Display for FileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        write!(f, "{}", self.path)?;
        if let Some(group) = &self.group {
            write!(f, " (group {group})")?;
        }
        write!(f, ": {}", self.msg)
    }
}

/// Every problem of a groups file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileErrors(pub Vec<FileProblem>);

impl fmt::Display for FileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FileErrors {}

/// Parses and validates a groups file. Empty `compartmentId` / `instanceConfigurationId` are
/// filled from the given defaults, as the reference does. Duplicate names are errors.
pub fn parse_groups_file(
    text: &str,
    default_compartment_id: Option<&str>,
    default_instance_configuration_id: Option<&str>,
) -> Result<Vec<Group>, FileErrors> {
    let root: Value = serde_json::from_str(text).map_err(|e| {
        FileErrors(vec![FileProblem {
            path: String::new(),
            line: Some(e.line()),
            group: None,
            msg: format!("not valid JSON: {e}"),
        }])
    })?;
    let lines = JsonLines::index(text);
    let problem = |path: String, group: Option<String>, msg: String| FileProblem {
        line: lines.line_of(&path),
        path,
        group,
        msg,
    };
    let Some(entries) = root.get("groupEntries").and_then(Value::as_array) else {
        return Err(FileErrors(vec![problem(
            "groupEntries".into(),
            None,
            "must be an array of groups".into(),
        )]));
    };
    let mut problems = Vec::new();
    let mut groups = Vec::with_capacity(entries.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, entry) in entries.iter().enumerate() {
        let prefix = format!("groupEntries[{i}]");
        let name = entry.get("name").and_then(Value::as_str).map(str::to_owned);
        match parse_group(entry) {
            Ok(mut group) => {
                if let Some(previous) = seen.insert(group.name.clone(), i) {
                    problems.push(problem(
                        format!("{prefix}.name"),
                        name.clone(),
                        format!("duplicate group name (also groupEntries[{previous}])"),
                    ));
                }
                fill_default(&mut group.compartment_id, default_compartment_id);
                fill_default(
                    &mut group.instance_configuration_id,
                    default_instance_configuration_id,
                );
                groups.push(group);
            }
            Err(errors) => {
                for e in errors.fields {
                    let e = e.prefixed(&prefix);
                    problems.push(problem(e.path, name.clone(), e.msg));
                }
                for msg in errors.messages {
                    problems.push(problem(prefix.clone(), name.clone(), msg));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(groups)
    } else {
        Err(FileErrors(problems))
    }
}

fn fill_default(field: &mut String, default: Option<&str>) {
    if field.is_empty()
        && let Some(d) = default
    {
        *field = d.to_owned();
    }
}

/// The line of every value in a JSON text, by path (`a.b[2].c`). Built by a small scanner over
/// text that `serde_json` already accepted.
struct JsonLines {
    lines: HashMap<String, usize>,
}

impl JsonLines {
    fn index(text: &str) -> Self {
        let mut scanner = Scanner {
            bytes: text.as_bytes(),
            pos: 0,
            line: 1,
            lines: HashMap::new(),
        };
        scanner.value(String::new());
        Self {
            lines: scanner.lines,
        }
    }

    /// The line of `path`, or of its nearest ancestor that exists.
    fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(line) = self.lines.get(p) {
                return Some(*line);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
    line: usize,
    lines: HashMap<String, usize>,
}

impl Scanner<'_> {
    fn skip_ws(&mut self) {
        while let Some(&b) = self.bytes.get(self.pos) {
            match b {
                b'\n' => self.line += 1,
                b' ' | b'\t' | b'\r' => {}
                _ => return,
            }
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn value(&mut self, path: String) {
        self.skip_ws();
        self.lines.entry(path.clone()).or_insert(self.line);
        match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                loop {
                    self.skip_ws();
                    match self.peek() {
                        Some(b'"') => {
                            let key_line = self.line;
                            let key = self.string();
                            let child = if path.is_empty() {
                                key
                            } else {
                                format!("{path}.{key}")
                            };
                            self.lines.insert(child.clone(), key_line);
                            self.skip_ws();
                            if self.peek() == Some(b':') {
                                self.pos += 1;
                            }
                            self.value(child);
                        }
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            return;
                        }
                        _ => return,
                    }
                }
            }
            Some(b'[') => {
                self.pos += 1;
                let mut i = 0;
                loop {
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            return;
                        }
                        None => return,
                        Some(_) => {
                            self.value(format!("{path}[{i}]"));
                            i += 1;
                        }
                    }
                }
            }
            Some(b'"') => {
                self.string();
            }
            Some(_) => {
                while let Some(b) = self.peek() {
                    if matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace() {
                        break;
                    }
                    self.pos += 1;
                }
            }
            None => {}
        }
    }

    /// Reads a string token (the cursor is on its opening quote) and returns its text; escapes
    /// are decoded through serde_json.
    fn string(&mut self) -> String {
        let start = self.pos;
        self.pos += 1;
        while let Some(b) = self.peek() {
            self.pos += 1;
            match b {
                b'\\' => self.pos += 1,
                b'"' => break,
                _ => {}
            }
        }
        let token = &self.bytes[start..self.pos.min(self.bytes.len())];
        std::str::from_utf8(token)
            .ok()
            .and_then(|t| serde_json::from_str::<String>(t).ok())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{
  "groupEntries": [
    {
      "name": "jvb-1",
      "type": "jvb",
      "region": "us-phoenix-1",
      "compartmentId": "",
      "instanceConfigurationId": "",
      "enableAutoScale": true,
      "enableLaunch": true,
      "scalingOptions": {
        "minDesired": 1, "maxDesired": 4, "desiredCount": 1,
        "scaleUpQuantity": 1, "scaleDownQuantity": 1,
        "scaleUpThreshold": 0.8, "scaleDownThreshold": 0.3,
        "scalePeriod": 60, "scaleUpPeriodsCount": 2, "scaleDownPeriodsCount": 4
      },
      "cloud": "oracle"
    },
    {
      "name": "jibri \"1\"",
      "type": "jibri",
      "scalingOptions": {
        "minDesired": 3,
        "maxDesired": 2,
        "desiredCount": 2,
        "scalePeriod": 0
      }
    }
  ]
}"#;

    #[test]
    fn problems_name_the_entry_the_field_and_the_line() {
        let errors = parse_groups_file(FILE, None, None).expect_err("invalid");
        let shown: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
        // Every problem at once: the shape's and, beside them, the entry's other problems.
        assert_eq!(shown.len(), 3, "{shown:?}");
        assert_eq!(
            shown[0],
            "line 26: groupEntries[1].scalingOptions.scalePeriod (group jibri \"1\"): Value must be at least 1"
        );
        assert!(
            shown[1].starts_with("line 20: groupEntries[1].name"),
            "{shown:?}"
        );
        assert!(
            shown[2].starts_with("line 22: groupEntries[1].scalingOptions (group"),
            "{shown:?}"
        );
    }

    #[test]
    fn defaults_fill_empty_ids_and_syntax_errors_name_the_line() {
        let good = FILE
            .replace("\"scalePeriod\": 0", "\"scalePeriod\": 60")
            .replace("\"minDesired\": 3", "\"minDesired\": 1")
            .replace("jibri \\\"1\\\"", "jibri-1");
        let groups =
            parse_groups_file(&good, Some("ocid1.compartment"), Some("ocid1.ic")).expect("valid");
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].compartment_id, "ocid1.compartment");
        assert_eq!(groups[0].instance_configuration_id, "ocid1.ic");
        let broken = good.replacen("\"type\": \"jvb\",", "\"type\": \"jvb\"", 1);
        let errors = parse_groups_file(&broken, None, None).expect_err("syntax");
        assert_eq!(errors.0[0].line, Some(6));
        let dup = good.replace("jibri-1", "jvb-1");
        let errors = parse_groups_file(&dup, None, None).expect_err("duplicate");
        assert!(errors.0[0].msg.starts_with("duplicate group name"));
        assert!(parse_groups_file("{}", None, None).is_err());
    }
}
