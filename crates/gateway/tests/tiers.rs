//! Routes with tiers: members balanced against each other, the next entry
//! the fallback; members skipped without a call while their circuit is open
//! or their provider's limit is spent; sessions kept on one member.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use palisade_mock::{MockServer, MockUpstream, Reply};

const ONE_SHOT: &str = "[upstreams.retry]\nmax_attempts = 1\n[upstreams.timeout]\nfirst_byte = 2000\nidle = 300\n\
                        [upstreams.breaker]\nminimum_calls = 100\nwindow = 100\n";

/// Three OpenAI-kind mocks on sockets, `east` and `west` a tier, `backup`
/// its fallback; `route_extra` adds lines to the route.
async fn tiered(route_extra: &str) -> (TestGateway, [MockUpstream; 3], Vec<MockServer>) {
    let mocks = [
        MockUpstream::new(),
        MockUpstream::new(),
        MockUpstream::new(),
    ];
    let mut served = Vec::new();
    let mut toml = String::new();
    for (m, name) in mocks.iter().zip(["east", "west", "backup"]) {
        let s = m.serve().await.unwrap();
        toml += &upstream(name, "openai", &s.base_url(), ONE_SHOT);
        served.push(s);
    }
    toml += &format!(
        "[[routes]]\nmodel = \"gpt\"\ntargets = [[\"east\", \"west\"], \"backup\"]\n{route_extra}\n"
    );
    (start(&toml, &[]).await, mocks, served)
}

fn counts(mocks: &[MockUpstream; 3]) -> [u64; 3] {
    [0, 1, 2].map(|i| mocks[i].request_count())
}

#[tokio::test]
async fn a_tier_shares_calls_and_falls_back_to_the_next_entry() {
    let (gw, mocks, _served) = tiered("balance = \"round_robin\"").await;
    for _ in 0..4 {
        let (res, body) = gw
            .call("/v1/chat/completions", &chat("gpt", "hi", false))
            .await;
        assert_eq!(res.status(), 200, "{body}");
    }
    assert_eq!(counts(&mocks), [2, 2, 0], "round robin over the tier");
    // Both members fail: each is tried once, then the next entry answers.
    mocks[0].set_default(Reply::status(503));
    mocks[1].set_default(Reply::status(503));
    let (res, body) = gw
        .call("/v1/chat/completions", &chat("gpt", "hi", true))
        .await;
    assert_eq!(res.status(), 200, "{body}");
    assert_eq!(openai_text(&body), "hi");
    assert_eq!(counts(&mocks), [3, 3, 1]);
    let (_, metrics) = gw.get("/metrics").await;
    for line in [
        r#"palisade_member_picks_total{upstream="east"} 3"#,
        r#"palisade_member_picks_total{upstream="west"} 3"#,
        r#"palisade_member_inflight{upstream="east"} 0"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    assert!(
        !metrics.contains(r#"palisade_member_picks_total{upstream="backup"}"#),
        "a lone target is no tier member: {metrics}"
    );
}

#[tokio::test]
async fn a_member_whose_provider_limit_is_spent_is_skipped_while_drained() {
    let (gw, mocks, _served) = tiered("balance = \"round_robin\"").await;
    let spent = || {
        Reply::echo()
            .header("x-ratelimit-remaining-requests", "0")
            .header("x-ratelimit-reset-requests", "10m0s")
    };
    mocks[0].set_default(spent());
    mocks[1].set_default(spent());
    // The first call to each says its limit is spent (and is answered).
    for _ in 0..2 {
        let (res, body) = gw
            .call("/v1/chat/completions", &chat("gpt", "hi", false))
            .await;
        assert_eq!(res.status(), 200, "{body}");
    }
    assert_eq!(counts(&mocks), [1, 1, 0]);
    // Both are drained: the calls go to the next entry without calling them.
    for _ in 0..3 {
        let (res, body) = gw
            .call("/v1/chat/completions", &chat("gpt", "hi", false))
            .await;
        assert_eq!(res.status(), 200, "{body}");
    }
    assert_eq!(counts(&mocks), [1, 1, 3]);
    let (_, metrics) = gw.get("/metrics").await;
    let until = metrics
        .lines()
        .find(|l| l.starts_with(r#"palisade_member_drained_until_seconds{upstream="east"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .expect(&metrics);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now + 500.0..now + 601.0).contains(&until),
        "{until} vs now {now}"
    );
}

#[tokio::test]
async fn with_every_member_out_the_caller_gets_429_with_the_earliest_reset() {
    let mocks = [MockUpstream::new(), MockUpstream::new()];
    let mut served = Vec::new();
    let mut toml = String::new();
    for (m, name) in mocks.iter().zip(["east", "west"]) {
        let s = m.serve().await.unwrap();
        toml += &upstream(name, "openai", &s.base_url(), ONE_SHOT);
        served.push(s);
    }
    toml += "[[routes]]\nmodel = \"gpt\"\ntargets = [[\"east\", \"west\"]]\n";
    let gw = start(&toml, &[]).await;
    mocks[0].set_default(Reply::status(429).header("retry-after", "30"));
    mocks[1].set_default(Reply::status(429).header("retry-after", "20"));
    let (res, body) = gw
        .call("/v1/chat/completions", &chat("gpt", "hi", false))
        .await;
    assert_eq!(res.status(), 429, "{body}");
    assert_eq!(mocks[0].request_count() + mocks[1].request_count(), 2);
    let (res, body) = gw
        .call("/v1/chat/completions", &chat("gpt", "hi", false))
        .await;
    assert_eq!(res.status(), 429, "{body}");
    let wait: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((19..=20).contains(&wait), "the earliest reset: {wait}");
    assert!(body.contains("`east`") && body.contains("`west`"), "{body}");
    assert_eq!(
        mocks[0].request_count() + mocks[1].request_count(),
        2,
        "nobody is called while all are drained"
    );
}

#[tokio::test]
async fn a_session_stays_on_one_member_and_returns_after_its_home_recovers() {
    let (gw, mocks, _served) = tiered("affinity = \"x-session-id\"").await;
    let session_call = || async {
        let res = gw
            .post(
                "/v1/chat/completions",
                &chat("gpt", "hi", false),
                &[("x-session-id", "agent-7")],
            )
            .await;
        assert_eq!(res.status(), 200);
        text(res).await;
    };
    for _ in 0..8 {
        session_call().await;
    }
    let [east, west, _] = counts(&mocks);
    assert!(
        (east, west) == (8, 0) || (east, west) == (0, 8),
        "east {east} west {west}"
    );
    // The same key as `prompt_cache_key` lands the same way.
    let body = serde_json::json!({"model": "gpt", "prompt_cache_key": "agent-7",
        "messages": [{"role": "user", "content": "hi"}]});
    let (res, _) = gw.call("/v1/chat/completions", &body.to_string()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(counts(&mocks)[..2], if east == 8 { [9, 0] } else { [0, 9] });
    // Its home's provider limit is spent for two seconds: the session goes to
    // the other member meanwhile, and home again after the reset.
    let (home, away) = if east == 8 { (0, 1) } else { (1, 0) };
    mocks[home].push(
        Reply::echo()
            .header("x-ratelimit-remaining-requests", "0")
            .header("x-ratelimit-reset-requests", "2s"),
    );
    session_call().await;
    assert_eq!(
        [mocks[home].request_count(), mocks[away].request_count()],
        [10, 0]
    );
    session_call().await;
    assert_eq!(
        [mocks[home].request_count(), mocks[away].request_count()],
        [10, 1]
    );
    // Past the reset the provider named.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    session_call().await;
    assert_eq!(
        [mocks[home].request_count(), mocks[away].request_count()],
        [11, 1]
    );
}

/// One classifier per upstream decides what its stack retries, what the
/// gateway falls back on and what trips its breaker.
#[tokio::test]
async fn one_classifier_per_upstream_decides_retry_fallback_and_the_breaker() {
    let (a, b) = (MockUpstream::new(), MockUpstream::new());
    let (sa, sb) = (a.serve().await.unwrap(), b.serve().await.unwrap());
    let strict = "[upstreams.retry]\nmax_attempts = 2\nbase_delay = 1\nmax_delay = 1\n";
    let lenient = "[upstreams.retry]\nmax_attempts = 2\nbase_delay = 1\nmax_delay = 1\nretry_conflict = true\n\
                   [upstreams.breaker]\nrate_limit_is_failure = true\nminimum_calls = 2\nwindow = 2\nopen_for = 600000\n";
    let toml = upstream("a", "openai", &sa.base_url(), strict)
        + &upstream("b", "openai", &sb.base_url(), lenient)
        + &route("via-a", &["a", "b"])
        + &route("via-b", &["b", "a"]);
    let gw = start(&toml, &[]).await;
    // `a` does not retry a 409, and the gateway does not fall back on it.
    a.push(Reply::status(409));
    let (res, body) = gw
        .call("/v1/chat/completions", &chat("via-a", "x", false))
        .await;
    assert_eq!(res.status(), 409, "{body}");
    assert_eq!((a.request_count(), b.request_count()), (1, 0));
    // `b` retries it.
    b.push(Reply::status(409));
    let (res, body) = gw
        .call("/v1/chat/completions", &chat("via-b", "x", false))
        .await;
    assert_eq!(res.status(), 200, "{body}");
    assert_eq!((a.request_count(), b.request_count()), (1, 2));
    // Two 409s spend `b`'s attempts: the gateway falls back to `a`.
    b.push_all([Reply::status(409), Reply::status(409)]);
    let (res, body) = gw
        .call("/v1/chat/completions", &chat("via-b", "x", false))
        .await;
    assert_eq!(res.status(), 200, "{body}");
    assert_eq!((a.request_count(), b.request_count()), (2, 4));
    // `b`'s breaker counts 429s: two of them open it.
    b.push_all([Reply::status(429), Reply::status(429)]);
    a.set_default(Reply::status(503));
    let (res, _) = gw
        .call("/v1/chat/completions", &chat("via-b", "x", false))
        .await;
    assert_eq!(res.status(), 503);
    let (_, metrics) = gw.get("/metrics").await;
    assert!(
        metrics.contains(r#"palisade_breaker_state{upstream="b"} 1"#),
        "{metrics}"
    );
}

/// A member whose circuit is open is skipped without a call; its load is
/// on `/metrics`, its time to first content too.
#[tokio::test]
async fn a_member_whose_circuit_is_open_is_skipped_without_a_call() {
    let mocks = [MockUpstream::new(), MockUpstream::new()];
    let mut served = Vec::new();
    let mut toml = String::new();
    let breaker = "[upstreams.retry]\nmax_attempts = 1\n\
                   [upstreams.breaker]\nminimum_calls = 2\nwindow = 2\nopen_for = 600000\n";
    for (m, name) in mocks.iter().zip(["east", "west"]) {
        let s = m.serve().await.unwrap();
        toml += &upstream(name, "openai", &s.base_url(), breaker);
        served.push(s);
    }
    toml += "[[routes]]\nmodel = \"gpt\"\ntargets = [[\"east\", \"west\"]]\nbalance = \"round_robin\"\n";
    let gw = start(&toml, &[]).await;
    mocks[0].set_default(Reply::status(500));
    // Until east's circuit opens, its 500s fall back to west.
    for _ in 0..6 {
        let (res, body) = gw
            .call("/v1/chat/completions", &chat("gpt", "hi", true))
            .await;
        assert_eq!(res.status(), 200, "{body}");
    }
    assert_eq!(
        mocks[0].request_count(),
        2,
        "two failures open east's circuit"
    );
    assert_eq!(mocks[1].request_count(), 6);
    let (_, metrics) = gw.get("/metrics").await;
    assert!(
        metrics.contains(r#"palisade_breaker_state{upstream="east"} 1"#),
        "{metrics}"
    );
    let ttft = metrics
        .lines()
        .find(|l| l.starts_with(r#"palisade_member_ttft_ewma_seconds{upstream="west"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .expect(&metrics);
    // Blended into the 500 ms a new member starts at, over seconds of
    // samples (a time-weighted peak-EWMA): positive, and no higher.
    assert!(
        ttft > 0.0 && ttft <= 0.5,
        "west's time to first content: {ttft}"
    );
}

/// `api_keys_env`: a pool of keys for one upstream. A key answered 401 is
/// retired and the call goes again with the other key at once — one
/// upstream attempt as the retry layer counts, the caller answered 200 —
/// and never comes back; every key is scrubbed from answers.
#[tokio::test]
async fn an_upstream_key_pool_retires_a_refused_key_without_a_retry() {
    let mock = MockUpstream::new();
    let server = mock.serve().await.unwrap();
    let extra = "api_keys_env = [\"PALISADE_TEST_POOL_KEY_A\", \"PALISADE_TEST_POOL_KEY_B\"]\n\
                 [upstreams.retry]\nmax_attempts = 1\n";
    let toml = upstream("pooled", "openai", &server.base_url(), extra) + &route("gpt", &["pooled"]);
    let gw = start(&toml, &[]).await;
    mock.push(Reply::status(401));
    let (res, body) = gw
        .call("/v1/chat/completions", &chat("gpt", "hi", false))
        .await;
    assert_eq!(res.status(), 200, "{body}");
    let keys: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap_or("").to_owned())
        .collect();
    assert_eq!(keys.len(), 2);
    assert_ne!(keys[0], keys[1]);
    for _ in 0..4 {
        let (res, _) = gw
            .call("/v1/chat/completions", &chat("gpt", "hi", false))
            .await;
        assert_eq!(res.status(), 200);
    }
    let later: Vec<String> = mock.requests()[2..]
        .iter()
        .map(|r| r.header("authorization").unwrap_or("").to_owned())
        .collect();
    assert!(later.iter().all(|k| *k == keys[1]), "{later:?}");
    // An answer quoting either key has it scrubbed.
    mock.push(Reply::status(400).body(
        r#"{"error":{"message":"keys palisade-test-pool-key-a and palisade-test-pool-key-b","type":"invalid_request_error"}}"#,
    ));
    let (res, body) = gw
        .call("/v1/chat/completions", &chat("gpt", "hi", false))
        .await;
    assert_eq!(res.status(), 400);
    assert!(!body.contains("palisade-test-pool-key"), "{body}");
}

/// A tier member whose first token is late is hedged: the tier's other
/// member is called too, its stream is the answer (whole, once), and the
/// late one is cancelled — its stream cut, no longer in flight.
#[tokio::test]
async fn a_late_first_token_is_hedged_on_the_other_member_and_the_loser_cut() {
    let (gw, mocks, _served) = tiered("balance = \"round_robin\"\nhedge_after = 100").await;
    // At most a tenth of calls are hedged: ten calls earn the first hedge.
    for _ in 0..10 {
        let (res, body) = gw
            .call("/v1/chat/completions", &chat("gpt", "hi", true))
            .await;
        assert_eq!(res.status(), 200, "{body}");
    }
    assert_eq!(counts(&mocks), [5, 5, 0]);
    // East's turn; its role chunk comes at once, its first token never.
    mocks[0].set_default(Reply::echo().delay_per_token(std::time::Duration::from_secs(3600)));
    let (res, body) = gw
        .call(
            "/v1/chat/completions",
            &chat("gpt", "hello hedged world", true),
        )
        .await;
    assert_eq!(res.status(), 200, "{body}");
    assert_eq!(openai_text(&body), "hello hedged world");
    assert_eq!(
        data_lines(&body)
            .iter()
            .filter(|l| l.contains("\"role\""))
            .count(),
        1,
        "one role chunk, not the loser's too: {body}"
    );
    assert_eq!(counts(&mocks), [6, 6, 0]);
    // The loser's stream was dropped: the gateway closed its connection.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while mocks[0].cut_streams() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(mocks[0].cut_streams(), 1);
    assert_eq!(mocks[1].cut_streams(), 0);
    let (_, metrics) = gw.get("/metrics").await;
    for line in [
        r#"palisade_hedges_total{upstream="east",rival="west"} 1"#,
        r#"palisade_member_inflight{upstream="east"} 0"#,
        r#"palisade_member_inflight{upstream="west"} 0"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

/// A tier member's own retry layer does not wait out a 429 while another
/// member of the tier can take the call: the call goes there at once.
#[tokio::test]
async fn a_members_429_goes_to_the_next_member_without_its_retry_layer_waiting() {
    let mocks = [MockUpstream::new(), MockUpstream::new()];
    let mut served = Vec::new();
    let mut toml = String::new();
    for (m, name) in mocks.iter().zip(["east", "west"]) {
        let s = m.serve().await.unwrap();
        toml += &upstream(
            name,
            "openai",
            &s.base_url(),
            "[upstreams.retry]\nmax_attempts = 3\nmax_delay = 20000\n",
        );
        served.push(s);
    }
    toml += "[[routes]]\nmodel = \"gpt\"\ntargets = [[\"east\", \"west\"]]\nbalance = \"round_robin\"\n";
    let gw = start(&toml, &[]).await;
    mocks[0].push(Reply::status(429).header("retry-after", "10"));
    let started = std::time::Instant::now();
    let (res, body) = gw
        .call("/v1/chat/completions", &chat("gpt", "hi", false))
        .await;
    assert_eq!(res.status(), 200, "{body}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "the 10 s hint was not waited out: {:?}",
        started.elapsed()
    );
    assert_eq!([mocks[0].request_count(), mocks[1].request_count()], [1, 1]);
}

/// Two members of a tier, each with `extra` in its section.
async fn pair(extra: &str, route_extra: &str) -> (TestGateway, [MockUpstream; 2], Vec<MockServer>) {
    let mocks = [MockUpstream::new(), MockUpstream::new()];
    let mut served = Vec::new();
    let mut toml = String::new();
    for (m, name) in mocks.iter().zip(["east", "west"]) {
        let s = m.serve().await.unwrap();
        toml += &upstream(name, "openai", &s.base_url(), extra);
        served.push(s);
    }
    toml +=
        &format!("[[routes]]\nmodel = \"gpt\"\ntargets = [[\"east\", \"west\"]]\n{route_extra}\n");
    (start(&toml, &[]).await, mocks, served)
}

/// A member at its own rate limit is passed over without being called (not
/// refused by its limiter after being picked); with every member at its
/// limit the caller gets a 429 naming why.
#[tokio::test]
async fn a_member_at_its_own_rate_limit_is_skipped_without_a_call() {
    let (gw, mocks, _served) = pair(
        "[upstreams.rate_limit]\nrequests_per_minute = 1\n",
        "affinity = \"x-session-id\"",
    )
    .await;
    let session = [("x-session-id", "s-1")];
    for _ in 0..2 {
        let res = gw
            .post("/v1/chat/completions", &chat("gpt", "hi", false), &session)
            .await;
        let (res, body) = (res.status(), text(res).await);
        assert_eq!(res, 200, "{body}");
    }
    assert_eq!([mocks[0].request_count(), mocks[1].request_count()], [1, 1]);
    let (_, metrics) = gw.get("/metrics").await;
    for line in [
        r#"palisade_member_picks_total{upstream="east"} 1"#,
        r#"palisade_member_picks_total{upstream="west"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    assert!(
        !metrics.contains("palisade_ratelimit_rejected_total{"),
        "no limiter refused a call: {metrics}"
    );
    let res = gw
        .post("/v1/chat/completions", &chat("gpt", "hi", false), &session)
        .await;
    assert!(res.headers().contains_key("retry-after"));
    let (res, body) = (res.status(), text(res).await);
    assert_eq!(res, 429, "{body}");
    assert!(body.contains("its own rate limit is reached"), "{body}");
}

/// With every member out (here drained by their provider for a second), a
/// call waits up to the members' `max_wait` for the first back.
#[tokio::test]
async fn with_every_member_out_a_call_waits_up_to_max_wait_for_the_first_back() {
    let (gw, mocks, _served) = pair(
        "[upstreams.rate_limit]\nmax_wait = 5000\n",
        "balance = \"round_robin\"",
    )
    .await;
    for m in &mocks {
        m.set_default(
            Reply::echo()
                .header("x-ratelimit-remaining-requests", "0")
                .header("x-ratelimit-reset-requests", "1s"),
        );
    }
    for _ in 0..2 {
        let (res, body) = gw
            .call("/v1/chat/completions", &chat("gpt", "hi", false))
            .await;
        assert_eq!(res.status(), 200, "{body}");
    }
    let started = std::time::Instant::now();
    let (res, body) = gw
        .call("/v1/chat/completions", &chat("gpt", "hi", false))
        .await;
    assert_eq!(res.status(), 200, "{body}");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(500),
        "it waited for a member's reset: {:?}",
        started.elapsed()
    );
    assert_eq!(mocks[0].request_count() + mocks[1].request_count(), 3);
}

/// `balance = "weighted"` shares a tier's calls by the upstreams' weights.
#[tokio::test]
async fn weighted_members_share_calls_by_weight() {
    let mocks = [MockUpstream::new(), MockUpstream::new()];
    let mut served = Vec::new();
    let mut toml = String::new();
    for ((m, name), weight) in mocks.iter().zip(["east", "west"]).zip([3, 1]) {
        let s = m.serve().await.unwrap();
        toml += &upstream(name, "openai", &s.base_url(), ONE_SHOT).replacen(
            "[upstreams.retry]",
            &format!("weight = {weight}\n[upstreams.retry]"),
            1,
        );
        served.push(s);
    }
    toml +=
        "[[routes]]\nmodel = \"gpt\"\ntargets = [[\"east\", \"west\"]]\nbalance = \"weighted\"\n";
    let gw = start(&toml, &[]).await;
    for _ in 0..200 {
        let (res, body) = gw
            .call("/v1/chat/completions", &chat("gpt", "hi", false))
            .await;
        assert_eq!(res.status(), 200, "{body}");
    }
    let east = mocks[0].request_count();
    assert_eq!(east + mocks[1].request_count(), 200);
    // 150 expected; ±30 is five standard deviations.
    assert!((120..=180).contains(&east), "east got {east} of 200");
}

/// `least_loaded` (the default) sends a tier's calls to the member that
/// answers sooner once it has measured both.
#[tokio::test]
async fn least_loaded_prefers_the_member_that_answers_sooner() {
    let (gw, mocks, _served) = tiered("").await;
    // Slower than an unmeasured member is taken to be (500 ms): once it is
    // measured, the other member is tried, and keeps the calls.
    mocks[0].set_default(Reply::echo().delay_before_headers(std::time::Duration::from_millis(800)));
    for _ in 0..20 {
        let (res, body) = gw
            .call("/v1/chat/completions", &chat("gpt", "hi", false))
            .await;
        assert_eq!(res.status(), 200, "{body}");
    }
    let [slow, fast, _] = counts(&mocks);
    assert_eq!(slow + fast, 20);
    assert!(slow <= 1, "the slow member got {slow} of 20");
}

/// With `[redis]`, one gateway's drain spares the others the same refusal:
/// east's provider answers A with a 429 asking to wait ten minutes; B,
/// which never saw it, stops calling east within a poll of Redis.
#[tokio::test]
async fn one_gateways_drain_reaches_the_others_through_redis() {
    let redis = palisade_core::test_util::RedisServer::start();
    let mocks = [MockUpstream::new(), MockUpstream::new()];
    let mut served = Vec::new();
    let mut toml = String::new();
    for (m, name) in mocks.iter().zip(["east", "west"]) {
        let s = m.serve().await.unwrap();
        toml += &upstream(name, "openai", &s.base_url(), ONE_SHOT);
        served.push(s);
    }
    toml += &format!(
        "[[routes]]\nmodel = \"gpt\"\ntargets = [[\"east\", \"west\"]]\nbalance = \"round_robin\"\n[redis]\nurl = \"{}\"\n",
        redis.url()
    );
    let (a, b) = (start(&toml, &[]).await, start(&toml, &[]).await);
    // B's first call (east, its first in turn) starts its reading of Redis.
    ok(&b).await;
    assert_eq!(mocks[0].request_count(), 1);
    // A's first call goes to east too: refused for ten minutes, taken by west.
    mocks[0].push(Reply::status(429).header("retry-after", "600"));
    ok(&a).await;
    assert_eq!([mocks[0].request_count(), mocks[1].request_count()], [2, 1]);
    // Within a poll, B knows east is drained …
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, metrics) = b.get("/metrics").await;
        let until = metrics
            .lines()
            .find(|l| l.starts_with(r#"palisade_member_drained_until_seconds{upstream="east"}"#))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if until > 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "B learned the drain within 10 s: {metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // … and calls west only.
    for _ in 0..4 {
        ok(&b).await;
    }
    assert_eq!(mocks[0].request_count(), 2, "B never called east again");
    assert_eq!(mocks[1].request_count(), 5);
}

/// One chat call through `gw`, answered 200.
async fn ok(gw: &TestGateway) {
    let (res, body) = gw
        .call("/v1/chat/completions", &chat("gpt", "hi", false))
        .await;
    assert_eq!(res.status(), 200, "{body}");
}
