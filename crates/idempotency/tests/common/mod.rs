//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

/// The URL in `var`, or `None` (with a message) when unset; with `CI=true`
/// an unset URL fails the test instead.
pub fn service_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{var} is not set and CI=true: this test needs the service");
            }
            println!("skipping: {var} is not set");
            None
        }
    }
}
