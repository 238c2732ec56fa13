//! What several kinds check of their inputs and arguments.

use squall_runtime::{BoxError, Fields, InputStream, Value};

/// An error unless every input stream has a field called `name`; `what` names the argument
/// that needs it (e.g. "field").
pub(crate) fn require_field(inputs: &[InputStream], name: &str, what: &str) -> Result<(), BoxError> {
    inputs.iter().try_for_each(|input| input.require(name, what))
}

/// The fields every input stream has, or an error naming two streams that differ.
pub(crate) fn common_fields(inputs: &[InputStream], kind: &str) -> Result<Fields, BoxError> {
    let Some(first) = inputs.first() else {
        return Err(format!("a {kind} bolt needs at least one input").into());
    };
    for other in &inputs[1..] {
        if other.fields != first.fields {
            return Err(format!(
                "all inputs of a {kind} bolt must have the same fields, but {}:{} has {} and {}:{} has {}",
                first.component, first.stream, first.fields, other.component, other.stream, other.fields
            )
            .into());
        }
    }
    Ok(first.fields.clone())
}

/// The value of a constant written in a topology file, which must be a scalar; `what` names
/// the argument in the error.
pub(crate) fn scalar(json: &serde_json::Value, what: &str) -> Result<Value, String> {
    match json {
        serde_json::Value::Array(_) => {
            Err(format!("{what} must be a scalar (string, number, boolean or null), not a list"))
        }
        serde_json::Value::Object(_) => {
            Err(format!("{what} must be a scalar (string, number, boolean or null), not a mapping"))
        }
        scalar => Ok(Value::from_json(scalar)),
    }
}

/// Whether two values are equal, comparing integers and floats by their numeric value.
pub(crate) fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Int(x), Value::Float(y)) | (Value::Float(y), Value::Int(x)) => (*x as f64) == *y,
        _ => a == b,
    }
}

/// The order of two numbers (integers and floats compare numerically); `None` when either is
/// not a number, or is NaN.
pub(crate) fn compare_numbers(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    fn input(component: &str, fields: &[&str]) -> InputStream {
        InputStream { component: component.into(), stream: "default".into(), fields: Fields::new(fields) }
    }

    #[test]
    fn require_field_names_the_stream_that_lacks_it() {
        let inputs = [input("a", &["line"]), input("b", &["text"])];
        assert!(require_field(&inputs[..1], "line", "field").is_ok());
        let err = require_field(&inputs, "line", "field").unwrap_err().to_string();
        assert!(err.contains("`line`") && err.contains("b:default"), "{err}");
    }

    #[test]
    fn common_fields_rejects_inputs_that_differ() {
        let same = [input("a", &["x", "y"]), input("b", &["x", "y"])];
        assert_eq!(common_fields(&same, "map").unwrap(), Fields::new(["x", "y"]));
        let differ = [input("a", &["x", "y"]), input("b", &["y", "x"])];
        let err = common_fields(&differ, "map").unwrap_err().to_string();
        assert!(err.contains("a:default has [x, y]") && err.contains("b:default has [y, x]"), "{err}");
        assert!(common_fields(&[], "map").is_err());
    }

    #[test]
    fn scalars_only() {
        assert_eq!(scalar(&serde_json::json!("x"), "equals"), Ok(Value::from("x")));
        assert_eq!(scalar(&serde_json::json!(null), "equals"), Ok(Value::Null));
        let err = scalar(&serde_json::json!([1]), "equals").unwrap_err();
        assert!(err.starts_with("equals must be a scalar") && err.ends_with("not a list"), "{err}");
    }

    #[test]
    fn numbers_compare_across_int_and_float() {
        assert!(values_equal(&Value::Int(3), &Value::Float(3.0)));
        assert!(!values_equal(&Value::Int(3), &Value::from("3")));
        assert_eq!(compare_numbers(&Value::Int(3), &Value::Float(2.5)), Some(Ordering::Greater));
        assert_eq!(compare_numbers(&Value::Int(i64::MAX), &Value::Int(i64::MAX - 1)), Some(Ordering::Greater));
        assert_eq!(compare_numbers(&Value::from("3"), &Value::Int(1)), None);
        assert_eq!(compare_numbers(&Value::Float(f64::NAN), &Value::Int(1)), None);
    }
}
