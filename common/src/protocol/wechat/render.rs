//! Template data for subscribe messages: configured patterns filled with runtime values, every
//! value normalised by its keyword type so that 47003 cannot come from us.

use super::keyword::{self, Mode};

/// The placeholders a configured pattern may use.
pub const PLACEHOLDERS: [&str; 4] = ["sender", "preview", "time", "count"];

/// Checks a configured keyword/pattern pair at cold start, so a typo fails the deployment rather
/// than every notification.
pub fn validate_pattern(key: &str, pattern: &str) -> Result<(), String> {
    let digits = key.trim_start_matches(|c: char| c.is_ascii_lowercase() || c == '_');
    if digits.is_empty() || digits.len() == key.len() || !digits.chars().all(|c| c.is_ascii_digit())
    {
        return Err(format!(
            "{key} is not a template keyword (a type followed by digits, such as thing1)"
        ));
    }
    let sample: Vec<(&str, &str)> = PLACEHOLDERS.iter().map(|p| (*p, "x")).collect();
    keyword::render_pattern(pattern, &sample)
        .map(|_| ())
        .map_err(|e| format!("{key}: {e}"))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Pattern(#[from] keyword::PatternError),
    #[error(transparent)]
    Value(#[from] keyword::KeywordError),
    #[error("data must be a JSON object from keyword to a string or to {{\"value\": string}}")]
    Shape,
}

/// Renders configured patterns with runtime values into WeChat's `data` object
/// (`{"thing1": {"value": "…"}}`), normalising leniently: runtime text is ours to shape.
pub fn render(
    patterns: &[(String, String)],
    vars: &[(&str, &str)],
) -> Result<serde_json::Value, RenderError> {
    let mut data = serde_json::Map::new();
    for (key, pattern) in patterns {
        let raw = keyword::render_pattern(pattern, vars)?;
        let value = keyword::normalise(key, &raw, Mode::Lenient)?;
        data.insert(key.clone(), serde_json::json!({ "value": value }));
    }
    Ok(serde_json::Value::Object(data))
}

/// Validates data supplied by an integrator, never altering it: business text that WeChat
/// would refuse is reported back instead of silently rewritten. Accepts both
/// `{"thing1": "x"}` and WeChat's own `{"thing1": {"value": "x"}}`.
pub fn validate_supplied(data: &serde_json::Value) -> Result<serde_json::Value, RenderError> {
    let obj = data
        .as_object()
        .filter(|o| !o.is_empty())
        .ok_or(RenderError::Shape)?;
    let mut out = serde_json::Map::new();
    for (key, v) in obj {
        let s = match v {
            serde_json::Value::String(s) => s.as_str(),
            serde_json::Value::Object(o) => o
                .get("value")
                .and_then(|x| x.as_str())
                .ok_or(RenderError::Shape)?,
            _ => return Err(RenderError::Shape),
        };
        let value = keyword::normalise(key, s, Mode::Strict)?;
        out.insert(key.clone(), serde_json::json!({ "value": value }));
    }
    Ok(serde_json::Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn renders_and_normalises_each_keyword() {
        let p = pats(&[
            ("thing1", "{sender}"),
            ("thing2", "{preview}"),
            ("time3", "{time}"),
            ("number4", "{count}"),
        ]);
        let long = "这是一条非常非常非常长的消息内容，\n用来测试截断是否正确工作";
        let d = render(
            &p,
            &[
                ("sender", "Alice"),
                ("preview", long),
                ("time", "2024年1月2日 15:04"),
                ("count", "3"),
            ],
        )
        .unwrap();
        assert_eq!(d["thing1"]["value"], "Alice");
        let prev = d["thing2"]["value"].as_str().unwrap();
        assert_eq!(prev.chars().count(), 20);
        assert!(prev.ends_with('…') && !prev.contains('\n'));
        assert_eq!(d["time3"]["value"], "2024年1月2日 15:04");
        assert_eq!(d["number4"]["value"], "3");
    }

    #[test]
    fn impossible_values_are_refused_not_sent() {
        let p = pats(&[("number4", "{sender}")]);
        let e = render(&p, &[("sender", "Alice")]).unwrap_err();
        assert!(e.to_string().contains("number4"));
        assert!(!e.to_string().contains("Alice"));
    }

    #[test]
    fn pattern_validation() {
        assert!(validate_pattern("thing1", "{sender} says").is_ok());
        assert!(validate_pattern("thing", "{sender}").is_err());
        assert!(validate_pattern("1", "{sender}").is_err());
        assert!(
            validate_pattern("thing1", "{nobody}")
                .unwrap_err()
                .contains("nobody")
        );
    }

    #[test]
    fn supplied_data_is_validated_strictly() {
        let ok = validate_supplied(&serde_json::json!({
            "thing1": "工单已完成",
            "character_string2": {"value": "WO-2024-0001"}
        }))
        .unwrap();
        assert_eq!(ok["character_string2"]["value"], "WO-2024-0001");
        let e = validate_supplied(&serde_json::json!({"thing1": "x".repeat(21)})).unwrap_err();
        assert!(e.to_string().contains("thing1"));
        assert_eq!(
            validate_supplied(&serde_json::json!([])).unwrap_err(),
            RenderError::Shape
        );
    }
}
