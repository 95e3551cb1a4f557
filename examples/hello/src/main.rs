//! Prints a greeting, who it runs as, and its arguments: enough to check an image end to end.

fn main() {
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "Hello".to_string());
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string()))
        .unwrap_or_else(|| "?".to_string());
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("{greeting}, world! (uid {uid}, args {args:?})");
}
