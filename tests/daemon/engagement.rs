//! Engagement in the language, run by the daemon: `wait for opened welcome`
//! resumes when an `Email Opened` naming the send is posted over HTTP, and a
//! kill -9 after that sends nothing twice (the remembered send, with the
//! open already counted, is part of the committed customer state).

use super::harness::*;

const ACTION_PATH: &str = r#"
event signed_up {}

message welcome email { subject "Welcome" body "Hello" }
message tips email { subject "Tips" body "Try this" }
message welcome_resend email { subject "Welcome again" body "Hello again" }

journey onboard {
  trigger signed_up
  send welcome
  wait for opened welcome within 2d {
    send tips
  } timeout {
    send welcome_resend
  }
}
"#;

fn messages(lines: &[serde_json::Value]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l["kind"] == "send")
        .map(|l| l["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn an_open_posted_over_http_resumes_the_wait_and_a_kill_sends_nothing_twice() {
    let env = Env::new(ACTION_PATH);
    let daemon = env.start(&[]);
    let response = daemon.post(
        "/v1/track",
        r#"{"type":"track","userId":"c1","event":"signed_up","properties":{},"messageId":"s1"}"#,
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let welcome = eventually("the welcome send in the sink", || {
        sink_lines(&env.sends())
            .into_iter()
            .find(|l| l["kind"] == "send" && l["message"] == "welcome")
    });
    let id = welcome["id"].as_str().expect("a send id").to_string();
    let open = |message_id: &str| {
        format!(
            r#"{{"type":"track","userId":"c1","event":"Email Opened","properties":{{"email_id":"{id}"}},"messageId":"{message_id}"}}"#
        )
    };
    let response = daemon.post("/v1/track", &open("o1"));
    assert_eq!(response.status, 200, "{}", response.body);
    eventually("tips after the open", || {
        (messages(&sink_lines(&env.sends())) == ["welcome", "tips"]).then_some(())
    });
    daemon.kill();

    let daemon = env.start(&[]);
    // The same call again (dropped as a duplicate), then a second open of
    // the same email (a repeat: not counted, nothing resumes).
    for message_id in ["o1", "o2"] {
        let response = daemon.post("/v1/track", &open(message_id));
        assert_eq!(response.status, 200, "{}", response.body);
    }
    let customer = daemon.get("/v1/customers/c1").json();
    let enrollments = customer["enrollments"].as_array().expect("enrollments");
    assert!(enrollments.is_empty(), "the journey ended after tips: {customer}");
    let stats = daemon.get("/v1/journeys/onboard/stats").json();
    assert_eq!(stats["messages"]["welcome"]["opened"], 1, "{stats}");
    assert_eq!(stats["messages"]["tips"]["sent"], 1, "{stats}");
    let step = stats["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["kind"] == "wait_for")
        .cloned()
        .expect("the wait step");
    assert_eq!(step["name"], "opened(welcome)");
    let lines = sink_lines(&env.sends());
    assert_eq!(messages(&lines), ["welcome", "tips"], "nothing sent twice");
    daemon.terminate();
}
