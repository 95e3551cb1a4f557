//! A small HTTP service: `GET /health` answers `ok`, `GET /greet/{name}` answers JSON.

use axum::{Json, Router, extract::Path, routing::get};
use serde::Serialize;

#[derive(Serialize)]
struct Greeting {
    message: String,
    service: &'static str,
}

async fn health() -> &'static str {
    "ok"
}

async fn greet(Path(name): Path<String>) -> Json<Greeting> {
    Json(Greeting {
        message: format!("Hello, {name}!"),
        service: env!("CARGO_PKG_NAME"),
    })
}

fn app() -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/greet/{name}", get(greet))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".to_string());
    let listener = tokio::net::TcpListener::bind(format!("0.0.0.0:{port}")).await?;
    eprintln!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
