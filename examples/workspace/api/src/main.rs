//! Prints a JSON status document.

fn main() {
    let status = serde_json::json!({ "service": "api", "ok": true });
    println!("{status}");
}
