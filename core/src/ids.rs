//! Identifier rules: ids are 1–`max` bytes of UTF-8 without control characters.

/// Checks an id; the error says what is wrong with it.
pub fn check_id(what: &str, id: &str, max_bytes: usize) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if id.len() > max_bytes {
        return Err(format!("{what} is {} bytes long; the limit is {max_bytes}", id.len()));
    }
    if id.chars().any(char::is_control) {
        return Err(format!("{what} must not contain control characters"));
    }
    Ok(())
}
