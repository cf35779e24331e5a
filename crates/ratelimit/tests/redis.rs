//! The Redis backend against a real `redis-server` on 127.0.0.1 (started
//! here on a free port; CI installs it with apt-get).
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(feature = "redis")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{Request, Response};
use palisade_core::test_util::RedisServer;
use palisade_core::{RateLimited, find};
use palisade_ratelimit::{BackendUnavailable, RedisRateLimitLayer};
use tower::{Layer, ServiceExt, service_fn};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn counting(
    calls: &Arc<AtomicUsize>,
) -> impl tower::Service<
    Request<()>,
    Response = Response<()>,
    Error = std::convert::Infallible,
    Future = std::future::Ready<Result<Response<()>, std::convert::Infallible>>,
> + Clone
+ Send
+ 'static {
    let calls = calls.clone();
    service_fn(move |_req: Request<()>| {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(Response::new(())))
    })
}

#[tokio::test]
async fn two_limiters_sharing_a_key_admit_the_total_not_twice_it() {
    let redis = RedisServer::start();
    // Five per burst, refilled at one per 1,000 s: the test sees the burst.
    let a = RedisRateLimitLayer::new(&redis.url(), "test:shared", 5, 0.001).unwrap();
    let b = RedisRateLimitLayer::new(&redis.url(), "test:shared", 5, 0.001).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let (sa, sb) = (a.layer(counting(&calls)), b.layer(counting(&calls)));
    let mut admitted = 0;
    let mut refused = 0;
    for i in 0..12 {
        let svc = if i % 2 == 0 { sa.clone() } else { sb.clone() };
        match svc.oneshot(Request::new(())).await {
            Ok(_) => admitted += 1,
            Err(e) => {
                let limited = find::<RateLimited>(&*e).expect("RateLimited");
                assert!(
                    limited.retry_after().unwrap() > Duration::from_secs(100),
                    "{e}"
                );
                refused += 1;
            }
        }
    }
    assert_eq!((admitted, refused), (5, 7));
    assert_eq!(calls.load(Ordering::SeqCst), 5);

    // The key expires: no immortal counters.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg("test:shared")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 0, "the key has a TTL: {ttl}");
}

#[tokio::test]
async fn a_waiting_call_passes_when_its_turn_comes() {
    let redis = RedisServer::start();
    // One unit, refilled every 100 ms; waits up to a second.
    let layer = RedisRateLimitLayer::new(&redis.url(), "test:wait", 1, 10.0)
        .unwrap()
        .wait(Duration::from_secs(1));
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = layer.layer(counting(&calls));
    svc.clone().oneshot(Request::new(())).await.unwrap();
    let t = Instant::now();
    svc.oneshot(Request::new(())).await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(80),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn unreachable_redis_fails_open_or_closed_within_the_timeout() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let calls = Arc::new(AtomicUsize::new(0));

    let open = RedisRateLimitLayer::new(&url, "k", 1, 1.0)
        .unwrap()
        .fail_open();
    let t = Instant::now();
    open.layer(counting(&calls))
        .oneshot(Request::new(()))
        .await
        .unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "fail open lets the call through"
    );

    let closed = RedisRateLimitLayer::new(&url, "k", 1, 1.0)
        .unwrap()
        .fail_closed()
        .timeout(Duration::from_millis(100));
    let err = closed
        .layer(counting(&calls))
        .oneshot(Request::new(()))
        .await
        .unwrap_err();
    assert!(find::<BackendUnavailable>(&*err).is_some(), "{err}");
    assert!(err.to_string().contains(&url), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "fail closed calls nobody");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "never a hang: {:?}",
        t.elapsed()
    );
}

fn chat(max_tokens: u64) -> Request<palisade_core::RequestBody> {
    Request::post("/v1/chat/completions")
        .body(palisade_core::RequestBody::from(format!(
            r#"{{"model":"mock","max_tokens":{max_tokens},"messages":[{{"role":"user","content":"alpha beta gamma"}}]}}"#
        )))
        .unwrap()
}

/// Tokens per minute kept in Redis: two limiters on one key (two
/// processes) admit the limit once between them, and what one settles
/// (the unused part of a reservation refunded) the other sees.
#[tokio::test]
async fn two_token_limits_sharing_a_key_admit_the_limit_once_and_share_refunds() {
    use http_body_util::BodyExt;
    use palisade_ratelimit::TokenLimitLayer;
    let redis = RedisServer::start();
    // 1,000 tokens a burst, refilled at one token per 1,000 s: the test
    // sees the burst only.
    let make = || {
        TokenLimitLayer::try_new(1_000, 0.001)
            .unwrap()
            .redis(&redis.url(), "test:tpm")
            .unwrap()
            .redis_timeout(Duration::from_secs(2))
    };
    let (a, b) = (make(), make());
    assert!(a.shared());
    let mock = palisade_mock::MockUpstream::new();
    let (sa, sb) = (a.layer(mock.clone()), b.layer(mock.clone()));
    // Each reserves its estimate: 300 output tokens and the prompt.
    let held = [
        sa.clone().oneshot(chat(300)).await.unwrap(),
        sb.clone().oneshot(chat(300)).await.unwrap(),
        sa.clone().oneshot(chat(300)).await.unwrap(),
    ];
    // A fourth does not fit in what is left, in either process.
    for svc in [&sa, &sb] {
        let err = svc.clone().oneshot(chat(300)).await.unwrap_err();
        assert!(find::<RateLimited>(&*err).is_some(), "{err}");
    }
    assert_eq!(mock.request_count(), 3);
    // The answers end: each settles at the 6 tokens the mock reports, and
    // the rest of its reservation goes back to Redis (sent in the
    // background: the other process sees it within a bounded wait).
    for res in held {
        res.into_body().collect().await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let admitted = loop {
        match sb.clone().oneshot(chat(300)).await {
            Ok(res) => break res,
            Err(e) if find::<RateLimited>(&*e).is_some() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("the refunds did not reach Redis within 10 s: {e}"),
        }
    };
    drop(admitted);
    // The key expires once full: no immortal counters.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg("test:tpm")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 0, "the key has a TTL: {ttl}");
}

/// Redis unreachable: a token limit kept there lets the call through
/// unreserved (fail open, the default) or refuses it naming Redis
/// (`fail_closed`), within its timeout.
#[tokio::test]
async fn an_unreachable_token_limit_fails_open_or_closed() {
    use palisade_ratelimit::TokenLimitLayer;
    let url = format!("redis://127.0.0.1:{}", free_port());
    let mock = palisade_mock::MockUpstream::new();
    let open = TokenLimitLayer::per_minute(1_000)
        .unwrap()
        .redis(&url, "k")
        .unwrap();
    let t = Instant::now();
    let res = open.layer(mock.clone()).oneshot(chat(10)).await.unwrap();
    assert_eq!(res.status(), 200);
    let closed = TokenLimitLayer::per_minute(1_000)
        .unwrap()
        .redis(&url, "k")
        .unwrap()
        .fail_closed()
        .redis_timeout(Duration::from_millis(100));
    let err = closed
        .layer(mock.clone())
        .oneshot(chat(10))
        .await
        .unwrap_err();
    assert!(find::<BackendUnavailable>(&*err).is_some(), "{err}");
    assert_eq!(mock.request_count(), 1, "fail closed calls nobody");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

/// A Redis that takes connections and never answers (the slowest Redis
/// there is; one that answers after the timeout looks the same): both
/// limits fail open or closed within their timeout, never hang, and tell
/// their error hook.
#[tokio::test]
async fn a_redis_that_never_answers_fails_open_or_closed_within_the_timeout() {
    use palisade_ratelimit::TokenLimitLayer;
    // Connections queue in the backlog and are never read.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", hole.local_addr().unwrap());
    let errors = Arc::new(AtomicUsize::new(0));
    let hook = |errors: &Arc<AtomicUsize>| {
        let errors = Arc::clone(errors);
        move |reason: &str| {
            assert!(reason.contains("100ms"), "{reason}");
            errors.fetch_add(1, Ordering::SeqCst);
        }
    };
    let timeout = Duration::from_millis(100);
    let calls = Arc::new(AtomicUsize::new(0));
    let mock = palisade_mock::MockUpstream::new();
    // The tokenizer's first use (loading its vocabulary) is not Redis's
    // time: done before the clock starts.
    TokenLimitLayer::per_minute(1_000)
        .unwrap()
        .layer(palisade_mock::MockUpstream::new())
        .oneshot(chat(10))
        .await
        .unwrap();

    let t = Instant::now();
    RedisRateLimitLayer::new(&url, "k", 1, 1.0)
        .unwrap()
        .timeout(timeout)
        .on_error(hook(&errors))
        .layer(counting(&calls))
        .oneshot(Request::new(()))
        .await
        .unwrap();
    let res = TokenLimitLayer::per_minute(1_000)
        .unwrap()
        .redis(&url, "t")
        .unwrap()
        .redis_timeout(timeout)
        .on_redis_error(hook(&errors))
        .layer(mock.clone())
        .oneshot(chat(10))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "fail open lets it through");
    assert_eq!(mock.request_count(), 1, "fail open lets it through");

    let err = RedisRateLimitLayer::new(&url, "k", 1, 1.0)
        .unwrap()
        .timeout(timeout)
        .fail_closed()
        .layer(counting(&calls))
        .oneshot(Request::new(()))
        .await
        .unwrap_err();
    assert!(find::<BackendUnavailable>(&*err).is_some(), "{err}");
    let err = TokenLimitLayer::per_minute(1_000)
        .unwrap()
        .redis(&url, "t")
        .unwrap()
        .redis_timeout(timeout)
        .fail_closed()
        .layer(mock.clone())
        .oneshot(chat(10))
        .await
        .unwrap_err();
    assert!(find::<BackendUnavailable>(&*err).is_some(), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "fail closed calls nobody");
    assert_eq!(mock.request_count(), 1, "fail closed calls nobody");
    // Four calls, each at most a connection attempt and a script bounded
    // by 100 ms (about 400 ms here): under two seconds even on a loaded
    // machine.
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "a call hung on a silent Redis: {:?}",
        t.elapsed()
    );
    assert!(errors.load(Ordering::SeqCst) >= 2, "the errors were told");
    drop(hole);
}

/// `redis_requests`: a requests-per-minute limit joined to the tokens
/// limit in one script. Two processes admit its requests once between
/// them; a call the tokens limit refuses takes no request; settlements of
/// many calls ending at once (summed while one is on its way) add up to
/// what each call's own would.
#[tokio::test]
async fn a_joined_requests_limit_admits_with_the_tokens_in_one_script() {
    use http_body_util::BodyExt;
    use palisade_ratelimit::TokenLimitLayer;
    let redis = RedisServer::start();
    let make = || {
        TokenLimitLayer::try_new(1_000, 0.001)
            .unwrap()
            .redis(&redis.url(), "test:joined:tpm")
            .unwrap()
            .redis_requests(12, "test:joined:rpm")
            .unwrap()
            .redis_timeout(Duration::from_secs(2))
    };
    let (a, b) = (make(), make());
    let mock = palisade_mock::MockUpstream::new();
    let (sa, sb) = (a.layer(mock.clone()), b.layer(mock.clone()));
    // Too many tokens: refused, and no request is taken.
    let err = sa.clone().oneshot(chat(5_000)).await.unwrap_err();
    assert!(find::<RateLimited>(&*err).is_some(), "{err}");
    // Ten calls of ~90 tokens (all held: ~900 of 1,000) end together:
    // their ten refunds (~84 each) are sent summed, and the tokens are
    // back.
    let mut ended = Vec::new();
    for i in 0..10 {
        let svc = if i % 2 == 0 { sa.clone() } else { sb.clone() };
        ended.push(svc.oneshot(chat(80)).await.unwrap());
    }
    let mut calls = tokio::task::JoinSet::new();
    for res in ended {
        calls.spawn(async move { res.into_body().collect().await.map(|_| ()) });
    }
    while let Some(done) = calls.join_next().await {
        done.unwrap().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // ~910 tokens fit only once every refund has arrived.
        match sb.clone().oneshot(chat(900)).await {
            Ok(res) => {
                res.into_body().collect().await.unwrap();
                break;
            }
            Err(e) if find::<RateLimited>(&*e).is_some() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("the summed refunds never arrived: {e}"),
        }
    }
    // Requests: 12 a minute, a burst of 12: ten and one are taken, the
    // refused call took none, so one more passes and then none.
    let res = sa.clone().oneshot(chat(1)).await.unwrap();
    res.into_body().collect().await.unwrap();
    for svc in [&sa, &sb] {
        let err = svc.clone().oneshot(chat(1)).await.unwrap_err();
        let limited = find::<RateLimited>(&*err).expect("RateLimited");
        assert!(limited.retry_after().is_some(), "{err}");
    }
    assert_eq!(mock.request_count(), 12);
}

#[test]
fn a_joined_requests_limit_needs_redis_first() {
    let err = palisade_ratelimit::TokenLimitLayer::per_minute(1_000)
        .unwrap()
        .redis_requests(10, "k")
        .unwrap_err();
    assert!(err.to_string().contains("redis(url, key) first"), "{err}");
}

/// Calls asking at the same time go to Redis in batches (one script for
/// the calls queued while one is on its way): sixty at once from two
/// limiters sharing a key of twenty admit exactly twenty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_asking_together_are_batched_and_admit_exactly_the_limit() {
    let redis = RedisServer::start();
    let make = || {
        RedisRateLimitLayer::new(&redis.url(), "test:batched", 20, 0.001)
            .unwrap()
            .timeout(Duration::from_secs(2))
            .fail_closed()
    };
    let calls = Arc::new(AtomicUsize::new(0));
    let (a, b) = (
        make().layer(counting(&calls)),
        make().layer(counting(&calls)),
    );
    let mut all = tokio::task::JoinSet::new();
    for i in 0..60 {
        let svc = if i % 2 == 0 { a.clone() } else { b.clone() };
        all.spawn(async move { svc.oneshot(Request::new(())).await });
    }
    let (mut admitted, mut refused) = (0, 0);
    while let Some(done) = all.join_next().await {
        match done.unwrap() {
            Ok(_) => admitted += 1,
            Err(e) => {
                assert!(find::<RateLimited>(&*e).is_some(), "{e}");
                refused += 1;
            }
        }
    }
    assert_eq!((admitted, refused), (20, 40));
    assert_eq!(calls.load(Ordering::SeqCst), 20);
    // Fewer scripts than calls: they went together.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await
        .unwrap();
    let scripts: u64 = info
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(
        (1..60).contains(&scripts),
        "{scripts} scripts for 60 calls: {info}"
    );
}

/// A rate of a fraction of a microsecond per unit is kept as it is: 40 M
/// tokens a minute is 1.5 µs a token, so 600,000 tokens put the bucket
/// 0.9 s behind (its key lives that long plus a second). Rounded to whole
/// microseconds (2 µs), it was 1.2 s.
#[tokio::test]
async fn a_rate_of_millions_a_minute_is_not_rounded() {
    let redis = RedisServer::start();
    let per_second = 40_000_000.0 / 60.0;
    let layer = RedisRateLimitLayer::new(&redis.url(), "test:fast", 1_000_000, per_second)
        .unwrap()
        .timeout(Duration::from_secs(2))
        .fail_closed()
        .cost(|_: &Request<()>| 600_000);
    let calls = Arc::new(AtomicUsize::new(0));
    layer
        .layer(counting(&calls))
        .oneshot(Request::new(()))
        .await
        .unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg("test:fast")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!((1_800..=1_901).contains(&ttl), "{ttl} ms");
}
