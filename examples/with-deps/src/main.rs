//! Prints a JSON report about its environment: the arguments it got, a title from the
//! environment, and the data file shipped beside it in the image.

use serde::Serialize;

#[derive(Serialize)]
struct Report {
    title: String,
    args: Vec<String>,
    data: Option<String>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let report = Report {
        title: std::env::var("REPORT_TITLE").unwrap_or_default(),
        data: std::fs::read_to_string("/app/static/data.txt").ok().map(|s| s.trim().to_string()),
        args: args.clone(),
    };
    let text = if args.iter().any(|a| a == "--pretty") {
        serde_json::to_string_pretty(&report)
    } else {
        serde_json::to_string(&report)
    };
    println!("{}", text.expect("a report always serializes"));
}
