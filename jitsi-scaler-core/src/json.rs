//! JSON helpers shared by the model's serde attributes.

use serde::Serializer;

/// Writes an integral float as an integer (`1`, not `1.0`), as JavaScript does, so values
/// round-trip unchanged through the reference's clients.
pub(crate) fn number<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

/// [`number`] for optional fields.
pub(crate) fn opt_number<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => number(v, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize)]
    struct T {
        #[serde(serialize_with = "super::number")]
        a: f64,
        #[serde(serialize_with = "super::opt_number")]
        b: Option<f64>,
    }

    #[test]
    fn integral_floats_are_written_as_integers() {
        let json = serde_json::to_string(&T {
            a: 1.0,
            b: Some(0.25),
        })
        .expect("json");
        assert_eq!(json, r#"{"a":1,"b":0.25}"#);
        let json = serde_json::to_string(&T { a: -2.5, b: None }).expect("json");
        assert_eq!(json, r#"{"a":-2.5,"b":null}"#);
    }
}
