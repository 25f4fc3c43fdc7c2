use serde_json::json;

use crate::support::TestApp;

#[tokio::test]
async fn customers_are_created_fetched_and_validated() {
    let app = TestApp::spawn().await;
    let created = app
        .post(
            "/customers",
            json!({"name": "Ada", "email": "Ada@Example.com"}),
        )
        .await;
    let body = created.ok(201);
    assert_eq!(body["email"], "ada@example.com");
    let id = body["id"].as_i64().unwrap();
    let got = app.get(&format!("/customers/{id}")).await;
    assert_eq!(got.ok(200)["name"], "Ada");
    assert!(got.body["created_at"].is_string());

    app.post(
        "/customers",
        json!({"name": "Other", "email": "ADA@example.com"}),
    )
    .await
    .assert_error(409, "email_taken", Some("email"));
    app.post("/customers", json!({"name": "X", "email": "not-an-email"}))
        .await
        .assert_error(422, "invalid_field", Some("email"));
    app.post("/customers", json!({"name": " ", "email": "x@y.io"}))
        .await
        .assert_error(422, "invalid_field", Some("name"));
    app.post("/customers", json!({"name": "X"}))
        .await
        .assert_error(422, "invalid_field", Some("email"));
    app.get("/customers/5555555")
        .await
        .assert_error(404, "not_found", Some("customer_id"));
    app.get("/customers/-1")
        .await
        .assert_error(404, "not_found", Some("customer_id"));
}
