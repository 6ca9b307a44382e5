//! JSON request bodies of the application routes (`/bind`, `/notify`): size-limited, an object,
//! and fields read with refusals that name the field but never echo its value (a value may be a
//! login code or a UserSig).

use serde_json::{Map, Value};

use crate::http::Response;

pub type Object = Map<String, Value>;

/// The body as a JSON object, or the refusal to answer: 413 over `max_bytes`, 400 otherwise.
pub fn object(body: &[u8], max_bytes: usize) -> Result<Object, Response> {
    if body.len() > max_bytes {
        return Err(Response::error(
            413,
            "body_too_large",
            &format!("request body exceeds {max_bytes} bytes"),
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(Response::error(
            400,
            "malformed_json",
            "the request body must be a JSON object",
        )),
        Err(_) => Err(Response::error(
            400,
            "malformed_json",
            "the request body is not valid JSON",
        )),
    }
}

/// An optional string field: absent and `null` are `None`; anything else must be a non-empty
/// string of at most `max_bytes`.
pub fn opt_string<'a>(
    obj: &'a Object,
    name: &str,
    max_bytes: usize,
) -> Result<Option<&'a str>, Response> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= max_bytes => Ok(Some(s)),
        Some(_) => Err(Response::error(
            400,
            "invalid_field",
            &format!("\"{name}\" must be a non-empty string of at most {max_bytes} bytes"),
        )),
    }
}

/// A required string field (see [`opt_string`]).
pub fn string<'a>(obj: &'a Object, name: &str, max_bytes: usize) -> Result<&'a str, Response> {
    opt_string(obj, name, max_bytes)?.ok_or_else(|| {
        Response::error(
            400,
            "missing_field",
            &format!("\"{name}\" is required (a non-empty string)"),
        )
    })
}

/// An optional string field restricted to a set of values.
pub fn opt_choice<'a>(
    obj: &'a Object,
    name: &str,
    choices: &[&str],
) -> Result<Option<&'a str>, Response> {
    match opt_string(obj, name, 64) {
        Ok(Some(v)) if !choices.contains(&v) => Err(Response::error(
            400,
            "invalid_field",
            &format!("\"{name}\" must be one of {}", choices.join(", ")),
        )),
        Ok(v) => Ok(v),
        Err(_) => Err(Response::error(
            400,
            "invalid_field",
            &format!("\"{name}\" must be one of {}", choices.join(", ")),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(r: Response) -> (u16, String) {
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        (r.status, v["error"].as_str().unwrap().to_owned())
    }

    #[test]
    fn bodies_are_objects_within_the_limit() {
        assert!(object(br#"{"a":1}"#, 100).is_ok());
        assert_eq!(
            err(object(br#"{"a":1}"#, 3).unwrap_err()),
            (413, "body_too_large".into())
        );
        assert_eq!(
            err(object(b"[1]", 100).unwrap_err()),
            (400, "malformed_json".into())
        );
        assert_eq!(
            err(object(b"{\"a\":", 100).unwrap_err()),
            (400, "malformed_json".into())
        );
    }

    #[test]
    fn fields_are_named_but_never_echoed() {
        let o = object(
            br#"{"code":"0a3Xk1ll","n":5,"blank":" ","long":"abcdef"}"#,
            200,
        )
        .unwrap();
        assert_eq!(string(&o, "code", 32).unwrap(), "0a3Xk1ll");
        let (s, code) = err(string(&o, "missing", 32).unwrap_err());
        assert_eq!((s, code.as_str()), (400, "missing_field"));
        for f in ["n", "blank"] {
            assert_eq!(err(string(&o, f, 32).unwrap_err()).1, "invalid_field");
        }
        let r = string(&o, "long", 3).unwrap_err();
        assert!(!r.body_str().contains("abcdef") && r.body_str().contains("\\\"long\\\""));
        assert_eq!(opt_string(&o, "missing", 3).unwrap(), None);
        let o = object(br#"{"lang":"en_US","bad":"fr_FR"}"#, 200).unwrap();
        assert_eq!(
            opt_choice(&o, "lang", &["zh_CN", "en_US"]).unwrap(),
            Some("en_US")
        );
        assert_eq!(
            err(opt_choice(&o, "bad", &["zh_CN"]).unwrap_err()).1,
            "invalid_field"
        );
    }
}
